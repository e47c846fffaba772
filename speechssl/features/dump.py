"""Dump features of a manifest split to fairseq's sharded layout, resumably, and read them back.

Layout (fairseq HuBERT ``simple_kmeans/dump_*_feature.py``), for shard ``rank`` of ``nshard``::

    <feat_dir>/<split>_<rank>_<nshard>.npy   float32 (N_frames, D), every utterance's frames
                                             concatenated in manifest order (np.load(mmap_mode="r"))
    <feat_dir>/<split>_<rank>_<nshard>.len   frames per utterance, one integer per line
    <feat_dir>/<split>_<rank>_<nshard>.json  what made it (feature source, options, manifest
                                             digest, rows); written last: the shard is complete

A shard covers manifest rows ``[rank * ceil(n / nshard), (rank + 1) * ceil(n / nshard))``.

Features come from a :class:`FeatureSource`: :class:`KaldiFeatureSource` (fbank, MFCC,
fairseq's 39-dim MFCC, spectrogram) or :class:`UpstreamFeatureSource` (a hidden layer of an
upstream model, long audio processed in chunks like fairseq's ``dump_hubert_feature.py``).

Resuming: frames are appended to a hidden partial file whose progress (rows and frames
written, fsync'ed) is recorded in a marker every few seconds; a rerun after a crash or
Ctrl-C truncates the partial file to the last marker and continues. Both the marker and the
shard's ``.json`` hold the fingerprint of the inputs (:mod:`speechssl.fingerprint`: the
feature source with every option, an upstream's weight digest, the manifest's sha256, the
rows): a rerun whose inputs differ (a model rewritten at the same path, an edited manifest)
neither resumes nor skips but starts the shard again, with a log line naming what changed. The final files appear
by rename, so a reader never sees a half-written shard; an existing shard (``overwrite``, or
one made from other inputs) stays in place until the new one is complete.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from speechssl.atomic import atomic_write_text
from speechssl.data.manifest import Manifest, validate_manifest
from speechssl.features import kaldi
from speechssl.features.cmvn import CmvnStats
from speechssl.features.framing import FrameOptions
from speechssl.fingerprint import file_sha256, model_sha256, same_inputs
from speechssl.log import progress_bar
from speechssl.safe_io import BadFileError, check_finite, load_npy
from speechssl.nn.frozen import model_device, run_frozen

__all__ = [
    "FeatureSource", "KaldiFeatureSource", "UpstreamFeatureSource", "KALDI_FEATURES",
    "shard_range", "shard_paths", "dump_features", "read_features", "ShardedFeatures",
    "feature_stats",
]

_log = logging.getLogger(__name__)

#: Kaldi feature kinds :class:`KaldiFeatureSource` knows, and their functions.
KALDI_FEATURES: dict[str, Callable[..., Any]] = {
    "fbank": kaldi.fbank, "mfcc": kaldi.mfcc, "mfcc39": kaldi.mfcc39, "spectrogram": kaldi.spectrogram,
}
_NPY_HEADER_BYTES = 128  # fixed-size header, rewritten in place with the final shape


@runtime_checkable
class FeatureSource(Protocol):
    """Anything that turns one waveform into frame features.

    Attributes:
        frame_rate_hz: output frames per second (100 for Kaldi features, 50 for HuBERT).
        dim: ``D``, the feature dimension.

    ``source(wav)`` takes a ``(S,)`` float32 waveform at 16 kHz and returns ``(T, D)``.
    Implementations may add ``describe() -> dict`` (recorded with the dump and used to decide
    whether an existing shard can be kept or resumed) and ``sample_rate``.
    """

    frame_rate_hz: float
    dim: int

    def __call__(self, wav: torch.Tensor) -> torch.Tensor: ...


class KaldiFeatureSource:
    """Kaldi features of one kind with fixed options.

    Args:
        kind: one of :data:`KALDI_FEATURES` (``fbank``, ``mfcc``, ``mfcc39``, ``spectrogram``).
        device: where to compute (features are returned on the CPU).
        **options: keyword options of that function (e.g. ``num_mel_bins=40``).
    """

    def __init__(self, kind: str = "fbank", device: str | torch.device = "cpu", **options: Any):
        if kind not in KALDI_FEATURES:
            raise ValueError(f"unknown feature {kind!r}; choose one of {', '.join(KALDI_FEATURES)}")
        self.kind = kind
        self.fn = KALDI_FEATURES[kind]
        self.device = torch.device(device)
        allowed = _keyword_defaults(self.fn)
        for key in options:
            if key not in allowed:
                raise ValueError(f"{kind} has no option {key!r}; options: {', '.join(sorted(allowed))}")
        self.options = dict(options)
        self.sample_rate = float(self.options.get("sample_rate", 16000))
        frame_keys = {f.name for f in dataclasses.fields(FrameOptions)}
        frame_opts = FrameOptions(**{k: v for k, v in self.options.items()
                                     if k in frame_keys and k not in ("dither",)})
        self.frame_rate_hz = frame_opts.frame_rate_hz
        #: the shortest waveform that gives a frame (shorter rows are refused up front)
        self.min_samples = frame_opts.frame_length if frame_opts.snip_edges else 1
        # one frame of silence tells the dimension and validates every option up front
        probe = torch.zeros(frame_opts.frame_length, device=self.device)
        self.dim = int(self.fn(probe, **self.options).shape[-1])

    def __call__(self, wav: torch.Tensor) -> torch.Tensor:
        """``(S,)`` waveform → ``(T, D)`` float32 features on the CPU."""
        return self.fn(wav.to(self.device), **self.options).float().cpu()

    def describe(self) -> dict[str, Any]:
        """The feature kind and every option (defaults included)."""
        options = _keyword_defaults(self.fn)
        options.update(self.options)
        options.pop("lengths", None)
        options.pop("generator", None)
        return {"feature": self.kind, "options": options, "dim": self.dim,
                "frame_rate_hz": self.frame_rate_hz}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"KaldiFeatureSource({self.kind!r}{', ' + opts if opts else ''})"


class UpstreamFeatureSource:
    """One hidden layer of an upstream model (the speechssl upstream contract).

    The model runs through :func:`speechssl.nn.frozen.run_frozen`. Long audio is cut into
    chunks of at most ``max_chunk`` samples (rounded down to a multiple of the model's
    ``downsample_rate`` so chunk boundaries fall on frame boundaries; a last piece shorter than
    two frames joins the previous chunk) and the chunks' features are concatenated, as
    fairseq's ``dump_hubert_feature.py`` does. The result
    equals the unchunked one when the model's receptive field is its stride; otherwise frames
    next to a chunk boundary see less context (and a chunk may give a frame less).

    Args:
        model: ``nn.Module`` with ``model(list of (S,)) -> {"hidden_states": [(B, T, D)...],
            "lengths": (B,)}``, ``downsample_rate`` and ``hidden_sizes``.
        layer: index into ``hidden_states`` (0 = the input to the first transformer layer,
            ``L`` = the output of layer ``L``; negative counts from the end).
        max_chunk: most samples per forward pass (fairseq default 1,600,000 = 100 s).
        amp_dtype: run the model under autocast with this dtype (e.g. ``torch.float16`` on
            GPU, ``torch.bfloat16`` on CPU); features are stored as float32 either way.
        name: how the model is recorded in the dump's description (its path or zoo name).
    """

    def __init__(self, model: torch.nn.Module, layer: int, max_chunk: int = 1_600_000,
                 amp_dtype: torch.dtype | None = None, name: str | None = None):
        for attr in ("downsample_rate", "hidden_sizes"):
            if not hasattr(model, attr):
                raise TypeError(f"{type(model).__name__} does not follow the upstream contract: "
                                f"it has no {attr!r} attribute")
        sizes = list(model.hidden_sizes)
        if not -len(sizes) <= layer < len(sizes):
            raise ValueError(f"layer {layer} does not exist: the model has {len(sizes)} hidden states "
                             f"(layers 0..{len(sizes) - 1})")
        self.model = model.eval()
        self.layer = layer
        self.downsample_rate = int(model.downsample_rate)
        if max_chunk < self.downsample_rate:
            raise ValueError(f"max_chunk={max_chunk} is shorter than one frame "
                             f"({self.downsample_rate} samples)")
        self.chunk = max_chunk // self.downsample_rate * self.downsample_rate
        self.amp_dtype = amp_dtype
        self.name = name or type(model).__name__
        self.dim = int(sizes[layer])
        self.frame_rate_hz = 16000.0 / self.downsample_rate
        self.sample_rate = 16000.0
        self.device = model_device(model)
        self.model_sha256 = model_sha256(model)  # the weights, not the path, decide a resume
        self._min_samples: int | None = None

    @property
    def min_samples(self) -> int:
        """The shortest waveform that gives the model one frame (found by bisection on silence)."""
        if self._min_samples is None:
            def frames(n: int) -> int:
                try:
                    hidden, _ = run_frozen(self.model, [torch.zeros(n)], layers=[self.layer], max_chunk=self.chunk)
                except (RuntimeError, ValueError):  # e.g. a conv kernel longer than the input
                    return 0
                return int(hidden[0].shape[1])

            lo, hi = 1, 2 * self.downsample_rate
            while frames(hi) < 1 and hi < 1 << 20:
                lo, hi = hi, hi * 2
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if frames(mid) >= 1 else (mid + 1, hi)
            self._min_samples = lo
        return self._min_samples

    def __call__(self, wav: torch.Tensor) -> torch.Tensor:
        """``(S,)`` waveform at 16 kHz → ``(T, D)`` float32 features on the CPU."""
        if wav.dim() != 1:
            raise ValueError(f"expected one waveform (S,), got shape {tuple(wav.shape)}")
        hidden, _ = run_frozen(self.model, [wav.to(torch.float32)], layers=[self.layer],
                               amp_dtype=self.amp_dtype, max_chunk=self.chunk)
        return hidden[0][0].float().cpu()

    def describe(self) -> dict[str, Any]:
        """Model name, method, weight digest, layer and chunking."""
        return {"feature": "upstream", "upstream": self.name, "method": getattr(self.model, "method", None),
                "model_sha256": self.model_sha256, "layer": self.layer, "max_chunk": self.chunk, "dim": self.dim,
                "frame_rate_hz": self.frame_rate_hz,
                "amp_dtype": str(self.amp_dtype) if self.amp_dtype is not None else None}


def _source_label(source: Any) -> str:
    """``"upstream /path/to/model (hubert, layer 6)"`` or ``"fbank"``, for messages."""
    if isinstance(source, UpstreamFeatureSource):
        method = getattr(source.model, "method", None)
        return f"upstream {source.name} ({method + ', ' if method else ''}layer {source.layer})"
    return str(getattr(source, "kind", None) or type(source).__name__)


def _keyword_defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    import inspect

    return {name: p.default for name, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}


def shard_range(num_rows: int, rank: int, nshard: int) -> tuple[int, int]:
    """Rows ``[start, end)`` of shard ``rank``: ``ceil(num_rows / nshard)`` rows per shard."""
    if nshard < 1 or not 0 <= rank < nshard:
        raise ValueError(f"need 0 <= shard < nshard, got shard {rank} of {nshard}")
    per = math.ceil(num_rows / nshard)
    return min(rank * per, num_rows), min((rank + 1) * per, num_rows)


def shard_paths(feat_dir: str | Path, split: str, rank: int, nshard: int) -> dict[str, Path]:
    """The ``npy``, ``len`` and ``json`` files of a shard."""
    stem = Path(feat_dir) / f"{split}_{rank}_{nshard}"
    return {"npy": stem.with_suffix(".npy"), "len": stem.with_suffix(".len"), "json": stem.with_suffix(".json")}


def _npy_header(rows: int, dim: int) -> bytes:
    """A version-1.0 ``.npy`` header for float32 ``(rows, dim)``, padded to a fixed size."""
    text = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (rows, dim)
    room = _NPY_HEADER_BYTES - 10
    if len(text) + 1 > room:
        raise ValueError(f"shape ({rows}, {dim}) does not fit the fixed .npy header")
    body = text.ljust(room - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + room.to_bytes(2, "little") + body.encode("latin1")


class _PartialShard:
    """The hidden files of a shard being written: data, lengths, progress marker."""

    def __init__(self, paths: dict[str, Path]):
        npy = paths["npy"]
        self.data = npy.with_name(f".{npy.name}.partial")
        self.lengths = npy.with_name(f".{paths['len'].name}.partial")
        self.marker = npy.with_name(f".{npy.stem}.progress.json")

    def remove(self) -> None:
        for p in (self.data, self.lengths, self.marker):
            p.unlink(missing_ok=True)

    def resume_point(self, fingerprint: dict[str, Any], dim: int) -> tuple[int, int]:
        """``(rows, frames)`` safely written by an earlier run with the same fingerprint, else (0, 0)."""
        try:
            marker = json.loads(self.marker.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return 0, 0
        if not same_inputs(marker.get("fingerprint"), fingerprint, f"the interrupted dump of {self.data}",
                           action="dropping its rows and starting the shard again"):
            return 0, 0
        if not self.data.exists() or not self.lengths.exists():
            return 0, 0
        rows, frames = int(marker["rows"]), int(marker["frames"])
        lengths = self.lengths.read_text(encoding="utf-8").split()
        need = _NPY_HEADER_BYTES + frames * dim * 4
        if len(lengths) < rows or sum(map(int, lengths[:rows])) != frames or self.data.stat().st_size < need:
            return 0, 0
        # drop whatever was written after the last marker
        with open(self.data, "r+b") as f:
            f.truncate(need)
        self.lengths.write_text("".join(f"{n}\n" for n in lengths[:rows]), encoding="utf-8")
        return rows, frames

    def mark(self, fingerprint: dict[str, Any], rows: int, frames: int, files: Sequence[Any]) -> None:
        for f in files:
            f.flush()
            os.fsync(f.fileno())
        atomic_write_text(self.marker, json.dumps({"fingerprint": fingerprint, "rows": rows, "frames": frames}))


def _recorded_fingerprint(meta_path: Path) -> Any:
    """The fingerprint in a finished shard's ``.json`` (None: no readable file)."""
    try:
        return json.loads(meta_path.read_text(encoding="utf-8")).get("fingerprint")
    except (FileNotFoundError, ValueError, AttributeError, OSError):
        return None


