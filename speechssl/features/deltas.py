"""Delta (regression) features over time, for single utterances or padded batches.

Two conventions are in use and they differ only near the edges:

- :func:`deltas` is Kaldi's ``add-deltas``: the order-``k`` delta is one filter (the first-order
  regression window convolved with itself ``k`` times) applied to the *static* features, with
  out-of-range frames clamped to the first/last frame.
- :func:`regression_delta` is one first-order delta with replicated edges
  (``torchaudio.functional.compute_deltas``); applying it twice, as fairseq's HuBERT MFCC
  recipe does, replicates the edge frames of the deltas instead of the statics.

The first-order delta of frame ``t`` with window ``N`` is
``sum_{n=1..N} n (x[t+n] - x[t-n]) / (2 sum_{n=1..N} n^2)``.
"""
from __future__ import annotations

import torch

from speechssl.features._batch import as_batch

__all__ = ["deltas", "regression_delta", "delta_window"]


def delta_window(order: int, window: int = 2) -> torch.Tensor:
    """Kaldi's order-``order`` regression filter, ``(2 * order * window + 1,)`` float64 taps.

    Order 0 is ``[1]``; order ``k`` is order ``k - 1`` convolved with ``j / sum(j^2)``,
    ``j = -window..window``.
    """
    if order < 0 or window < 1:
        raise ValueError(f"need order >= 0 and window >= 1, got order={order}, window={window}")
    first = torch.arange(-window, window + 1, dtype=torch.float64)
    first = first / first.pow(2).sum()
    taps = torch.ones(1, dtype=torch.float64)
    for _ in range(order):
        # full convolution of taps with the first-order window (it is antisymmetric, so flip)
        taps = torch.nn.functional.conv1d(taps.view(1, 1, -1), first.flip(0).view(1, 1, -1),
                                          padding=2 * window).view(-1)
    return taps


def _filter_clamped(feats: torch.Tensor, lengths: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """``out[b, t] = sum_j taps[j] * feats[b, clamp(t + j - K, 0, len_b - 1)]``, K = half-width."""
    batch, frames, dim = feats.shape
    half = (taps.numel() - 1) // 2
    t = torch.arange(frames, device=feats.device)
    last = (lengths - 1).clamp(min=0).unsqueeze(1)  # (B, 1)
    out = torch.zeros_like(feats)
    for j, w in enumerate(taps.tolist()):  # a loop over the <= 2*order*window+1 taps only
        if w == 0.0:
            continue
        index = torch.minimum((t + (j - half)).clamp(min=0).unsqueeze(0), last)  # (B, T)
        out.add_(torch.gather(feats, 1, index.unsqueeze(-1).expand(batch, frames, dim)), alpha=w)
    # frames past a row's length would read its last frame; keep them zero
    valid = (t.unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1)
    return out * valid


def deltas(feats: torch.Tensor, order: int = 2, window: int = 2,
           lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Kaldi ``add-deltas``: static features followed by their deltas up to ``order``.

    Args:
        feats: ``(T, D)`` or a padded batch ``(B, T, D)``.
        order: highest delta order (2: Δ and ΔΔ).
        window: regression half-window ``N`` (Kaldi ``--delta-window``, default 2).
        lengths: ``(B,)`` valid frames per row of a batch; edges replicate each row's own
            last frame and padded frames stay zero.

    Returns:
        ``(T, (order + 1) * D)`` = ``[x, Δx, Δ²x, ...]`` (or ``(B, T, (order + 1) * D)``).
    """
    batch, lens, single = as_batch(feats, lengths)
    parts = [batch * (torch.arange(batch.shape[1], device=batch.device) < lens.unsqueeze(1)).unsqueeze(-1)]
    for k in range(1, order + 1):
        taps = delta_window(k, window)
        parts.append(_filter_clamped(batch, lens, taps))
    out = torch.cat(parts, dim=-1)
    return out[0] if single else out


def regression_delta(feats: torch.Tensor, window: int = 2, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """One first-order regression delta with replicated edge frames (same shape as ``feats``).

    Equals ``torchaudio.functional.compute_deltas(x.T, win_length=2 * window + 1).T``.

    Args:
        feats: ``(T, D)`` or a padded batch ``(B, T, D)``.
        window: half-window ``N``.
        lengths: ``(B,)`` valid frames per row of a batch.
    """
    batch, lens, single = as_batch(feats, lengths)
    out = _filter_clamped(batch, lens, delta_window(1, window))
    return out[0] if single else out
