"""CAE's masks: BEiT's block-wise masking with an exact masked count, or uniform random masking.

Both draw from an explicit ``numpy.random.Generator`` (the dataset seeds one per
``(seed, epoch, index)``) and return a ``(N,)`` bool mask over the patch grid, row-major,
True = masked, with exactly ``num_masked`` True entries (every image of a batch has the same
number of visible patches, so the encoder's input is one ``(B, K, D)`` tensor).

Block-wise (Bao et al., 2022, BEiT; CAE's default): repeatedly draw a rectangle of area
``U(min_block, min(remaining, max_block))`` patches and aspect ratio ``exp(U(log a, log 1/a))``
(``a = min_aspect``) at a uniform position; it is accepted when it adds between 1 and
``remaining`` new patches (10 tries per rectangle), so the count never overshoots; when no
try succeeds before the count is reached, CAE's rule fills it: uniformly chosen unmasked
patches are masked until exactly ``num_masked`` are.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["mask_count", "block_mask", "random_mask"]


def mask_count(num_patches: int, mask_ratio: float) -> int:
    """Masked patches of ``num_patches`` at ``mask_ratio``: ``int(N * ratio)``, kept within ``[1, N - 1]``."""
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
    if num_patches < 2:
        raise ValueError(f"masking needs at least 2 patches, got {num_patches}")
    return min(max(1, int(num_patches * mask_ratio)), num_patches - 1)


def block_mask(grid: tuple[int, int], num_masked: int, rng: np.random.Generator, *, min_block: int = 4,
               max_block: int | None = None, min_aspect: float = 0.3) -> np.ndarray:
    """Block-wise mask of ``grid = (H_p, W_p)`` with exactly ``num_masked`` patches (module docstring).

    Returns:
        ``(H_p * W_p,)`` bool, row-major, True = masked.
    """
    gh, gw = (int(g) for g in grid)
    n = gh * gw
    if not 0 < num_masked < n:
        raise ValueError(f"num_masked must be in 1..{n - 1} for a {gh}x{gw} grid, got {num_masked}")
    if not 0.0 < min_aspect <= 1.0:
        raise ValueError(f"min_aspect must be in (0, 1], got {min_aspect}")
    max_block = num_masked if max_block is None else max_block
    log_aspect = (math.log(min_aspect), math.log(1.0 / min_aspect))
    mask = np.zeros((gh, gw), dtype=bool)
    count = 0
    while count < num_masked:
        budget = min(num_masked - count, max_block)
        added = 0
        for _ in range(10):
            area = min_block + (budget - min_block) * rng.random()  # Python's uniform: may lie below min_block
            aspect = math.exp(log_aspect[0] + (log_aspect[1] - log_aspect[0]) * rng.random())
            h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if 0 < h < gh and 0 < w < gw:
                top, left = int(rng.integers(0, gh - h + 1)), int(rng.integers(0, gw - w + 1))
                new = h * w - int(mask[top:top + h, left:left + w].sum())
                if 0 < new <= budget:
                    mask[top:top + h, left:left + w] = True
                    added = new
                    break
        if added == 0:
            break
        count += added
    flat = mask.reshape(-1)
    if count < num_masked:  # CAE: a fixed number of masked patches
        free = np.flatnonzero(~flat)
        flat[rng.choice(free, num_masked - count, replace=False)] = True
    return flat


def random_mask(num_patches: int, num_masked: int, rng: np.random.Generator) -> np.ndarray:
    """``(N,)`` bool with ``num_masked`` uniformly chosen patches True."""
    if not 0 < num_masked < num_patches:
        raise ValueError(f"num_masked must be in 1..{num_patches - 1}, got {num_masked}")
    out = np.zeros(num_patches, dtype=bool)
    out[rng.permutation(num_patches)[:num_masked]] = True
    return out