def _is_complete(paths: dict[str, Path], fingerprint: dict[str, Any]) -> bool:
    try:
        meta = json.loads(paths["json"].read_text(encoding="utf-8"))
        lengths = [int(x) for x in paths["len"].read_text(encoding="utf-8").split()]
        array = load_npy(paths["npy"])
    except (FileNotFoundError, ValueError, OSError):  # BadFileError included: redo the shard
        return False
    return (meta.get("fingerprint") == fingerprint and len(lengths) == meta.get("rows")
            and array.shape == (sum(lengths), fingerprint["dim"]))


def dump_features(manifest: str | Path | Manifest, feat_dir: str | Path, source: FeatureSource,
                  split: str | None = None, rank: int = 0, nshard: int = 1, *,
                  overwrite: bool = False, resample: bool = False, progress: bool = True,
                  checkpoint_interval_s: float = 30.0) -> dict[str, Path]:
    """Compute features for one shard of a manifest and write the fairseq layout.

    Args:
        manifest: a ``<split>.tsv`` path or a :class:`Manifest`.
        feat_dir: output directory.
        source: the feature extractor.
        split: name in the output files; defaults to the manifest file's stem.
        rank, nshard: which shard of the manifest's rows to do.
        overwrite: recompute even if a complete shard with the same fingerprint exists.
        resample: resample audio of another rate to 16 kHz instead of failing.
        progress: show a tqdm progress bar.
        checkpoint_interval_s: seconds between progress markers (0: after every utterance).

    Returns:
        The shard's paths (``npy``, ``len``, ``json``).

    Raises:
        ValueError: unreadable or bad audio (naming the manifest row and file), or a source
            returning features of the wrong shape.
    """
    # one validator, before any work: root line, duplicates, files, exact sample counts, and
    # rows too short for one frame of this source (they would become 0-frame rows)
    manifest = validate_manifest(manifest, min_samples=int(getattr(source, "min_samples", 0)),
                                 what="samples of the feature source's first frame")
    if split is None:
        if manifest.source is None:
            raise ValueError("split is required when the manifest was not read from a file")
        split = manifest.source.stem
    start, end = shard_range(len(manifest), rank, nshard)
    paths = shard_paths(feat_dir, split, rank, nshard)
    paths["npy"].parent.mkdir(parents=True, exist_ok=True)
    describe = getattr(source, "describe", None)
    fingerprint = {
        "source": describe() if callable(describe) else repr(source),
        "dim": int(source.dim),
        "manifest": str(manifest.source) if manifest.source else None,
        "manifest_sha256": file_sha256(manifest.source) if manifest.source else None,
        "rows": [start, end],
    }
    partial = _PartialShard(paths)
    recorded = _recorded_fingerprint(paths["json"])
    if not overwrite and recorded is not None:
        same_inputs(recorded, fingerprint, str(paths["npy"]), action="dumping it again")
    if not overwrite and _is_complete(paths, fingerprint):
        partial.remove()  # what an interrupted overwrite left: the finished shard is kept
        _log.info("%s is complete (%d utterances); skipping (use overwrite to redo it)", paths["npy"], end - start)
        return paths

    dim = int(source.dim)
    rows_done, frames_done = (0, 0) if overwrite else partial.resume_point(fingerprint, dim)
    if rows_done:
        _log.info("resuming %s after %d of %d utterances", paths["npy"], rows_done, end - start)
    else:
        partial.remove()
        with open(partial.data, "wb") as f:
            f.write(_npy_header(0, dim))
        partial.lengths.write_text("", encoding="utf-8")

    from speechssl import audio

    sample_rate = int(getattr(source, "sample_rate", 16000))
    bar = progress_bar(total=end - start, initial=rows_done, desc=f"{split} {rank}/{nshard}", unit="utt",
                       disable=not progress, dynamic_ncols=True)
    last_mark = time.monotonic()
    with open(partial.data, "ab") as data_f, open(partial.lengths, "a", encoding="utf-8") as len_f:
        for row in range(start + rows_done, end):
            path = manifest.audio_path(row)
            where = f"{manifest.source or 'manifest'}:{row + 2} (row {row}, {manifest.paths[row]})"
            try:
                wav = audio.load(path, sample_rate=sample_rate, resample=resample)
            except (OSError, ValueError) as exc:
                raise ValueError(f"{where}: cannot use this audio: {exc}") from None
            try:
                feats = source(wav)
            except (RuntimeError, ValueError) as exc:
                raise RuntimeError(f"{where}: feature extraction failed on {wav.shape[0]} samples: {exc}") from exc
            if feats.dim() != 2 or feats.shape[1] != dim or feats.shape[0] == 0:
                raise ValueError(f"{where}: the feature source returned shape {tuple(feats.shape)}, "
                                 f"expected (T, {dim})")
            array = np.ascontiguousarray(feats.detach().cpu().numpy(), dtype="<f4")
            # NaN/inf never reach a shard: a NaN-weight model (or a diverged one) is refused here,
            # naming the model and the utterance; the finished rows stay resumable
            check_finite(array, f"{where}: {_source_label(source)} gave non-finite features",
                         what="frame")
            data_f.write(array.tobytes())
            len_f.write(f"{array.shape[0]}\n")
            rows_done += 1
            frames_done += array.shape[0]
            bar.update(1)
            if time.monotonic() - last_mark >= checkpoint_interval_s:
                partial.mark(fingerprint, rows_done, frames_done, (data_f, len_f))
                last_mark = time.monotonic()
        partial.mark(fingerprint, rows_done, frames_done, (data_f, len_f))
    bar.close()

    with open(partial.data, "r+b") as f:  # the real shape goes into the reserved header
        f.write(_npy_header(frames_done, dim))
        f.flush()
        os.fsync(f.fileno())
    # Only now is an older shard (overwrite, or another fingerprint) replaced: its .json goes
    # first, so no reader takes the new .npy with the old .json; a crash from here on leaves an
    # incomplete shard that the next run recomputes, never a mix of the two.
    paths["json"].unlink(missing_ok=True)
    os.replace(partial.data, paths["npy"])
    os.replace(partial.lengths, paths["len"])
    meta = {"fingerprint": fingerprint, "rows": end - start, "frames": frames_done,
            "split": split, "rank": rank, "nshard": nshard}
    atomic_write_text(paths["json"], json.dumps(meta, indent=1) + "\n")
    partial.marker.unlink(missing_ok=True)
    _log.info("wrote %s: %d utterances, %d frames of dim %d", paths["npy"], end - start, frames_done, dim)
    return paths


