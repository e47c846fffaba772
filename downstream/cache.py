"""Feature cache: a frozen upstream runs once per split; every epoch after reads memory maps.

Layout of one cached split (a directory, created under a temporary name beside it, with
:func:`speechssl.atomic.temp_dir_beside`, and renamed into place when complete, so a reader
never sees a partial cache and a killed build's staging directory is removed by the next)::

    <root>/<upstream-name>-<hash12>/<split>-<key16>/
        meta.json        format version, upstream identity, split identity, layers, dtype
        index.npy        (N, 2) int64: start frame and number of frames of each utterance,
                         in manifest order
        layer_<l>.npy    (N_frames, D_l) float16/float32, all utterances' frames concatenated

``<key16>`` is the cache's fingerprint: it hashes the upstream's weight digest
(:func:`speechssl.fingerprint.model_sha256`), the manifest's root and rows, the layer
selection, dtype and cache format version, so a changed upstream (even at the same path),
manifest, layer choice or format never reads stale features: it builds another cache. A cache holding all layers also serves any single-layer request.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Literal, Sequence

import numpy as np
import torch

from speechssl.atomic import atomic_write_text, temp_dir_beside
from speechssl.data.manifest import Manifest
from speechssl.downstream.upstreams import LoadedUpstream
from speechssl.log import progress_bar
from speechssl.nn.frozen import run_frozen
from speechssl.safe_io import check_finite, load_npy

__all__ = ["CACHE_FORMAT_VERSION", "CachedSplit", "FeatureCache", "compute_hidden_states"]

CACHE_FORMAT_VERSION = 1

_log = logging.getLogger(__name__)


class CachedSplit:
    """Read side of a cached split: ``split[i]`` is a list of ``(T_i, D_l)`` float32 tensors.

    Attributes:
        directory: the cache directory.
        layers: upstream layer indices held, in order.
        lengths: ``(N,)`` frames per utterance (manifest order).
    """

    def __init__(self, directory: str | Path, layers: Sequence[int] | None = None) -> None:
        self.directory = Path(directory)
        meta = json.loads((self.directory / "meta.json").read_text())
        if meta.get("format_version") != CACHE_FORMAT_VERSION:
            raise ValueError(f"{self.directory}: cache format {meta.get('format_version')}, "
                             f"expected {CACHE_FORMAT_VERSION}; delete the directory to rebuild it")
        self.meta = meta
        held = list(meta["layers"])
        wanted = held if layers is None else list(layers)
        missing = [l for l in wanted if l not in held]
        if missing:
            raise ValueError(f"{self.directory}: layers {missing} not cached (holds {held})")
        self.layers = wanted
        # a damaged cache (a truncated layer file) is named, with the fix, in one line
        hint = "a feature cache file (delete the cache directory to rebuild it)"
        index = load_npy(self.directory / "index.npy", mmap_mode=None, ndim=2, expected=hint)
        self.starts, self.lengths = index[:, 0], index[:, 1]
        self._arrays = [load_npy(self.directory / f"layer_{l:02d}.npy", ndim=2, expected=hint) for l in wanted]

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def hidden_sizes(self) -> list[int]:
        return [int(a.shape[1]) for a in self._arrays]

    def moments(self, chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of every dimension over all frames: two ``(L, D)``
        tensors (layers of one size), accumulated in float64 chunk by chunk."""
        means, stds = [], []
        for a in self._arrays:
            total = np.zeros(a.shape[1]), np.zeros(a.shape[1])
            for s in range(0, a.shape[0], chunk):
                x = np.asarray(a[s:s + chunk], dtype=np.float64)
                total = total[0] + x.sum(0), total[1] + (x * x).sum(0)
            n = max(a.shape[0], 1)
            mean = total[0] / n
            means.append(mean)
            stds.append(np.sqrt(np.maximum(total[1] / n - mean * mean, 0.0)))
        return torch.from_numpy(np.stack(means)).float(), torch.from_numpy(np.stack(stds)).float()

    def __getitem__(self, i: int) -> list[torch.Tensor]:
        s, n = int(self.starts[i]), int(self.lengths[i])
        return [torch.from_numpy(np.array(a[s:s + n], dtype=np.float32)) for a in self._arrays]


