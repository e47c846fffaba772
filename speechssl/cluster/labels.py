"""Dump k-means unit labels for dumped features: per-shard ``.km`` files, merged ``<split>.km`` + ``dict.km.txt``.

Layout (fairseq HuBERT ``dump_km_label.py`` + its merge step):

- ``<lab_dir>/<split>_<rank>_<nshard>.km``: one line per utterance of the shard, the unit id
  of every frame, space-separated;
- ``<lab_dir>/<split>.km``: the shards concatenated in rank order (= manifest order);
- ``<lab_dir>/dict.km.txt``: ``<unit> <count>`` for every unit ``0 .. K-1`` in numeric order.

Every file is written atomically, so a shard file that exists is complete. Beside each shard
file, ``<split>_<rank>_<nshard>.km.json`` holds the fingerprint of what labelled it (the
centroids' sha256 and the feature shard's own fingerprint, :mod:`speechssl.fingerprint`): a
rerun skips a shard only when both are unchanged, and relabels it, with a log line naming
what changed, when the k-means model or the features differ.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from speechssl.atomic import atomic_open, atomic_write_text
from speechssl.cluster.model import KMeansModel
from speechssl.cluster.store import FeatureShard, open_shard, shard_fingerprint, shard_paths
from speechssl.data.manifest import Dictionary, write_dict
from speechssl.fingerprint import same_inputs
from speechssl.log import progress_bar

__all__ = ["shard_label_path", "dump_shard_labels", "merge_shard_labels", "dump_labels"]

_log = logging.getLogger(__name__)

_BLOCK_FRAMES = 1 << 16  # frames per predict call: the progress bar's granularity


def shard_label_path(lab_dir: str | Path, split: str, rank: int, nshard: int) -> Path:
    """``<lab_dir>/<split>_<rank>_<nshard>.km``."""
    return Path(lab_dir) / f"{split}_{rank}_{nshard}.km"


def _label_fingerprint(model: KMeansModel, feat_dir: str | Path, split: str, rank: int, nshard: int
                       ) -> dict[str, Any]:
    centroids = model.centroids.detach().cpu().contiguous()
    return {"kmeans_sha256": hashlib.sha256(centroids.numpy().tobytes()).hexdigest(),
            "kmeans_shape": list(centroids.shape), "features": shard_fingerprint(feat_dir, split, rank, nshard)}


def _recorded(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("fingerprint")
    except (FileNotFoundError, ValueError, AttributeError, OSError):
        return None


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for _ in f)


def dump_shard_labels(
    model: KMeansModel, feat_dir: str | Path, split: str, rank: int, nshard: int, lab_dir: str | Path,
    *, device: torch.device | str = "cpu", overwrite: bool = False, progress: bool = False,
) -> Path:
    """Label every frame of one feature shard with its nearest centroid.

    Returns:
        The shard's ``.km`` file. An existing one is kept (resumable) unless ``overwrite``,
        when its recorded fingerprint matches this model and these features and its line
        count the shard's; otherwise it is relabelled, with a log line.

    Raises:
        FileNotFoundError: the feature shard is missing.
        ValueError: its feature dimension differs from the model's.
    """
    shard = open_shard(feat_dir, split, rank, nshard)
    if shard.dim != model.dim:
        raise ValueError(
            f"{shard.path}: features have dimension {shard.dim} but the k-means model has dimension "
            f"{model.dim} ({model.feature or 'unknown features'}); dump labels from the features the "
            "model was fitted on")
    out = shard_label_path(lab_dir, split, rank, nshard)
    sidecar = out.with_name(out.name + ".json")
    fingerprint = _label_fingerprint(model, feat_dir, split, rank, nshard)
    if out.is_file() and not overwrite and same_inputs(_recorded(sidecar), fingerprint, str(out),
                                                       action="labelling the shard again"):
        n = _count_lines(out)
        if n == len(shard.lengths):
            _log.info("%s exists (%d utterances), skipping", out, n)
            return out
        _log.warning("%s has %d lines but the shard has %d utterances; relabelling", out, n, len(shard.lengths))
    sidecar.unlink(missing_ok=True)  # no fingerprint beside a .km file that is being replaced
    labels = _predict_shard(model, shard, torch.device(device), progress, desc=f"{split} {rank}/{nshard}")
    with atomic_open(out, "w", encoding="utf-8") as f:
        for a, b in zip(shard.offsets.tolist(), (shard.offsets + shard.lengths).tolist()):
            f.write(" ".join(map(str, labels[a:b].tolist())) + "\n")
    atomic_write_text(sidecar, json.dumps({"fingerprint": fingerprint, "rows": len(shard.lengths)}, indent=1) + "\n")
    _log.info("wrote %s: %d utterances, %d frames", out, len(shard.lengths), len(labels))
    return out


def _predict_shard(model: KMeansModel, shard: FeatureShard, device: torch.device, progress: bool,
                   desc: str) -> np.ndarray:
    n = shard.feats.shape[0]
    labels = np.empty(n, dtype=np.int64)
    bar = None
    if progress:
        bar = progress_bar(total=n, desc=desc, unit="frame", unit_scale=True, leave=False)
    try:
        for a in range(0, n, _BLOCK_FRAMES):
            block = torch.from_numpy(np.array(shard.feats[a:a + _BLOCK_FRAMES], dtype=np.float32)).to(device)
            try:
                labels[a:a + len(block)] = model.predict(block).cpu().numpy()
            except ValueError:
                # predict names the row within the block; name the shard and frame instead.
                bad = (~torch.isfinite(block).all(dim=1)).nonzero()
                if bad.numel():
                    frame = a + int(bad[0, 0])
                    utt = int(np.searchsorted(np.cumsum(shard.lengths), frame, side="right"))
                    raise ValueError(f"{shard.path}: frame {frame} (utterance {utt} of the shard) holds "
                                     "NaN or inf; fix the features before labelling") from None
                raise
            if bar is not None:
                bar.update(len(block))
    finally:
        if bar is not None:
            bar.close()
    return labels


def merge_shard_labels(lab_dir: str | Path, split: str, nshard: int, n_clusters: int) -> tuple[Path, Path]:
    """Concatenate the shard ``.km`` files into ``<split>.km`` and write ``dict.km.txt``.

    Raises:
        FileNotFoundError: shard label files are missing (all named).
        ValueError: a unit id outside ``[0, n_clusters)`` (file and line named).
    """
    lab_dir = Path(lab_dir)
    paths = [shard_label_path(lab_dir, split, r, nshard) for r in range(nshard)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"cannot merge labels: {len(missing)} of {nshard} shard label files "
                                f"missing in {lab_dir}: {', '.join(missing)}")
    counts = np.zeros(n_clusters, dtype=np.int64)
    merged = lab_dir / f"{split}.km"
    rows = 0
    with atomic_open(merged, "w", encoding="utf-8") as out:
        for p in paths:
            with p.open(encoding="utf-8") as f:
                for lineno, line in enumerate(f, start=1):
                    units = np.array(line.split(), dtype=np.int64)
                    if units.size and (units.min() < 0 or units.max() >= n_clusters):
                        raise ValueError(f"{p}:{lineno}: unit id outside [0, {n_clusters}); was it dumped "
                                         "with another k-means model?")
                    counts += np.bincount(units, minlength=n_clusters)
                    out.write(line if line.endswith("\n") else line + "\n")
                    rows += 1
    dict_path = lab_dir / "dict.km.txt"
    write_dict(dict_path, Dictionary([str(i) for i in range(n_clusters)], counts.tolist()))
    _log.info("merged %d shards into %s (%d rows, %d frames, %d of %d units used) and wrote %s",
              nshard, merged, rows, int(counts.sum()), int((counts > 0).sum()), n_clusters, dict_path)
    return merged, dict_path


def dump_labels(
    model: KMeansModel, feat_dir: str | Path, split: str, nshard: int, lab_dir: str | Path, *,
    shards: Sequence[int] | None = None, device: torch.device | str = "cpu", overwrite: bool = False,
    progress: bool = False, merge: bool = True,
) -> tuple[Path, Path] | None:
    """Label the given shards (default: all), then (with ``merge``) merge if every shard's labels exist.

    Returns:
        ``(<split>.km, dict.km.txt)`` when merged, ``None`` when other shards are still missing.

    Raises:
        FileNotFoundError: a requested feature shard is missing (all named).
    """
    shards = list(range(nshard)) if shards is None else list(shards)
    for r in shards:
        if not 0 <= r < nshard:
            raise ValueError(f"--shard {r} is outside [0, {nshard})")
    missing = [p.name for r in shards for p in shard_paths(feat_dir, split, r, nshard) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} feature shard file(s) missing in {feat_dir}: {', '.join(missing)}")
    for r in shards:
        dump_shard_labels(model, feat_dir, split, r, nshard, lab_dir, device=device, overwrite=overwrite,
                          progress=progress)
    pending = [r for r in range(nshard) if not shard_label_path(lab_dir, split, r, nshard).is_file()]
    if not merge:
        return None
    if pending:
        _log.info("%d of %d shards labelled; the merge into %s.km waits for shards %s",
                  nshard - len(pending), nshard, split, ", ".join(map(str, pending)))
        return None
    return merge_shard_labels(lab_dir, split, nshard, model.n_clusters)
