"""Length-bucketed batching by ``max_tokens``, deterministic, sharded and resumable.

A batch's cost is ``len(batch) * max(sizes in batch)``: the number of samples (or whatever unit
the dataset's ``sizes`` count) the padded batch holds. Items are sorted by size so each batch
holds items of similar length, then the batch order is shuffled. Everything depends only on
``(seed, epoch)``, so every rank computes the same batches and takes its own share, and a
resumed run can skip the batches it already trained on.
"""
from __future__ import annotations

import logging
from typing import Iterator, Literal, Sequence

import numpy as np
import torch

__all__ = ["MaxTokensBatchSampler", "ShardedBatchSampler", "batch_by_size", "bucketed_batches", "check_oversize"]

_log = logging.getLogger(__name__)


def batch_by_size(sorted_indices: Sequence[int], sizes: Sequence[int] | np.ndarray, max_tokens: int,
                  max_sentences: int | None = None) -> list[list[int]]:
    """Group indices, already sorted by ascending size, greedily into batches.

    Each batch satisfies ``len(batch) * max(sizes[batch]) <= max_tokens`` (and
    ``len(batch) <= max_sentences`` when given). Every size must be ``<= max_tokens``.
    """
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for idx in sorted_indices:
        size = int(sizes[idx])
        grown = max(longest, size)
        full = (len(current) + 1) * grown > max_tokens or (
            max_sentences is not None and len(current) >= max_sentences)
        if current and full:
            batches.append(current)
            current, grown = [], size
        current.append(int(idx))
        longest = grown
    if current:
        batches.append(current)
    return batches


def bucketed_batches(indices: np.ndarray, sizes: Sequence[int] | np.ndarray, max_tokens: int,
                     max_sentences: int | None = None, rng: np.random.Generator | None = None) -> list[list[int]]:
    """Length-bucketed batches of ``indices``: sorted by size, greedily batched, then shuffled.

    With ``rng``, ties of equal size are broken by a random permutation and the batch order is
    shuffled (both drawn from ``rng``, in that order); without it batches come in ascending size.
    Every ``sizes[i]`` for ``i`` in ``indices`` must be ``<= max_tokens``.
    """
    indices = np.asarray(indices, dtype=np.int64)
    item_sizes = np.asarray(sizes, dtype=np.int64)[indices]
    if rng is not None:
        perm = rng.permutation(len(indices))
        order = perm[np.argsort(item_sizes[perm], kind="stable")]
    else:
        order = np.argsort(item_sizes, kind="stable")
    batches = batch_by_size(indices[order], sizes, max_tokens, max_sentences)
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def check_oversize(sizes: np.ndarray, max_tokens: int, oversize: str, source: str | None = None) -> np.ndarray:
    """Indices of ``sizes`` that fit in ``max_tokens``, after applying the ``oversize`` policy.

    ``source`` names the dataset in messages (multi-source batching).

    Raises:
        ValueError: ``oversize="error"`` and an item is larger than ``max_tokens`` (names it), or
            no item fits.
    """
    where = f"source {source!r}: " if source is not None else ""
    too_big = np.flatnonzero(sizes > max_tokens)
    if len(too_big) and oversize == "error":
        i = int(too_big[0])
        raise ValueError(
            f"{where}item {i} has size {int(sizes[i])} > max_tokens={max_tokens} "
            f"({len(too_big)} item(s) too large in all); raise max_tokens, crop items "
            "(max_sample_size), or choose oversize='skip'")
    if len(too_big):
        _log.warning("%sskipping %d of %d items larger than max_tokens=%d (largest: %d)",
                     where, len(too_big), len(sizes), max_tokens, int(sizes[too_big].max()))
    keep = np.flatnonzero(sizes <= max_tokens)
    if len(keep) == 0:
        raise ValueError(f"{where}no item fits in max_tokens={max_tokens} (smallest size "
                         f"{int(sizes.min()) if len(sizes) else 0}, {len(sizes)} items)")
    return keep


