"""Optimizer construction: parameter groups (weight decay, layer-wise lr decay) and gradient clipping.

A parameter group is a dict ``{"params", "name", "weight_decay", "lr_scale"}``; the schedule sets
``lr = schedule_lr * lr_scale`` on every group before each update (``LRSchedule.apply``). The
group names (``"decay"``, ``"no_decay"``, ``"layer3/decay"``, ...) are saved with the optimizer
state, so a resume checks it restores the same grouping.
"""
from __future__ import annotations

from typing import Any, Callable, Collection, Iterable, Sequence

import torch
from torch import nn

from speechssl.train.config import OptimConfig

__all__ = ["param_groups", "build_optimizer", "check_group_names", "clip_grad_norm"]


def _check(cfg: OptimConfig) -> None:
    if cfg.lr <= 0:
        raise ValueError(f"optim.lr must be positive, got {cfg.lr}")
    if not all(0.0 <= b < 1.0 for b in cfg.betas):
        raise ValueError(f"optim.betas must lie in [0, 1), got {cfg.betas}")
    if cfg.eps <= 0 or cfg.weight_decay < 0:
        raise ValueError(f"optim.eps must be > 0 and optim.weight_decay >= 0, got {cfg.eps}, {cfg.weight_decay}")
    if cfg.layer_decay is not None and not 0.0 < cfg.layer_decay <= 1.0:
        raise ValueError(f"optim.layer_decay must lie in (0, 1] or be null, got {cfg.layer_decay}")


def param_groups(named_params: Iterable[tuple[str, nn.Parameter]], cfg: OptimConfig, *,
                 no_decay: Collection[str] = (), layer_id: Callable[[str], int | None] | None = None,
                 num_layers: int = 0) -> list[dict[str, Any]]:
    """Split the trainable parameters into groups by weight decay and lr factor.

    Args:
        named_params: ``model.named_parameters()``; those with ``requires_grad=False`` are left out.
        cfg: ``decay_norm_bias`` and ``layer_decay`` choose the split (see :class:`OptimConfig`).
        no_decay: parameter names that never decay when ``decay_norm_bias`` is False.
        layer_id: name -> layer in ``0..num_layers + 1`` (or None: no layer, factor 1); used
            only when ``cfg.layer_decay`` is set.
        num_layers: the number of blocks L.

    Returns:
        Non-empty groups in the order of their first parameter, each
        ``{"params": [...], "name": str, "weight_decay": float, "lr_scale": float}``.

    Raises:
        ValueError: no trainable parameter, layer decay without layers, a layer id out of range.
    """
    _check(cfg)
    if cfg.layer_decay is not None and (layer_id is None or num_layers <= 0):
        raise ValueError("optim.layer_decay needs the task's num_layers (> 0) and layer_id(name); "
                         "this task defines no layers: set optim.layer_decay=null")
    no_decay = set(no_decay)
    groups: dict[str, dict[str, Any]] = {}
    for name, p in named_params:
        if not p.requires_grad:
            continue
        decays = cfg.decay_norm_bias or (p.ndim > 1 and name not in no_decay)
        key, scale = ("decay" if decays else "no_decay"), 1.0
        if cfg.layer_decay is not None:
            layer = layer_id(name)  # type: ignore[misc]
            if layer is not None:
                if not 0 <= layer <= num_layers + 1:
                    raise ValueError(f"task.layer_id({name!r}) = {layer} is outside 0..{num_layers + 1} "
                                     f"(num_layers={num_layers})")
                scale = cfg.layer_decay ** (num_layers + 1 - layer)
                key = f"layer{layer}/{key}"
        group = groups.setdefault(key, {"params": [], "name": key,
                                        "weight_decay": cfg.weight_decay if decays else 0.0, "lr_scale": scale})
        group["params"].append(p)
    if not groups:
        raise ValueError("the model has no trainable parameter (requires_grad=True)")
    return list(groups.values())


def build_optimizer(params: Iterable[nn.Parameter] | Sequence[dict[str, Any]], cfg: OptimConfig
                    ) -> torch.optim.Optimizer:
    """Adam or AdamW over ``params``: parameter groups from :func:`param_groups`, or plain parameters
    (those that require gradients, one group decaying by ``cfg.weight_decay``).

    Raises:
        ValueError: no trainable parameter, or an invalid setting (naming the field).
    """
    _check(cfg)
    params = list(params)
    if params and isinstance(params[0], dict):
        groups = [{**g, "lr": cfg.lr * g.get("lr_scale", 1.0)} for g in params]
    else:
        trainable = [p for p in params if p.requires_grad]
        if not trainable:
            raise ValueError("the model has no trainable parameter (requires_grad=True)")
        groups = [{"params": trainable}]
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(cfg.name)
    if cls is None:
        raise ValueError(f"optim.name must be 'adam' or 'adamw', got {cfg.name!r}")
    return cls(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)


def check_group_names(saved: dict[str, Any], optimizer: torch.optim.Optimizer, where: str) -> None:
    """Raise a one-line ValueError when a saved optimizer state has other groups than ``optimizer``.

    ``saved`` is ``optimizer.state_dict()`` from a checkpoint (``where`` names it in the message).
    """
    def describe(groups: list[dict[str, Any]]) -> list[tuple[Any, int]]:
        return [(g.get("name"), len(g["params"])) for g in groups]

    old, new = describe(saved.get("param_groups", [])), describe(optimizer.param_groups)
    if all(name is None for name, _ in old):  # written before groups had names: compare the sizes
        new = [(None, n) for _, n in new]
    if old != new:
        raise ValueError(f"{where}: the optimizer's parameter groups (name, size) changed from {old} to {new}; "
                         "optim.decay_norm_bias, optim.layer_decay or the frozen modules differ from the run "
                         "that wrote it: restore them or start a new exp dir")


def clip_grad_norm(params: Iterable[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clip the global L2 norm of the gradients to ``max_norm`` (0: only measure it); return the norm.

    The norm is returned before clipping; it is inf/nan when a gradient is not finite.
    """
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    if max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(grads, max_norm)
    return torch.nn.utils.get_total_norm([p.grad for p in grads])
