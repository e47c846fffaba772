"""Reading the dumped-feature layout (fairseq HuBERT ``dump_*_feature.py``) for clustering.

A split is stored in ``nshard`` shards: ``<feat_dir>/<split>_<rank>_<nshard>.npy`` (float32
``(N_frames, D)``, the frames of all utterances of the shard concatenated in manifest order)
and ``<split>_<rank>_<nshard>.len`` (frames per utterance, one integer per line). Shards are
opened as memmaps, so a split larger than memory is read chunk by chunk.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from speechssl.cluster.rows import Rows
from speechssl.fingerprint import file_sha256

__all__ = ["FeatureShard", "shard_paths", "open_shard", "missing_shards", "open_feature_rows",
           "shard_fingerprint"]

_log = logging.getLogger(__name__)


@dataclass
class FeatureShard:
    """One shard: ``feats`` ``(N_frames, D)`` (memmap) and ``lengths`` ``(U,)`` frames per utterance."""

    feats: np.ndarray
    lengths: np.ndarray
    path: Path

    @property
    def offsets(self) -> np.ndarray:
        """``(U,)`` first frame of each utterance."""
        return np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)

    @property
    def dim(self) -> int:
        return int(self.feats.shape[1])


def shard_paths(feat_dir: str | Path, split: str, rank: int, nshard: int) -> tuple[Path, Path]:
    """``(<split>_<rank>_<nshard>.npy, ... .len)`` in ``feat_dir``."""
    stem = Path(feat_dir) / f"{split}_{rank}_{nshard}"
    return stem.with_name(stem.name + ".npy"), stem.with_name(stem.name + ".len")


def shard_fingerprint(feat_dir: str | Path, split: str, rank: int, nshard: int) -> dict[str, Any]:
    """What identifies a shard's content, for the fingerprints of steps that read it.

    A shard written by ``speechssl features dump`` carries the fingerprint of its own inputs
    (feature source, model digest, manifest digest) in ``<split>_<rank>_<nshard>.json``; that
    is used. A shard from elsewhere is identified by the sha256 of its ``.len`` file and the
    size and modification time of its ``.npy`` (hashing gigabytes of features on every rerun
    would cost more than the step).
    """
    npy, lens = shard_paths(feat_dir, split, rank, nshard)
    try:
        meta = json.loads(npy.with_suffix(".json").read_text(encoding="utf-8"))
        if isinstance(meta, dict) and meta.get("fingerprint") is not None:
            return {"dump": meta["fingerprint"], "len_sha256": file_sha256(lens)}
    except (FileNotFoundError, ValueError, OSError):
        pass
    st = npy.stat()
    return {"npy_bytes": st.st_size, "npy_mtime_ns": st.st_mtime_ns, "len_sha256": file_sha256(lens)}


def missing_shards(feat_dir: str | Path, split: str, nshard: int) -> list[str]:
    """Names of the shard files (``.npy`` or ``.len``) of the split that do not exist."""
    missing = []
    for r in range(nshard):
        for p in shard_paths(feat_dir, split, r, nshard):
            if not p.is_file():
                missing.append(p.name)
    return missing


def open_shard(feat_dir: str | Path, split: str, rank: int, nshard: int) -> FeatureShard:
    """Open one shard (features memmapped, through :func:`speechssl.features.dump.read_features`).

    Raises:
        FileNotFoundError: a shard file is missing (named, with the command that makes it).
        ValueError: features that are not a 2-D float array, or frame totals that disagree.
    """
    from speechssl.features.dump import read_features

    if not 0 <= rank < nshard:
        raise ValueError(f"shard rank {rank} is outside [0, {nshard})")
    feats, lengths, _ = read_features(feat_dir, split, nshard, rank)
    npy, _ = shard_paths(feat_dir, split, rank, nshard)
    if not np.issubdtype(feats.dtype, np.floating):
        raise ValueError(f"{npy}: expected float features, got dtype {feats.dtype}")
    return FeatureShard(feats=feats, lengths=np.asarray(lengths, dtype=np.int64), path=npy)


def open_feature_rows(
    feat_dir: str | Path, split: str, nshard: int, *, ranks: Sequence[int] | None = None,
    percent: float = 1.0, seed: int = 0,
) -> Rows:
    """Frames of the given shards as one :class:`Rows` (memmapped, nothing loaded yet).

    Args:
        feat_dir, split, nshard: the dump to read.
        ranks: which shards (default: all ``range(nshard)``).
        percent: fraction of utterances to keep from each shard, in ``(0, 1]``; as fairseq's
            ``learn_kmeans.py``, ``ceil(U * percent)`` utterances are drawn without
            replacement per shard (here with a generator seeded by ``(seed, shard)``, so the
            choice does not depend on which process reads the shard).
        seed: seed of that draw.

    Raises:
        FileNotFoundError: missing shard files (all of them named).
        ValueError: bad ``percent``; shards of different dimensions.
    """
    if not 0 < percent <= 1:
        raise ValueError(f"percent must be in (0, 1] (the fraction of utterances to use), got {percent}")
    ranks = list(range(nshard)) if ranks is None else list(ranks)
    missing = [p.name for r in ranks for p in shard_paths(feat_dir, split, r, nshard) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} feature shard file(s) missing in {feat_dir}: {', '.join(missing)}")
    shards = [open_shard(feat_dir, split, r, nshard) for r in ranks]
    ranges = []
    for r, shard in zip(ranks, shards):
        n_utt = len(shard.lengths)
        offsets = shard.offsets
        if percent < 1:
            keep = np.sort(np.random.default_rng([seed, r]).choice(n_utt, math.ceil(n_utt * percent), replace=False))
            _log.info("%s: sampled %d of %d utterances (%d frames)", shard.path.name, len(keep), n_utt,
                      int(shard.lengths[keep].sum()))
        else:
            keep = np.arange(n_utt)
        ranges.append(_merge_ranges(offsets[keep], offsets[keep] + shard.lengths[keep]))
    return Rows([s.feats for s in shards], names=[s.path.name for s in shards], ranges=ranges)


def _merge_ranges(starts: np.ndarray, stops: np.ndarray) -> list[tuple[int, int]]:
    """Sorted ``[start, stop)`` ranges with touching neighbours joined."""
    out: list[tuple[int, int]] = []
    for a, b in zip(starts.tolist(), stops.tolist()):
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0], b)
        elif b > a:
            out.append((a, b))
    return out