class ShardedBatchSampler(torch.utils.data.Sampler):
    """What the max-tokens and multi-source batch samplers share: their batching and sharding
    arguments (validated), the data position (:meth:`set_epoch`) and iteration.

    Subclasses call :meth:`_set_arguments` in ``__init__`` and implement :meth:`batches`.
    """

    def _set_arguments(self, max_tokens: int, max_sentences: int | None, shuffle: bool, seed: int,
                       num_replicas: int, rank: int, even_shards: bool, oversize: str) -> None:
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        if max_sentences is not None and max_sentences <= 0:
            raise ValueError(f"max_sentences must be positive or None, got {max_sentences}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need 0 <= rank < num_replicas, got rank={rank}, num_replicas={num_replicas}")
        if oversize not in ("error", "skip"):
            raise ValueError(f"oversize must be 'error' or 'skip', got {oversize!r}")
        self.max_tokens = int(max_tokens)
        self.max_sentences = max_sentences
        self.shuffle = shuffle
        self.seed = int(seed)
        self.num_replicas = num_replicas
        self.rank = rank
        self.even_shards = even_shards
        self.epoch = 1
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the batches of ``epoch`` (1-based) and skip this rank's first ``start_batch``."""
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """This rank's batches of ``epoch`` (default: the current one), ignoring ``start_batch``."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()[self.start_batch:]

    def __len__(self) -> int:
        """Batches this rank gets in a full epoch (not reduced by ``start_batch``)."""
        return len(self.batches())


class MaxTokensBatchSampler(ShardedBatchSampler):
    """Batch sampler over item sizes: length-bucketed, ``max_tokens``-bounded, sharded, resumable.

    Use it as ``DataLoader(dataset, batch_sampler=sampler, collate_fn=...)``; call
    :meth:`set_epoch` before iterating each epoch.

    Args:
        sizes: cost of each item (for audio: samples at 16 kHz after cropping).
        max_tokens: bound on ``len(batch) * max(size in batch)``.
        max_sentences: optional bound on items per batch.
        shuffle: shuffle ties within equal sizes and the order of batches, from ``(seed, epoch)``.
            Without it batches come in ascending size order (for validation).
        seed: base seed of the shuffling.
        num_replicas: number of distributed ranks sharing the batches.
        rank: this process's rank, ``0 <= rank < num_replicas``.
        even_shards: give every rank the same number of batches by repeating batches from the
            start of the epoch when the count does not divide (needed for training under DDP,
            where every rank must run the same number of steps). When False (validation), rank
            ``r`` takes batches ``r, r + R, ...`` and counts may differ by one.
        oversize: what to do with an item larger than ``max_tokens``: ``"error"`` raises a
            ValueError naming it; ``"skip"`` leaves it out and logs how many were left out.

    Raises:
        ValueError: bad arguments, or (``oversize="error"``) an item larger than ``max_tokens``.
    """

    def __init__(self, sizes: Sequence[int] | np.ndarray, max_tokens: int, *, max_sentences: int | None = None,
                 shuffle: bool = True, seed: int = 0, num_replicas: int = 1, rank: int = 0,
                 even_shards: bool = True, oversize: Literal["error", "skip"] = "error") -> None:
        self.sizes = np.asarray(sizes, dtype=np.int64)
        if self.sizes.ndim != 1:
            raise ValueError(f"sizes must be a 1-D sequence of ints, got shape {self.sizes.shape}")
        self._set_arguments(max_tokens, max_sentences, shuffle, seed, num_replicas, rank, even_shards, oversize)
        self._keep = check_oversize(self.sizes, self.max_tokens, oversize)
        self._cache: tuple[int, list[list[int]]] | None = None
        n = len(self._all_batches(1))
        if even_shards and n % num_replicas:
            _log.info("%d batches do not divide among %d ranks: repeating %d batch(es) so each rank gets %d",
                      n, num_replicas, num_replicas - n % num_replicas, -(-n // num_replicas))

    def _all_batches(self, epoch: int) -> list[list[int]]:
        """All batches of ``epoch`` before sharding (cached for the last epoch asked)."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, epoch]) if self.shuffle else None
        batches = bucketed_batches(self._keep, self.sizes, self.max_tokens, self.max_sentences, rng)
        self._cache = (epoch, batches)
        return batches

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """This rank's batches of ``epoch`` (default: the current one), ignoring ``start_batch``."""
        batches = self._all_batches(self.epoch if epoch is None else epoch)
        if self.num_replicas == 1:
            return batches
        if self.even_shards and len(batches) % self.num_replicas:
            missing = self.num_replicas - len(batches) % self.num_replicas
            batches = batches + [batches[i % len(batches)] for i in range(missing)]
        return batches[self.rank::self.num_replicas]
