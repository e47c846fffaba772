"""What every dataset of the data layer is: a map-style dataset with item costs, seeded per item.

:class:`SizedDataset` is the contract the Trainer's batch samplers rely on (``sizes`` for
``max_tokens`` batching, ``set_epoch`` before each epoch). :func:`item_seed` and
:func:`item_generator` turn ``(seed, epoch, index)`` into the randomness of one item, so an
item is the same whatever the global RNG, the worker that loads it or the rank that asks.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["SizedDataset", "item_seed", "item_generator", "check_seed"]


class SizedDataset(torch.utils.data.Dataset):
    """A map-style dataset whose items have a known cost for ``max_tokens`` batching.

    Attributes:
        sizes: one int per item, its cost in tokens (for audio: samples at 16 kHz, after any
            cropping the dataset applies; for text: tokens; for fixed-size images, clips and
            point sets: 1, so ``max_tokens`` is the number of items per batch). The Trainer's
            batch sampler groups items so that ``max(sizes in batch) * len(batch) <= max_tokens``.

    Items must be a deterministic function of ``(index, epoch)``: random crops draw from
    a generator seeded by ``(seed, epoch, index)`` (:func:`item_generator`), never from global
    RNG, so that resumed and distributed runs see the same data. The Trainer calls
    :meth:`set_epoch` before each epoch.
    """

    sizes: Sequence[int]

    def set_epoch(self, epoch: int) -> None:
        """Called by the Trainer before each epoch (1-based)."""


def check_seed(seed: int) -> int:
    """``seed`` as an int, or a ValueError if it is negative (seeds are non-negative)."""
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    return seed


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit integer determined by ``(seed, epoch, index)`` alone (all non-negative).

    Mixed through numpy's ``SeedSequence``, so nearby triples give unrelated seeds.
    """
    state = np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31 | int(state[1]) >> 1) & (2**63 - 1)


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from ``(seed, epoch, index)`` (see :func:`item_seed`)."""
    return torch.Generator().manual_seed(item_seed(seed, epoch, index))