@dataclass
class FeatureCache:
    """Computes and finds cached upstream features.

    Args:
        root: directory holding all caches (shared between runs: the key makes reuse safe).
        dtype: ``"float16"`` halves the disk and page-cache footprint; features are read back
            as float32.
        max_samples: upstream batch budget while caching, in audio samples (padded).
        device: where the upstream runs while caching.
    """

    root: Path
    dtype: Literal["float16", "float32"] = "float32"
    max_samples: int = 16000 * 120
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if self.dtype not in ("float16", "float32"):
            raise ValueError(f"cache dtype must be float16 or float32, got {self.dtype!r}")

    def directory(self, upstream: LoadedUpstream, split: str, manifest: Manifest,
                  layers: Sequence[int] | None) -> Path:
        """Where the cache of this (upstream, split, layer selection) lives."""
        return self._upstream_dir(upstream) / f"{_safe(split)}-{self._key(upstream, manifest, layers)}"

    def get(self, upstream: LoadedUpstream, split: str, manifest: Manifest,
            layers: Sequence[int] | None = None,
            load_audio: Callable[[int], torch.Tensor] | None = None,
            compute: Callable[[list[int]], Iterable[tuple[list[int], list[torch.Tensor], torch.Tensor]]] | None = None
            ) -> CachedSplit:
        """The cached features of ``split``, computing them first if needed.

        Args:
            upstream: the frozen upstream.
            split: split name (only for the directory name and logs).
            manifest: the split's audio (or images: its rows and sizes key the cache).
            layers: upstream hidden-state indices to keep; None = all.
            load_audio: ``i -> (S,) float32`` waveform of manifest row ``i``; default reads
                the manifest's file with :func:`speechssl.audio.load`.
            compute: for non-audio upstreams, ``layers -> iterable of (rows, states, lengths)``
                as :func:`compute_hidden_states` yields (e.g.
                :func:`speechssl.downstream.image_features.image_hidden_states`); None: that
                function over the audio.
        """
        layers = _normalise_layers(layers, upstream.num_layers)
        for candidate in ([layers, None] if layers is not None else [None]):
            directory = self.directory(upstream, split, manifest, candidate)
            if (directory / "meta.json").exists():
                _log.info("feature cache hit: %s", directory)
                return CachedSplit(directory, layers)
        directory = self.directory(upstream, split, manifest, layers)
        self._build(upstream, split, manifest, layers, directory, load_audio, compute)
        return CachedSplit(directory, layers)

    # --- internals ---

    def _upstream_dir(self, upstream: LoadedUpstream) -> Path:
        return self.root / f"{_safe(upstream.name)[-48:]}-{upstream.hash[:12]}"

    def _key(self, upstream: LoadedUpstream, manifest: Manifest, layers: Sequence[int] | None) -> str:
        h = hashlib.sha256()
        for p, s in zip(manifest.paths, manifest.sizes):
            h.update(f"{p}\t{s}\n".encode())
        key = {"format": CACHE_FORMAT_VERSION, "upstream": upstream.hash, "root": str(manifest.root),
               "manifest": h.hexdigest(), "layers": None if layers is None else list(layers),
               "dtype": self.dtype}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    def _build(self, upstream: LoadedUpstream, split: str, manifest: Manifest,
               layers: list[int] | None, directory: Path,
               load_audio: Callable[[int], torch.Tensor] | None, compute: Callable | None = None) -> None:
        keep = list(range(upstream.num_layers)) if layers is None else layers
        # beside its target, named after this process: a killed build's staging dir is removed by
        # the next build of the same cache; mkdir's mode under the umask, not mkdtemp's 0700
        tmp = temp_dir_beside(directory)
        np_dtype = np.dtype(self.dtype).newbyteorder("<")
        files: list = []
        try:
            for l in keep:  # header now; the final shape is written over it at the end
                files.append(open(tmp / f"layer_{l:02d}.npy", "wb"))
                _write_header(files[-1], np_dtype, 0, upstream.hidden_sizes[l])
            header_lens = [f.tell() for f in files]
            index = np.zeros((len(manifest), 2), dtype=np.int64)
            written = 0
            bar = progress_bar(total=len(manifest), desc=f"caching {split} ({upstream.name})", unit="utt",
                               disable=None, leave=False)
            batches = compute(keep) if compute is not None else compute_hidden_states(
                upstream, manifest, keep, max_samples=self.max_samples, device=self.device, load_audio=load_audio)
            for rows, states, lengths in batches:
                for b, i in enumerate(rows):
                    n = int(lengths[b])
                    index[i] = (written, n)
                    for f, h, l in zip(files, states, keep):
                        array = h[b, :n].to("cpu", _TORCH[self.dtype]).contiguous().numpy()
                        # NaN/inf never enter a cache: named by upstream, layer and utterance
                        # (a NaN-weight model, or float16 overflow of large activations)
                        check_finite(array, f"{manifest.source or 'manifest'}:{i + 2} ({manifest.paths[i]}): "
                                            f"upstream {upstream.name} layer {l} gave non-finite {self.dtype} "
                                            "hidden states", what="frame")
                        f.write(array.tobytes())
                    written += n
                bar.update(len(rows))
            bar.close()
            for f, l, n in zip(files, keep, header_lens):
                f.seek(0)
                _write_header(f, np_dtype, written, upstream.hidden_sizes[l])
                if f.tell() != n:  # numpy pads headers so that the row count can grow in place
                    raise RuntimeError(f"npy header changed length ({n} -> {f.tell()} bytes)")
                f.flush()
                os.fsync(f.fileno())
                f.close()
            np.save(tmp / "index.npy", index)
            meta = {"format_version": CACHE_FORMAT_VERSION, "upstream": upstream.describe(),
                    "split": split, "manifest": str(manifest.source) if manifest.source else None,
                    "num_utterances": len(manifest), "num_frames": written, "layers": keep,
                    "dtype": self.dtype}
            atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=1))
            try:
                os.rename(tmp, directory)
            except OSError:  # another process finished the same cache first; theirs is equal
                if not (directory / "meta.json").exists():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
            _log.info("cached %d utterances, %d frames, %d layer(s) of %s in %s",
                      len(manifest), written, len(keep), split, directory)
        except BaseException:
            for f in files:
                f.close()
            shutil.rmtree(tmp, ignore_errors=True)
            raise


