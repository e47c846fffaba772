"""The featurizer: turns an upstream's hidden states into the one feature sequence a head reads.

Two modes, as in SUPERB:

- **weighted sum** (default): ``sum_l softmax(w)_l * h_l`` over all L hidden states, with
  the weights ``w`` learned together with the head and initialised to zero (so training starts
  from the plain mean of the layers). The learned softmax weights show which layers a task
  uses (:meth:`Featurizer.layer_weights`, plotted by the report).
- **single layer**: one chosen hidden state, no parameters.

Before combining, each hidden state can be *standardised* per dimension with fixed statistics
of the task's training split (:meth:`Featurizer.set_statistics`: a global mean/variance
normalisation, Kaldi's global CMVN, stored as buffers so checkpoints carry it), and/or
layer-normalised per frame over its feature dimension (``normalize=True``: layer norm without
affine parameters, s3prl's option). Standardising puts every upstream, surface features
included, on the same scale for the head without removing what differs between utterances
(per-utterance normalisation would zero the mean that pooling heads read).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Featurizer", "resolve_layer"]


def resolve_layer(layer: int | None, num_layers: int, option: str = "featurizer.layer") -> int | None:
    """Check a hidden-state index against the upstream and make it non-negative.

    The one check of a layer option (``featurizer.layer``, ``task.layer``), run where the
    cached and the uncached paths both go (the task's constructor and :class:`Featurizer`),
    so no path wraps an out-of-range index through Python's negative indexing or a modulo.

    Args:
        layer: index into the ``num_layers`` hidden states, negative from the end; None: all.
        num_layers: ``L``, the hidden states of the upstream.
        option: the option's name, for the error message.

    Returns:
        ``layer`` in ``[0, L)``, or None.

    Raises:
        ValueError: not an integer, or outside ``[-L, L)``.
    """
    if layer is None:
        return None
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise ValueError(f"{option} must be an integer hidden-state index, got {layer!r}")
    if not -num_layers <= layer < num_layers:
        raise ValueError(f"{option}={layer} is out of range: the upstream has {num_layers} hidden states "
                         f"(0..{num_layers - 1}, or -{num_layers}..-1 from the end)")
    return layer % num_layers


class Featurizer(nn.Module):
    """Combine ``L`` hidden states ``(B, T, D)`` into one ``(B, T, D)`` sequence.

    Args:
        num_layers: ``L``, the number of hidden states :meth:`forward` receives.
        layer: index into those hidden states (negative counts from the end) for the
            single-layer mode; ``None`` for the learned weighted sum.
        normalize: layer-normalise each hidden state (no affine) before combining.
    """

    def __init__(self, num_layers: int, layer: int | None = None, normalize: bool = False) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.num_layers = num_layers
        self.layer = resolve_layer(layer, num_layers)
        self.normalize = normalize
        self.weights = nn.Parameter(torch.zeros(num_layers)) if layer is None else None
        self.register_buffer("mean", None)   # (L or 1, D) once set_statistics is called
        self.register_buffer("std", None)

    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardise with these per-dimension statistics from now on (kept as buffers).

        Args:
            mean, std: ``(L, D)`` for a weighted sum (one row per hidden state), ``(1, D)``
                for the single-layer mode (the chosen layer's statistics).
        """
        rows = self.num_layers if self.layer is None else 1
        if mean.shape != std.shape or mean.dim() != 2 or mean.shape[0] != rows:
            raise ValueError(f"expected ({rows}, D) mean and std, got {tuple(mean.shape)} and {tuple(std.shape)}")
        self.mean = mean.detach().float().clone()
        self.std = std.detach().float().clamp(min=1e-5).clone()

    @property
    def mode(self) -> str:
        """``"weighted_sum"`` or ``"layer"``."""
        return "weighted_sum" if self.layer is None else "layer"

    def layer_weights(self) -> torch.Tensor:
        """``(L,)`` weight of each hidden state (softmax of the learned logits, or one-hot)."""
        if self.weights is None:
            return F.one_hot(torch.tensor(self.layer), self.num_layers).float()
        return F.softmax(self.weights.detach().float(), dim=0)

    def forward(self, hidden_states: Sequence[torch.Tensor] | torch.Tensor,
                lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Combine the hidden states.

        Args:
            hidden_states: ``L`` tensors ``(B, T, D)``, or one tensor ``(L, B, T, D)``.
            lengths: ``(B,)`` valid frames, passed through unchanged.

        Returns:
            features ``(B, T, D)`` and ``lengths``.
        """
        n = hidden_states.shape[0] if isinstance(hidden_states, torch.Tensor) else len(hidden_states)
        if n != self.num_layers:
            raise ValueError(f"featurizer built for {self.num_layers} hidden states, got {n}")
        if self.layer is not None:
            x = hidden_states[self.layer]                               # (B, T, D)
            if self.mean is not None:
                x = (x - self.mean[0]) / self.std[0]
            return self._norm(x), lengths
        if not isinstance(hidden_states, torch.Tensor):
            dims = {tuple(h.shape) for h in hidden_states}
            if len(dims) != 1:
                raise ValueError(f"a weighted sum needs hidden states of one shape, got {sorted(dims)}; "
                                 "choose a single layer instead (featurizer.layer=N)")
            hidden_states = torch.stack(list(hidden_states))         # (L, B, T, D)
        if self.mean is not None:
            hidden_states = (hidden_states - self.mean[:, None, None]) / self.std[:, None, None]
        stacked = self._norm(hidden_states)
        w = F.softmax(self.weights, dim=0).to(stacked.dtype)
        return torch.einsum("l,lbtd->btd", w, stacked), lengths

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],)) if self.normalize else x

    def extra_repr(self) -> str:
        return (f"num_layers={self.num_layers}, mode={self.mode}, layer={self.layer}, normalize={self.normalize}, "
                f"standardize={self.mean is not None}")
