"""Turn a :class:`WeightsRecord` into a ready model through the method registry."""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from speechssl._hub.modeldir import HubError, WeightsRecord, load_strict
from speechssl.config import ConfigError, from_dict
from speechssl.registry import get_method

__all__ = ["build_config", "build_model"]


def build_config(method: str, config: dict[str, Any], where: str) -> Any:
    """The method's config dataclass from its plain dict; errors name ``where``."""
    spec = get_method(method)
    upgrade = getattr(spec.config_cls, "upgrade", None)  # configs written by older versions
    if callable(upgrade):
        config = upgrade(dict(config))
    try:
        return from_dict(spec.config_cls, config)
    except ConfigError as exc:
        raise HubError(f"{where}: its {method} config does not fit this speechssl's "
                       f"{spec.config_cls.__name__}: {exc}") from None


def build_model(record: WeightsRecord, where: str, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Build ``record.method`` from ``record.config``, load the weights strictly, move to ``device``, eval mode.

    Raises:
        RegistryError: unknown method. HubError: config or weights that do not fit.
    """
    spec = get_method(record.method)
    cfg = build_config(record.method, record.config, where)
    model = spec.build(cfg)
    load_strict(model, record.state_dict, where)
    return model.to(device).eval()


def check_savable(model: torch.nn.Module) -> tuple[str, Any]:
    """``(method, config)`` of a contract-following model, or TypeError saying what is missing."""
    method = getattr(model, "method", None)
    config = getattr(model, "config", None)
    if not isinstance(method, str) or not method:
        raise TypeError(f"{type(model).__name__} has no 'method' attribute (the registry name, e.g. "
                        "'hubert'); only models built through speechssl.registry can be saved")
    if config is None or not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"{type(model).__name__}.config must be its config dataclass instance, "
                        f"got {type(config).__name__}")
    spec = get_method(method)
    if not isinstance(config, spec.config_cls):
        raise TypeError(f"{type(model).__name__}.config is a {type(config).__name__}, but method "
                        f"{method!r} expects {spec.config_cls.__name__}")
    return method, config
