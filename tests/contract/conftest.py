"""The contract suite runs over every registered method and preset, plus the image method of
:mod:`tests.contract.image_method`, which the suite registers here (at collection) through
:func:`speechssl.registry.register`, exactly as a third-party method would be.

The hub round trip of every preset but a method's smallest is marked ``slow`` here (base/large
weights take about a minute to write, hash, rebuild and read on two cores).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from speechssl.registry import get_method, list_methods, register
from tests.contract import image_method

register(image_method.METHOD)

_HERE = Path(__file__).resolve().parent


def method_names() -> list[str]:
    """Every registered method (entry points and run-time registrations), sorted."""
    return list_methods()


def method_presets() -> list[tuple[str, str]]:
    """``(method, preset)`` for every preset of every registered method."""
    return [(name, preset) for name in method_names() for preset in get_method(name).presets]


#: tests marked ``slow`` for every preset but the method's smallest (costly for base/large weights)
SLOW_BEYOND_SMALLEST = ("test_hub_save_load_is_bit_exact",)


@pytest.hookimpl(tryfirst=True)  # before the root conftest turns ``slow`` into a skip
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if getattr(item, "originalname", None) not in SLOW_BEYOND_SMALLEST or not item.path.is_relative_to(_HERE):
            continue
        name, preset = item.callspec.params["case"]
        if preset != get_method(name).smallest_preset:
            item.add_marker(pytest.mark.slow)
