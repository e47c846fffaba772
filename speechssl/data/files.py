"""Manifests of image, video and point-set files, and the dataset base class over them.

The format is the audio manifest's (:func:`~speechssl.data.manifest.read_manifest`): the
first line is the root directory, then one ``relative/path<TAB>size`` line per item, where
``size`` is the item's natural size in its kind's unit:

=========  ==========================================  =====================================
kind       file                                        size column
=========  ==========================================  =====================================
image      PNG/JPEG (anything Pillow reads)            pixels, ``height * width``
video      ``.npy`` ``(T, H, W, C)`` uint8, C = 1 or 3,  frames ``T``
           or a directory of PNG/JPEG frames (sorted)
points     ``.npy`` ``(N, 3)`` float                    points ``N``
=========  ==========================================  =====================================

:func:`write_file_manifest` probes the files and writes the sizes. Label files beside the
manifest (``utterance`` or ``sequence`` kind, one line per row) travel with the items, as for
audio. With ``check_files`` (the default) a dataset probes every file before training starts,
so a missing file or a wrong shape fails at once with ``<manifest>:<line>: <file>: ...``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Sequence

import numpy as np
import torch

from speechssl.data.base import SizedDataset, check_seed, item_generator
from speechssl.data.labels import LabelFile, LabelSpec, check_label_keys
from speechssl.data.manifest import FormatError, Manifest, read_manifest, write_manifest

__all__ = ["FileKind", "IMAGE_SUFFIXES", "probe_image", "probe_video", "probe_points", "probe",
           "frame_files", "read_image", "write_file_manifest", "FileDataset"]

_log = logging.getLogger(__name__)

FileKind = Literal["image", "video", "points"]

#: File name endings read as images (case-insensitive), also for directories of video frames.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a ``.npy`` file (header checked against the file's size: a truncated
    or non-.npy file is refused in one line, speechssl.safe_io.load_npy)."""
    from speechssl.safe_io import load_npy

    try:
        arr = load_npy(path)
    except FileNotFoundError:
        raise
    except ValueError as exc:
        raise FormatError(str(exc).removeprefix(f"{path}: ")) from None
    return tuple(int(n) for n in arr.shape), np.dtype(arr.dtype)


def probe_image(path: Path) -> int:
    """Pixels (``height * width``) of an image file, from its header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            width, height = im.size
    except UnidentifiedImageError:
        raise FormatError("not an image Pillow can read") from None
    return int(width) * int(height)


def frame_files(directory: Path) -> list[Path]:
    """The frame images of a video directory, sorted by name."""
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def probe_video(path: Path) -> int:
    """Frames of a ``.npy`` ``(T, H, W, C)`` uint8 clip or of a directory of frame images."""
    if path.is_dir():
        frames = frame_files(path)
        if not frames:
            raise FormatError(f"a video directory needs frame images ({', '.join(IMAGE_SUFFIXES)}), found none")
        return len(frames)
    if path.suffix.lower() != ".npy":
        raise FormatError("a video is a .npy file (T, H, W, C) uint8 or a directory of frames")
    shape, dtype = _npy_header(path)
    if len(shape) != 4 or shape[3] not in (1, 3) or dtype != np.uint8 or min(shape) <= 0:
        raise FormatError(f"expected a (T, H, W, C) uint8 array with C = 1 or 3, got {shape} {dtype}")
    return shape[0]


def probe_points(path: Path) -> int:
    """Points of a ``.npy`` ``(N, 3)`` float array."""
    if path.suffix.lower() != ".npy":
        raise FormatError("a point set is a .npy file (N, 3) float")
    shape, dtype = _npy_header(path)
    if len(shape) != 2 or shape[1] != 3 or dtype.kind != "f" or shape[0] <= 0:
        raise FormatError(f"expected an (N, 3) float array with N > 0, got {shape} {dtype}")
    return shape[0]


def read_image(path: Path, channels: int = 3) -> torch.Tensor:
    """An image file as ``(C, H, W)`` float32 in ``[0, 1]`` (``channels``: 3 = RGB, 1 = grey)."""
    from PIL import Image, UnidentifiedImageError

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB" if channels == 3 else "L"), dtype=np.uint8)
    except UnidentifiedImageError:
        raise FormatError(f"{path}: not an image Pillow can read") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)  # (C, H, W)


_PROBES: dict[str, Callable[[Path], int]] = {"image": probe_image, "video": probe_video, "points": probe_points}


def probe(kind: FileKind, path: str | Path) -> int:
    """Size of ``path`` in ``kind``'s unit (see the module docstring); FormatError if it is not one."""
    if kind not in _PROBES:
        raise ValueError(f"kind must be one of {sorted(_PROBES)}, got {kind!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{kind} file not found: {path}")
    try:
        return _PROBES[kind](path)
    except FormatError as exc:
        raise FormatError(f"{path}: {exc}") from None


