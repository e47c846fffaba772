"""Random in-memory datasets for the Trainer tests."""
from __future__ import annotations

import torch

from speechssl.data.base import SizedDataset


class RandomItems(SizedDataset):
    """``n`` items ``{name: tensor of shape}``, drawn in keyword order from a generator seeded by ``seed``.

    Every item costs 1 (``sizes``), so ``max_tokens`` is the number of items per batch.
    """

    def __init__(self, n: int, seed: int, **shapes: tuple[int, ...]) -> None:
        g = torch.Generator().manual_seed(seed)
        self.data = {name: torch.randn(n, *shape, generator=g) for name, shape in shapes.items()}
        self.sizes = [1] * n

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {name: t[i] for name, t in self.data.items()}


def stack(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Batch items of :class:`RandomItems`: each field stacked along a new dim 0."""
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}
