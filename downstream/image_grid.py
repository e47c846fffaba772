"""How the per-patch image tasks read an upstream's geometry: its input shape, token grid and prefix.

An image upstream (the image upstream contract) says what it takes, ``input_shape (C, H, W)``,
and how its hidden states lie, ``patch_grid (H_p, W_p)`` after ``prefix_tokens`` leading tokens.
The raw-pixel baseline (method ``pixels``) has one token per image; the per-patch tasks cut it
into ``pixel_patch`` x ``pixel_patch`` tokens instead
(:func:`speechssl.downstream.image_features.pixel_patch_tokens`).

Each function raises ValueError naming the upstream and the task when the upstream cannot serve.
:class:`PatchGridTask` gives a per-patch task (``ctx.upstream``, ``cfg.pixel_patch``, ``name``)
the same geometry as methods.
"""
from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["input_shape", "token_grid", "prefix_tokens", "PatchGridTask"]


def input_shape(upstream: Any, task: str) -> tuple[int, int, int]:
    """``(C, H, W)`` of a square-image ``upstream`` (a loaded upstream: ``.model``, ``.name``)."""
    shape = getattr(upstream.model, "input_shape", None)
    if shape is None:
        raise ValueError(f"upstream {upstream.name} has no input_shape (C, H, W); {task} needs one")
    c, h, w = (int(v) for v in shape)
    if h != w:
        raise ValueError(f"{task} resizes to square images; upstream {upstream.name} takes {h}x{w}")
    return c, h, w


def token_grid(upstream: Any, pixel_patch: int, task: str) -> tuple[int, int]:
    """``(H_p, W_p)`` of the patch tokens the task reads (pixels: ``H / pixel_patch`` per side)."""
    _, h, w = input_shape(upstream, task)
    if upstream.method == "pixels":
        p = int(pixel_patch)
        if p < 1 or h % p:
            raise ValueError(f"task.pixel_patch={p} must be a positive divisor of the pixel size {h}")
        return h // p, w // p
    grid = getattr(upstream.model, "patch_grid", None)
    if grid is None or tuple(grid) == (1, 1):
        raise ValueError(f"upstream {upstream.name} has no patch grid (patch_grid {grid}); {task} needs patch tokens")
    return int(grid[0]), int(grid[1])


def prefix_tokens(upstream: Any) -> int:
    """Tokens before the grid in every hidden state (0 for the pixel baseline's patch tokens)."""
    return 0 if upstream.method == "pixels" else int(getattr(upstream.model, "prefix_tokens", 0))


class PatchGridTask:
    """Mixin of the per-patch image tasks: the loaded upstream's model, whether it is the pixel
    baseline, its input shape and token grid (needs ``ctx.upstream``, ``cfg.pixel_patch``, ``name``)."""

    ctx: Any
    cfg: Any
    name: str

    @property
    def _model(self) -> nn.Module:
        return self.ctx.upstream.model

    @property
    def _is_pixels(self) -> bool:
        return self.ctx.upstream.method == "pixels"

    def _input_shape(self) -> tuple[int, int, int]:
        return input_shape(self.ctx.upstream, self.name)

    def _grid(self) -> tuple[int, int]:
        return token_grid(self.ctx.upstream, self.cfg.pixel_patch, self.name)