def write_file_manifest(path: str | Path, root: str | Path, files: Iterable[str], kind: FileKind) -> None:
    """Probe ``files`` (relative to ``root``) and write their manifest atomically."""
    root = Path(root)
    write_manifest(path, root, [(rel, probe(kind, root / rel)) for rel in files])


class FileDataset(SizedDataset):
    """Base of the datasets over a manifest of files (images, video clips, point sets).

    Subclasses set :attr:`kind` and :attr:`reserved` (their own item keys) and implement
    ``__getitem__`` with :meth:`generator` (the item's seeded generator), :meth:`path` and
    :meth:`item_base` (``id``, ``index`` and the labels).

    Args:
        manifest: a ``Manifest`` or the path of a ``<split>.tsv`` (format: module docstring).
        labels: ``utterance`` or ``sequence`` label files, one line per manifest row.
        seed: base seed of the item generators.
        check_files: probe every file now (shape, dtype and size against the manifest); off,
            a bad file fails when its item is loaded, with the same message.

    Attributes:
        sizes: 1 per item (the items have a fixed size, so ``max_tokens`` counts items per batch).
    """

    kind: FileKind = "image"
    reserved: frozenset[str] = frozenset({"id", "index"})

    def __init__(self, manifest: Manifest | str | Path, labels: Sequence[LabelSpec] = (), *, seed: int = 0,
                 check_files: bool = True) -> None:
        self.manifest = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
        self.seed = check_seed(seed)
        self.epoch = 1
        src = self.manifest.source or "manifest"
        if len(self.manifest) == 0:
            raise ValueError(f"{src}: the manifest lists no {self.kind} files")
        for spec in labels:
            if spec.kind == "frame":
                raise ValueError(f"{spec.path}: frame labels go with audio only; use 'utterance' or 'sequence'")
        self.labels = [LabelFile(spec, self.manifest, sample_rate=1) for spec in labels]
        check_label_keys([lab.key for lab in self.labels], self.reserved)
        self._ids = self.manifest.ids()
        self.sizes = np.ones(len(self.manifest), dtype=np.int64)
        if check_files:
            for row in range(len(self.manifest)):
                self.check(row)
        _log.info("%s: %d %s items (files checked: %s)", src, len(self.manifest), self.kind, check_files)

    def __len__(self) -> int:
        return len(self.manifest)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (1-based) whose random augmentations to draw."""
        self.epoch = int(epoch)

    def where(self, row: int) -> str:
        """``<manifest>:<line>`` of ``row`` (0-based; line 1 is the root)."""
        return f"{self.manifest.source or 'manifest'}:{row + 2}"

    def path(self, row: int) -> Path:
        """Absolute path of the file of ``row``."""
        return self.manifest.audio_path(row)

    def fail(self, row: int, message: str) -> FormatError:
        """A FormatError ``<manifest>:<line>: <file>: message``."""
        return FormatError(f"{self.where(row)}: {self.path(row)}: {message}")

    def check(self, row: int) -> None:
        """Probe the file of ``row``; raise naming the manifest line if it is missing or malformed."""
        path = self.path(row)
        if not path.exists():
            raise FileNotFoundError(f"{self.where(row)}: {self.kind} file not found: {path}")
        try:
            size = _PROBES[self.kind](path)
        except FormatError as exc:
            raise self.fail(row, str(exc)) from None
        if size != self.manifest.sizes[row]:
            raise self.fail(row, f"has size {size} but the manifest says {self.manifest.sizes[row]} "
                                 f"({_UNITS[self.kind]}); rebuild it with write_file_manifest")

    def generator(self, index: int) -> torch.Generator:
        """The ``torch.Generator`` of item ``index`` in the current epoch."""
        return item_generator(self.seed, self.epoch, index)

    @property
    def label_kinds(self) -> dict[str, str]:
        """Kind of each label, by key."""
        return {lab.key: lab.spec.kind for lab in self.labels}

    def item_base(self, index: int) -> dict[str, Any]:
        """``{"id": str, "index": int, <label key>: int | Tensor (T,), ...}`` of item ``index``."""
        item: dict[str, Any] = {"id": self._ids[index], "index": int(index)}
        for lab in self.labels:
            item[lab.key] = lab.get(index)
        return item


_UNITS = {"image": "pixels, height * width", "video": "frames", "points": "points"}
