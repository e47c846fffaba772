"""Several datasets trained on together, one source per batch (e.g. SpeechT5's speech + text).

- :class:`MultiSourceDataset` concatenates named :class:`~speechssl.data.base.SizedDataset`
  sources: global index ``g`` of source ``s`` is ``offsets[s] + local index``, ``sizes`` are the
  sources' sizes concatenated, and an item comes back as :class:`Tagged` ``(source, item)``.
- :class:`MultiSourceCollater` batches a list of tagged items with its source's collater and
  adds ``batch["source"]``.
- :class:`MultiSourceBatchSampler` has :class:`~speechssl.data.sampler.MaxTokensBatchSampler`'s
  interface. Every batch holds items of one source; each source is length-bucketed on its own
  (optionally with its own ``max_tokens``), resampled by its proportion, and the sources'
  batches are interleaved smoothly (:func:`interleave`).

**What a proportion means** (as fairseq/SpeechT5's ``sample_ratios``): source ``s`` with
proportion ``r_s`` contributes ``max(1, round(r_s * n_s))`` batches per training epoch, where
``n_s`` is the number of batches its items make. ``r_s = 1`` (the default) takes each batch
once, ``2`` takes each twice (upsampling), ``0.5`` a seeded half of them. The per-source
``max_tokens`` is SpeechT5's ``batch_ratio`` in absolute form (SpeechT5's text batches hold
``0.0086`` times the speech batches' tokens). The share of batches of source ``s`` in an epoch
is therefore ``round(r_s n_s) / sum_t round(r_t n_t)``.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Callable, Literal, Mapping, NamedTuple

import numpy as np

from speechssl.data.base import SizedDataset
from speechssl.data.sampler import ShardedBatchSampler, bucketed_batches, check_oversize

__all__ = ["Tagged", "MultiSourceDataset", "MultiSourceCollater", "MultiSourceBatchSampler", "interleave"]

_log = logging.getLogger(__name__)


class Tagged(NamedTuple):
    """An item of a :class:`MultiSourceDataset`: the name of its source and the source's item."""

    source: str
    item: Any


