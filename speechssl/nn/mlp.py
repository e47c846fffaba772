"""The MLP head of the contrastive and grouping methods: projectors, embedding heads, predictors.

:class:`MLPHead` is ``Linear → [BatchNorm1d] → activation`` repeated ``layers - 1`` times, then a
last ``Linear`` to the output width, as one ``nn.Sequential`` named ``net`` (so the parameter
names are ``net.<i>.weight`` whatever the options). The variants the methods use:

* SimCLR's projector ``g`` (v1: no BN; v2 / solo-learn: BN, hidden linears without bias) and
  Transitive Invariance's embedding head: ReLU, torch's default initialisation.
* SlotCon's ``DINOHead`` / ``DINOHead2d``: BN with biased hidden linears, GELU, weights
  truncated-normal (std 0.02) and biases 0. Over a dense map flattened to ``(B * h * w, D)``
  it is the 1x1-conv head, its BatchNorm over every pixel of the batch (BN2d's statistics).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

__all__ = ["MLPHead"]

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class MLPHead(nn.Module):
    """``(N, D)`` → ``(N, P)`` through ``layers`` linear layers (see the module docstring).

    Args:
        in_dim: ``D``.
        hidden_dim: width of the hidden layers.
        out_dim: ``P``.
        layers: linear layers (>= 1; 1 is a single ``Linear``).
        batch_norm: BatchNorm1d after each hidden linear layer.
        activation: ``"relu"`` or ``"gelu"``, after each hidden layer (and its BN).
        hidden_bias: bias of the hidden linear layers; ``None`` means ``not batch_norm`` (the BN's
            shift makes it redundant).
        init: ``"torch"`` (each ``Linear``'s default) or ``"trunc_normal"`` (weights
            truncated-normal with std 0.02, biases 0, applied after every layer is built).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2, *, batch_norm: bool = True,
                 activation: Literal["relu", "gelu"] = "relu", hidden_bias: bool | None = None,
                 init: Literal["torch", "trunc_normal"] = "torch") -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"an MLP head needs >= 1 linear layer, got {layers}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        if init not in ("torch", "trunc_normal"):
            raise ValueError(f"init must be 'torch' or 'trunc_normal', got {init!r}")
        bias = (not batch_norm) if hidden_bias is None else hidden_bias
        mods: list[nn.Module] = []
        d = in_dim
        for _ in range(layers - 1):
            mods.append(nn.Linear(d, hidden_dim, bias=bias))
            if batch_norm:
                mods.append(nn.BatchNorm1d(hidden_dim))
            mods.append(_ACTIVATIONS[activation]())
            d = hidden_dim
        mods.append(nn.Linear(d, out_dim))
        self.net = nn.Sequential(*mods)
        if init == "trunc_normal":
            for m in self.net:
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (N, D)`` → ``(N, P)``."""
        return self.net(x)