class ShardedFeatures:
    """Row-wise concatenation of per-shard memory maps, indexable like an ``(N, D)`` array.

    Supports ``len``, ``shape``, ``dtype``, ``x[i]``, ``x[a:b]``, ``x[int_array]`` (and a
    second column index), and ``np.asarray(x)`` (which reads everything into memory).
    """

    def __init__(self, parts: Sequence[np.ndarray]):
        if not parts:
            raise ValueError("no shards to concatenate")
        dims = {p.shape[1] for p in parts}
        if len(dims) != 1:
            raise ValueError(f"shards have different feature dimensions: {sorted(dims)}")
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [p.shape[0] for p in parts])
        self.shape = (int(self.starts[-1]), dims.pop())
        self.dtype = parts[0].dtype
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((rows.shape[0], self.shape[1]), dtype=self.dtype)
        shard = np.searchsorted(self.starts, rows, side="right") - 1
        for s in np.unique(shard):
            sel = shard == s
            out[sel] = self.parts[s][rows[sel] - self.starts[s]]
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        cols = slice(None)
        if isinstance(key, tuple):
            key, cols = key
        n = self.shape[0]
        if isinstance(key, (int, np.integer)):
            i = int(key) + n if key < 0 else int(key)
            if not 0 <= i < n:
                raise IndexError(f"row {key} out of range for {n} frames")
            return self._rows(np.array([i]))[0][cols]
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                # contiguous: copy whole slices of each shard it touches
                pieces = []
                for s, part in enumerate(self.parts):
                    lo, hi = max(start, self.starts[s]), min(stop, self.starts[s + 1])
                    if lo < hi:
                        pieces.append(part[lo - self.starts[s]: hi - self.starts[s]])
                out = np.concatenate(pieces) if pieces else np.empty((0, self.shape[1]), self.dtype)
                return out[:, cols]
            key = np.arange(start, stop, step)
        rows = np.asarray(key)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        rows = np.where(rows < 0, rows + n, rows).astype(np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise IndexError(f"row index out of range for {n} frames")
        return self._rows(rows.reshape(-1)).reshape(*rows.shape, self.shape[1])[..., cols]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.concatenate([np.asarray(p) for p in self.parts])
        return out.astype(dtype) if dtype is not None else out


def read_features(feat_dir: str | Path, split: str, nshard: int = 1, rank: int | None = None
                  ) -> tuple[np.ndarray | ShardedFeatures, list[int], list[int]]:
    """Open dumped features without reading them into memory.

    Args:
        feat_dir: the dump directory.
        split: split name of the files.
        nshard: number of shards the dump was made with.
        rank: one shard only; None: all shards, concatenated in manifest order.

    Returns:
        feats: ``(N, D)`` float32: a read-only ``np.memmap`` for one shard, a
            :class:`ShardedFeatures` over several.
        lengths: frames of each utterance.
        offsets: first frame of each utterance in ``feats`` (utterance ``i`` is
            ``feats[offsets[i]: offsets[i] + lengths[i]]``).

    Raises:
        FileNotFoundError: a shard is missing (the message says how to make it).
        ValueError: a shard's ``.len`` does not add up to its ``.npy`` rows.
    """
    if nshard < 1:
        raise ValueError(f"nshard must be at least 1, got {nshard}")
    ranks = range(nshard) if rank is None else [rank]
    parts, lengths = [], []
    for r in ranks:
        paths = shard_paths(feat_dir, split, r, nshard)
        for kind in ("npy", "len"):
            if not paths[kind].exists():
                raise FileNotFoundError(
                    f"{paths[kind]} not found: shard {r} of {nshard} of split {split!r} was not dumped "
                    f"(or is unfinished); run `speechssl features dump --split {split} --shard {r} "
                    f"--nshard {nshard} --out {feat_dir} ...`")
        array = load_npy(paths["npy"], ndim=2, expected="a feature shard written by `speechssl features dump`")
        lens = _read_lengths(paths["len"])
        if array.shape[0] != sum(lens):
            raise ValueError(f"{paths['len']} lists {len(lens)} utterances with {sum(lens)} frames, but "
                             f"{paths['npy']} has shape {array.shape}; the shard is damaged, dump it again")
        parts.append(array)
        lengths.extend(lens)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64).tolist() if lengths else []
    feats = parts[0] if len(parts) == 1 else ShardedFeatures(parts)
    return feats, lengths, offsets