class MultiSourceDataset(SizedDataset):
    """Named datasets concatenated; items come back tagged with their source's name.

    Args:
        sources: name → dataset (each with ``sizes``, one per item). Order is kept: source ``k``
            holds global indices ``offsets[k] <= g < offsets[k + 1]``.
        proportions: name → sample ratio ``> 0`` per training epoch (see the module docstring);
            sources left out get 1.0. None: 1.0 for all.
        max_tokens: name → ``max_tokens`` of that source's batches (default: the sampler's).
        max_sentences: name → ``max_sentences`` of that source's batches (default: the sampler's).

    Attributes:
        names: the source names, in order.
        offsets: ``(K + 1,)`` int64, start of each source's global indices, then the total.
        sizes: ``(N,)`` int64, the sources' sizes concatenated.

    Raises:
        ValueError / TypeError: no source, a source without ``sizes`` or with ``len(sizes) !=
            len(dataset)``, an empty source, a proportion or max_tokens for an unknown source
            or not positive.
    """

    def __init__(self, sources: Mapping[str, SizedDataset], proportions: Mapping[str, float] | None = None, *,
                 max_tokens: Mapping[str, int] | None = None,
                 max_sentences: Mapping[str, int] | None = None) -> None:
        if not sources:
            raise ValueError("MultiSourceDataset needs at least one source")
        self.sources = dict(sources)
        self.names = list(self.sources)
        sizes = []
        for name, ds in self.sources.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"source names must be non-empty strings, got {name!r}")
            if not hasattr(ds, "sizes"):
                raise TypeError(f"source {name!r} ({type(ds).__name__}) has no 'sizes'; sources must be SizedDatasets")
            s = np.asarray(ds.sizes, dtype=np.int64)
            if s.ndim != 1 or len(s) != len(ds):
                raise ValueError(f"source {name!r}: sizes has shape {s.shape} but the dataset has {len(ds)} items")
            if len(s) == 0:
                raise ValueError(f"source {name!r} is empty")
            sizes.append(s)
        self.sizes = np.concatenate(sizes)
        self.offsets = np.concatenate([[0], np.cumsum([len(s) for s in sizes])]).astype(np.int64)
        self.proportions = {n: 1.0 for n in self.names}
        for name, value in _checked("proportions", proportions, self.names, float).items():
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"proportions[{name!r}] must be a finite number > 0, got {value}; "
                                 "leave the source out instead of giving it 0")
            self.proportions[name] = value
        self.max_tokens = _checked("max_tokens", max_tokens, self.names, int)
        self.max_sentences = _checked("max_sentences", max_sentences, self.names, int)
        for what, table in (("max_tokens", self.max_tokens), ("max_sentences", self.max_sentences)):
            for name, value in table.items():
                if value <= 0:
                    raise ValueError(f"{what}[{name!r}] must be positive, got {value}")

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[str, int]:
        """``(source name, index within that source)`` of global ``index``."""
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        k = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.names[k], index - int(self.offsets[k])

    def source_of(self, index: int) -> str:
        """Name of the source global ``index`` belongs to."""
        return self.locate(index)[0]

    def source_range(self, name: str) -> range:
        """Global indices of source ``name``."""
        k = self._position(name)
        return range(int(self.offsets[k]), int(self.offsets[k + 1]))

    def _position(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"no source named {name!r}; sources: {self.names}") from None

    def __getitem__(self, index: int) -> Tagged:
        name, local = self.locate(index)
        return Tagged(name, self.sources[name][local])

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to every source."""
        for ds in self.sources.values():
            if hasattr(ds, "set_epoch"):
                ds.set_epoch(epoch)

    def collater(self, **overrides: Callable[[list[Any]], Any]) -> MultiSourceCollater:
        """A :class:`MultiSourceCollater` using each source's ``collater()`` (or ``overrides[name]``)."""
        fns = {}
        for name, ds in self.sources.items():
            if name in overrides:
                fns[name] = overrides[name]
            elif hasattr(ds, "collater"):
                fns[name] = ds.collater()
            else:
                raise TypeError(f"source {name!r} ({type(ds).__name__}) has no collater(); pass {name}=<collate fn>")
        unknown = set(overrides) - set(self.names)
        if unknown:
            raise KeyError(f"collaters for unknown sources {sorted(unknown)}; sources: {self.names}")
        return MultiSourceCollater(fns)


def _checked(what: str, table: Mapping[str, Any] | None, names: list[str], cast: type) -> dict[str, Any]:
    table = dict(table or {})
    unknown = sorted(set(table) - set(names))
    if unknown:
        raise ValueError(f"{what} names unknown source(s) {unknown}; sources: {names}")
    try:
        return {k: cast(v) for k, v in table.items()}
    except (TypeError, ValueError):
        raise ValueError(f"{what} values must be numbers, got {table}") from None


class MultiSourceCollater:
    """Batch :class:`Tagged` items of one source with that source's collater.

    The result is the source collater's dict with ``"source": name`` added.

    Args:
        collaters: source name → collate function (list of items → dict).

    Raises (when called):
        ValueError: an empty list, or items of several sources (use :class:`MultiSourceBatchSampler`).
        KeyError / TypeError: an unknown source, an untagged item, or a collater that does not
            return a dict or already sets ``"source"``.
    """

    def __init__(self, collaters: Mapping[str, Callable[[list[Any]], Any]]) -> None:
        if not collaters:
            raise ValueError("MultiSourceCollater needs at least one collater")
        self.collaters = dict(collaters)

    def __call__(self, items: list[Tagged]) -> dict[str, Any]:
        if not items:
            raise ValueError("cannot collate an empty list of items")
        if not all(isinstance(it, tuple) and len(it) == 2 for it in items):
            raise TypeError("MultiSourceCollater takes Tagged (source, item) pairs, as MultiSourceDataset returns")
        names = sorted({it[0] for it in items})
        if len(names) > 1:
            raise ValueError(f"a batch mixes sources {names}; batch a MultiSourceDataset with "
                             "MultiSourceBatchSampler, which draws each batch from one source")
        name = names[0]
        if name not in self.collaters:
            raise KeyError(f"no collater for source {name!r}; collaters: {sorted(self.collaters)}")
        batch = self.collaters[name]([it[1] for it in items])
        if not isinstance(batch, dict):
            raise TypeError(f"the collater of source {name!r} returned {type(batch).__name__}, expected a dict")
        if "source" in batch:
            raise TypeError(f"the collater of source {name!r} sets 'source' itself; that key is reserved")
        batch["source"] = name
        return batch