_TORCH = {"float16": torch.float16, "float32": torch.float32}


def compute_hidden_states(upstream: LoadedUpstream, manifest: Manifest, layers: Sequence[int], *,
                          max_samples: int, device: str = "cpu",
                          load_audio: Callable[[int], torch.Tensor] | None = None):
    """Run the frozen upstream over a manifest in length-sorted batches.

    Batches hold at most ``max_samples`` padded samples, longest first (so an out-of-memory
    error comes early); each runs through :func:`speechssl.nn.frozen.run_frozen` (no
    gradients, eval mode, the model moved to ``device`` if needed).

    Yields:
        ``(rows, states, lengths)``: manifest row indices of the batch, one ``(B, T, D_l)``
        tensor per requested layer, and ``(B,)`` valid frames.
    """
    if load_audio is None:
        load_audio = _manifest_loader(manifest)
    order = np.argsort(np.asarray(manifest.sizes), kind="stable")[::-1]   # longest first: OOM early
    batches, current, longest = [], [], 0
    for i in order:
        size = int(manifest.sizes[i])
        if current and (len(current) + 1) * max(longest, size) > max_samples:
            batches.append(current)
            current, longest = [], 0
        current.append(int(i))
        longest = max(longest, size)
    if current:
        batches.append(current)
    for rows in batches:
        states, lengths = run_frozen(upstream.model, [load_audio(i) for i in rows], layers=layers, device=device)
        yield rows, states, lengths.cpu()


def _manifest_loader(manifest: Manifest) -> Callable[[int], torch.Tensor]:
    from speechssl import audio

    def load(i: int) -> torch.Tensor:
        return audio.load(manifest.audio_path(i))
    return load


def _normalise_layers(layers: Sequence[int] | None, num_layers: int) -> list[int] | None:
    if layers is None:
        return None
    out = []
    for l in layers:
        if not -num_layers <= l < num_layers:
            raise ValueError(f"layer {l} out of range: the upstream has {num_layers} hidden states "
                             f"(0..{num_layers - 1})")
        out.append(l % num_layers)
    if out == list(range(num_layers)):
        return None
    return out


def _write_header(f, dtype: np.dtype, rows: int, dim: int) -> None:
    np.lib.format.write_array_header_1_0(
        f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (rows, dim)})


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@-]+", "_", name).strip("_") or "upstream"