def _read_lengths(path: Path) -> list[int]:
    """A shard's ``.len``: one positive frame count per line (file and line named otherwise)."""
    lengths = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            n = int(line)
        except ValueError:
            raise BadFileError(f"{path}:{lineno}: expected a frame count (an integer), found {line[:40]!r}") from None
        if n <= 0:
            raise BadFileError(f"{path}:{lineno}: expected a positive frame count, found {n}")
        lengths.append(n)
    return lengths


def feature_stats(feat_dir: str | Path, split: str, nshard: int = 1, chunk_frames: int = 1 << 16) -> CmvnStats:
    """Global CMVN statistics of dumped features (all shards).

    Raises:
        NonFiniteError: a frame holds NaN or infinity (naming the shard file, the frame and
            its utterance: the shard's row and the manifest row); the statistics would be NaN.
    """
    _, _, _ = read_features(feat_dir, split, nshard)  # every shard present and consistent first
    stats: CmvnStats | None = None
    for r in range(nshard):
        feats, lengths, offsets = read_features(feat_dir, split, nshard, rank=r)
        paths = shard_paths(feat_dir, split, r, nshard)
        first_row = _first_manifest_row(paths["json"])
        if stats is None:
            stats = CmvnStats(feats.shape[1])
        for start in range(0, feats.shape[0], chunk_frames):
            chunk = np.array(feats[start:start + chunk_frames], dtype=np.float32)  # a writable copy

            def utterance(i: int, start: int = start) -> str:
                row = int(np.searchsorted(offsets, start + i, side="right")) - 1
                manifest_row = f", manifest row {first_row + row}" if first_row is not None else ""
                return f"frame {start + i - offsets[row]} of utterance {row} of the shard{manifest_row}"

            check_finite(chunk, f"{paths['npy']}", row_names=utterance, what="frame", offset=start)
            stats.accumulate(torch.from_numpy(chunk))
    return stats  # type: ignore[return-value]  # nshard >= 1: set by the first shard


def _first_manifest_row(meta_path: Path) -> int | None:
    """The manifest row of a shard's first utterance, from its ``.json`` (None: unknown)."""
    try:
        rows = json.loads(meta_path.read_text(encoding="utf-8"))["fingerprint"]["rows"]
        return int(rows[0])
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