def interleave(counts: list[int]) -> list[int]:
    """Smooth weighted round-robin: a sequence holding ``counts[k]`` copies of each ``k``, spread evenly.

    At each step every source's credit grows by its count, the source with the most credit
    (the first one on ties) is emitted and pays the total. Each prefix of length ``m`` holds
    about ``m * counts[k] / sum(counts)`` of source ``k``; deterministic.
    """
    total = int(sum(counts))
    credit = [0] * len(counts)
    out: list[int] = []
    for _ in range(total):
        for k, c in enumerate(counts):
            credit[k] += c
        k = max(range(len(counts)), key=credit.__getitem__)
        credit[k] -= total
        out.append(k)
    return out


class MultiSourceBatchSampler(ShardedBatchSampler):
    """Batch sampler over a :class:`MultiSourceDataset`: one source per batch, sources by proportion.

    The interface of :class:`~speechssl.data.sampler.MaxTokensBatchSampler` (constructor
    keywords, :meth:`set_epoch`, :meth:`batches`, ``__iter__``, ``__len__``, ``sizes``), with
    the dataset instead of its sizes and per-source limits on top. Per epoch:

    1. each source ``k``'s kept items are length-bucketed into batches of at most its
       ``max_tokens`` (and ``max_sentences``); with ``shuffle`` ties and batch order are
       shuffled from ``(seed, epoch, k)``;
    2. with ``shuffle`` (training), source ``k`` is resampled to ``max(1, round(r_k * n_k))``
       batches (each batch ``floor`` times, the remainder a seeded subset, then shuffled);
       without it (validation) every batch is taken once, in ascending size, proportions unused;
    3. with ``even_shards`` and ``R`` ranks, each source's list is padded to a multiple of
       ``R`` by repeating its first batches, and cut into groups of ``R`` consecutive batches;
    4. the groups of the sources are interleaved by :func:`interleave` (weights: group counts)
       into the global list; rank ``r`` takes batches ``r, r + R, ...`` of it.

    So under ``even_shards`` all ranks draw their ``i``-th batch from the same source (a step
    uses the same modules everywhere), every rank gets the same number of batches, and the
    union of the ranks' shares is the global list. Everything depends only on
    ``(seed, epoch)``: every rank computes the same list, and a resumed run skips exactly the
    batches it trained on (``set_epoch(epoch, start_batch)``).

    Args:
        dataset: the :class:`MultiSourceDataset` (its ``proportions``, ``max_tokens`` and
            ``max_sentences`` tables are used).
        max_tokens: bound on ``len(batch) * max(size in batch)`` for sources without their own.
        max_sentences: optional bound on items per batch for sources without their own.
        shuffle, seed, num_replicas, rank, even_shards, oversize: as for ``MaxTokensBatchSampler``
            (``oversize`` is applied per source, against that source's ``max_tokens``).
        source_max_tokens: name → ``max_tokens``, overriding ``dataset.max_tokens``.
        source_max_sentences: name → ``max_sentences``, overriding ``dataset.max_sentences``.

    Raises:
        ValueError: bad arguments, or (``oversize="error"``) an item larger than its source's
            ``max_tokens`` (names the source and the item).
    """

    def __init__(self, dataset: MultiSourceDataset, max_tokens: int, *, max_sentences: int | None = None,
                 shuffle: bool = True, seed: int = 0, num_replicas: int = 1, rank: int = 0,
                 even_shards: bool = True, oversize: Literal["error", "skip"] = "error",
                 source_max_tokens: Mapping[str, int] | None = None,
                 source_max_sentences: Mapping[str, int] | None = None) -> None:
        if not isinstance(dataset, MultiSourceDataset):
            raise TypeError(f"MultiSourceBatchSampler takes a MultiSourceDataset, got {type(dataset).__name__}; "
                            "use MaxTokensBatchSampler for a single dataset")
        self._set_arguments(max_tokens, max_sentences, shuffle, seed, num_replicas, rank, even_shards, oversize)
        self.dataset = dataset
        self.sizes = np.asarray(dataset.sizes, dtype=np.int64)
        mt = {**dataset.max_tokens, **_checked("source_max_tokens", source_max_tokens, dataset.names, int)}
        ms = {**dataset.max_sentences, **_checked("source_max_sentences", source_max_sentences, dataset.names, int)}
        for what, table in (("source_max_tokens", mt), ("source_max_sentences", ms)):
            for name, value in table.items():
                if value <= 0:
                    raise ValueError(f"{what}[{name!r}] must be positive, got {value}")
        self.source_max_tokens = {n: mt.get(n, self.max_tokens) for n in dataset.names}
        self.source_max_sentences = {n: ms.get(n, max_sentences) for n in dataset.names}
        self._keep: list[np.ndarray] = []
        for k, name in enumerate(dataset.names):
            lo, hi = int(dataset.offsets[k]), int(dataset.offsets[k + 1])
            keep = check_oversize(self.sizes[lo:hi], self.source_max_tokens[name], oversize, source=name)
            self._keep.append(keep + lo)
        self._cache: tuple[int, list[list[int]], list[int]] | None = None
        counts = {n: c for n, c in zip(dataset.names, self._source_counts(1))}
        _log.info("multi-source batches per epoch: %s (proportions %s, max_tokens %s)", counts,
                  dataset.proportions, self.source_max_tokens)

    def _source_batches(self, k: int, epoch: int) -> list[list[int]]:
        """Source ``k``'s batches of ``epoch`` (global indices), resampled by its proportion."""
        name = self.dataset.names[k]
        rng = np.random.default_rng([self.seed, epoch, k]) if self.shuffle else None
        batches = bucketed_batches(self._keep[k], self.sizes, self.source_max_tokens[name],
                                   self.source_max_sentences[name], rng)
        if rng is None:
            return batches
        n = len(batches)
        target = max(1, int(math.floor(self.dataset.proportions[name] * n + 0.5)))
        picks = np.concatenate([np.tile(np.arange(n), target // n),
                                np.sort(rng.choice(n, size=target % n, replace=False))]).astype(np.int64)
        return [batches[i] for i in picks[rng.permutation(len(picks))]]

    def _source_counts(self, epoch: int) -> list[int]:
        _, _, counts = self._global(epoch)
        return counts

    def _global(self, epoch: int) -> tuple[int, list[list[int]], list[int]]:
        """``(epoch, the global list of batches, batches per source)``, cached for the last epoch asked."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache
        group = self.num_replicas
        groups: list[list[list[list[int]]]] = []
        counts = []
        for k in range(len(self.dataset.names)):
            batches = self._source_batches(k, epoch)
            counts.append(len(batches))
            if self.even_shards and len(batches) % group:
                batches = batches + [batches[i % len(batches)] for i in range(group - len(batches) % group)]
            groups.append([batches[i:i + group] for i in range(0, len(batches), group)])
        order = interleave([len(g) for g in groups])
        position = [0] * len(groups)
        flat: list[list[int]] = []
        for k in order:
            flat.extend(groups[k][position[k]])
            position[k] += 1
        self._cache = (epoch, flat, counts)
        return self._cache

    def global_batches(self, epoch: int | None = None) -> list[list[int]]:
        """Every rank's batches of ``epoch`` in global order, before sharding (with ``even_shards`` padding)."""
        return self._global(self.epoch if epoch is None else epoch)[1]

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """This rank's batches of ``epoch`` (default: the current one), ignoring ``start_batch``."""
        flat = self.global_batches(epoch)
        return flat if self.num_replicas == 1 else flat[self.rank::self.num_replicas]

    def sources(self, epoch: int | None = None) -> list[str]:
        """Source name of each of this rank's batches of ``epoch``."""
        return [self.dataset.source_of(b[0]) for b in self.batches(epoch)]
