"""The contract suite runs over every registered method and preset, plus the image method of
:mod:`tests.contract.image_method`, which the suite registers here (at collection) through
:func:`speechssl.registry.register`, exactly as a third-party method would be.
"""
from __future__ import annotations

from speechssl.registry import get_method, list_methods, register
from tests.contract import image_method

register(image_method.METHOD)


def method_names() -> list[str]:
    """Every registered method (entry points and run-time registrations), sorted."""
    return list_methods()


def method_presets() -> list[tuple[str, str]]:
    """``(method, preset)`` for every preset of every registered method."""
    return [(name, preset) for name in method_names() for preset in get_method(name).presets]
