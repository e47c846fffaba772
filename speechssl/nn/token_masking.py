"""Shuffle-based random token masking (MAE): keep a random subset of each row's tokens, restore later.

Per row, ``noise (B, N)`` orders the tokens (ascending: the first ``keep`` are kept), so
the same noise always keeps the same tokens; the noise comes from the caller (a seeded
``torch.Generator``, or a fixed tensor in parity tests), never from global RNG here.

* :func:`keep_count` — ``int(N * (1 - mask_ratio))`` kept tokens (MAE's ``len_keep``), at least 1.
* :func:`random_masking` — ``x (B, N, D)``, ``noise`` → kept tokens ``(B, K, D)``, ``mask (B, N)``
  bool (True = masked) and ``ids_restore (B, N)``.
* :func:`restore_tokens` — kept tokens ``(B, K, D)`` + a mask token → ``(B, N, D)`` in the
  original order (MAE's decoder input).
"""
from __future__ import annotations

import torch

__all__ = ["keep_count", "masking_noise", "random_masking", "restore_tokens"]


def keep_count(num_tokens: int, mask_ratio: float) -> int:
    """Tokens kept of ``num_tokens`` at ``mask_ratio`` (``int(N * (1 - r))``, as MAE; at least 1)."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    return max(1, int(num_tokens * (1 - mask_ratio)))


def masking_noise(batch: int, num_tokens: int, generator: torch.Generator | None,
                  device: torch.device | None = None) -> torch.Tensor:
    """``U[0, 1)`` noise ``(B, N)`` from ``generator`` (drawn on the CPU, then moved to ``device``)."""
    if generator is None:
        raise ValueError("masking_noise needs an explicit torch.Generator (no global RNG)")
    return torch.rand(batch, num_tokens, generator=generator).to(device or "cpu")


def random_masking(x: torch.Tensor, noise: torch.Tensor, keep: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep, per row, the ``keep`` tokens of lowest ``noise``.

    Args:
        x: ``(B, N, D)`` tokens.
        noise: ``(B, N)`` float; ties are broken by ``torch.argsort``'s order.
        keep: ``K``, tokens kept per row, ``1 <= K <= N``.

    Returns:
        kept ``(B, K, D)`` (in ascending-noise order), ``mask (B, N)`` bool (True = removed),
        ``ids_restore (B, N)`` int64 (position of each original token in the shuffled order).
    """
    B, N, D = x.shape
    if noise.shape != (B, N):
        raise ValueError(f"noise must be (B, N) = {(B, N)}, got {tuple(noise.shape)}")
    if not 1 <= keep <= N:
        raise ValueError(f"keep must be in 1..{N}, got {keep}")
    ids_shuffle = torch.argsort(noise.to(x.device), dim=1)  # (B, N)
    ids_restore = torch.argsort(ids_shuffle, dim=1)  # (B, N)
    ids_keep = ids_shuffle[:, :keep]  # (B, K)
    kept = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(B, keep, D))  # (B, K, D)
    mask = ids_restore >= keep  # (B, N): the shuffled position is past the kept ones
    return kept, mask, ids_restore


def restore_tokens(kept: torch.Tensor, mask_token: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
    """Undo :func:`random_masking`: ``kept (B, K, D)`` + ``mask_token`` (broadcast to ``D``) → ``(B, N, D)``."""
    B, K, D = kept.shape
    N = ids_restore.shape[1]
    filler = mask_token.to(kept.dtype).reshape(1, 1, D).expand(B, N - K, D)
    shuffled = torch.cat([kept, filler], dim=1)  # (B, N, D) in shuffled order
    return torch.gather(shuffled, 1, ids_restore.unsqueeze(-1).expand(B, N, D))  # (B, N, D)
