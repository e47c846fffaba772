"""The on-disk data formats shared by every stage (fairseq-compatible).

- Manifest ``<split>.tsv``: first line the root directory, then ``relative/path.wav<TAB>num_samples``.
  Image, video and point-set manifests use the same format with the size in their own unit
  (pixels, frames, points; see :mod:`speechssl.data.files`).
- Label file ``<split>.<label>``: one line per manifest row (``.km`` unit ids, ``.ltr``, ``.wrd``,
  ``.phn``, ``.spk``, ``.kw``, ``.intent``, ``.topic``, ``.phn_ali``, ...).
- Dictionary ``dict.<label>.txt``: ``symbol count`` per line, index = line number.

Readers validate as they go: every error names the file, the line and what was expected.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from speechssl.atomic import atomic_open

__all__ = [
    "FormatError", "Manifest", "read_manifest", "write_manifest", "read_labels", "write_labels",
    "Dictionary", "read_dict", "write_dict", "build_dict", "check_label_frames", "validate_manifest",
    "AUDIO_SUFFIXES",
]

#: file suffixes whose sample count :func:`validate_manifest` reads from the header
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif")


class FormatError(ValueError):
    """A data file does not follow its format; the message names file and line."""


@dataclass
class Manifest:
    """A manifest: files (relative to ``root``) and their sizes (audio: lengths in samples).

    Attributes:
        root: directory the relative paths are resolved against.
        paths: relative paths, one per utterance (or image, video, point set).
        sizes: number of samples of each file (at 16 kHz); for the other kinds, the size in
            their unit (:mod:`speechssl.data.files`).
        source: the file it was read from, if any (used in error messages).
    """

    root: Path
    paths: list[str]
    sizes: list[int]
    source: Path | None = field(default=None, compare=False)

    def __len__(self) -> int:
        return len(self.paths)

    def audio_path(self, index: int) -> Path:
        """Absolute path of utterance (or file) ``index``."""
        return self.root / self.paths[index]

    def ids(self) -> list[str]:
        """Utterance ids: the relative path without its extension."""
        return [p.rsplit(".", 1)[0] for p in self.paths]


def read_manifest(path: str | Path) -> Manifest:
    """Read a ``<split>.tsv`` manifest.

    Raises:
        FormatError: empty file, or a row that is not ``relative/path<TAB>num_samples``
            with a positive integer count (message gives file and line number).
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"manifest not found: {path}") from None
    if not lines or not lines[0].strip():
        raise FormatError(f"{path}:1: expected the root directory on the first line, got an empty line")
    first = lines[0].split("\t")
    if len(first) == 2 and first[1].strip().isdigit():
        raise FormatError(f"{path}:1: expected the root directory on the first line, found a row "
                          f"{lines[0]!r}; the root line is missing (write the audio root, then one "
                          "'relative/path<TAB>num_samples' row per line)")
    root = Path(lines[0].strip())
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    paths, sizes = [], []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            raise FormatError(f"{path}:{lineno}: empty line; expected 'relative/path<TAB>num_samples'")
        parts = line.split("\t")
        if len(parts) != 2:
            raise FormatError(
                f"{path}:{lineno}: expected 2 tab-separated fields 'relative/path<TAB>num_samples', "
                f"got {len(parts)}: {line!r}")
        rel, n = parts
        try:
            size = int(n)
        except ValueError:
            raise FormatError(f"{path}:{lineno}: num_samples must be an integer, got {n!r}") from None
        if size <= 0:
            raise FormatError(f"{path}:{lineno}: num_samples must be positive, got {size}")
        if rel in seen:
            raise FormatError(f"{path}:{lineno}: duplicate row {rel!r} (first on line {seen[rel]}); "
                              "each file may appear once")
        seen[rel] = lineno
        paths.append(rel)
        sizes.append(size)
    return Manifest(root=root, paths=paths, sizes=sizes, source=path)


def validate_manifest(manifest: str | Path | Manifest, *, check_files: bool = True, min_samples: int = 0,
                      sample_rate: int = 16000, what: str = "") -> Manifest:
    """The one up-front check of a manifest, run by every verb before any work.

    :func:`read_manifest` already refuses a missing root line, malformed and duplicate rows.
    This adds, row by row, with the manifest's file and line in every message:

    - ``check_files``: the file exists; for audio (:data:`AUDIO_SUFFIXES`) its header's sample
      count equals the row's ``num_samples`` — the one rule everywhere: exactly, counted at
      the file's own rate or at ``sample_rate`` after resampling;
    - ``min_samples``: no row is shorter than the consumer's first frame (a shorter row would
      give an empty, 0-frame item).

    Args:
        manifest: a path or a read manifest.
        what: who needs the minimum, for the message (``"the upstream's first frame"``).

    Returns:
        the manifest.

    Raises:
        FormatError: naming ``<manifest>:<line>``, the file, what was found and what was expected.
        FileNotFoundError: the manifest itself is missing.
    """
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest)
    src = manifest.source or "manifest"
    short = [i for i, n in enumerate(manifest.sizes) if n < min_samples]
    if short:
        i = short[0]
        raise FormatError(f"{src}:{i + 2} (row {i}, {manifest.paths[i]}): {manifest.sizes[i]} samples, fewer than the "
                          f"{min_samples} {what or 'needed for one frame'} ({len(short)} such rows); remove "
                          "them from the manifest")
    if not check_files:
        return manifest
    from speechssl import audio

    for i, rel in enumerate(manifest.paths):
        where = f"{src}:{i + 2} (row {i}, {rel})"
        path = manifest.root / rel
        if not path.is_file():
            hint = (f" (the root line says {manifest.root}; is it right?)" if i == 0 or not manifest.root.is_dir()
                    else "")
            raise FormatError(f"{where}: {path} not found{hint}")
        if path.suffix.lower() not in AUDIO_SUFFIXES:
            continue
        try:
            info = audio.info(path)
        except (OSError, ValueError) as exc:
            raise FormatError(f"{where}: cannot use this audio: {exc}") from None
        counts = {info.num_samples, int(round(info.num_samples * sample_rate / info.sample_rate))}
        if manifest.sizes[i] not in counts:
            raise FormatError(f"{where}: num_samples is {manifest.sizes[i]} but the file holds {info.num_samples} "
                              f"samples at {info.sample_rate} Hz; regenerate the manifest "
                              "(speechssl manifest ...)")
    return manifest


def write_manifest(path: str | Path, root: str | Path, rows: Iterable[tuple[str, int]]) -> None:
    """Write a manifest atomically. ``rows`` are ``(relative_path, num_samples)``."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(f"{Path(root)}\n")
        for rel, size in rows:
            if "\t" in rel or "\n" in rel:
                raise FormatError(f"{path}: path {rel!r} contains a tab or newline")
            f.write(f"{rel}\t{int(size)}\n")


def read_labels(path: str | Path, expected_rows: int | None = None) -> list[str]:
    """Read a label file: one line per manifest row.

    Args:
        path: the label file.
        expected_rows: number of manifest rows it must match, if known.

    Raises:
        FormatError: row count differs from ``expected_rows`` (message names both numbers).
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        raise FileNotFoundError(f"label file not found: {path}") from None
    if lines and lines[-1] == "":
        lines.pop()
    if expected_rows is not None and len(lines) != expected_rows:
        raise FormatError(
            f"{path}: has {len(lines)} rows but the manifest has {expected_rows}; "
            "a label file needs exactly one line per manifest row")
    return lines


def write_labels(path: str | Path, lines: Iterable[str]) -> None:
    """Write a label file (one line per row) atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        for line in lines:
            if "\n" in line:
                raise FormatError(f"{path}: a label row may not contain a newline: {line[:40]!r}")
            f.write(line + "\n")


@dataclass
class Dictionary:
    """Symbols of a label set in file order (index = position), with counts."""

    symbols: list[str]
    counts: list[int]

    def __post_init__(self) -> None:
        self._index = {s: i for i, s in enumerate(self.symbols)}
        if len(self._index) != len(self.symbols):
            dup = next(s for s, c in collections.Counter(self.symbols).items() if c > 1)
            raise FormatError(f"dictionary has duplicate symbol {dup!r}")

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, symbol: str) -> bool:
        return symbol in self._index

    def index(self, symbol: str) -> int:
        """Index of ``symbol``; KeyError naming it if absent."""
        try:
            return self._index[symbol]
        except KeyError:
            raise KeyError(f"symbol {symbol!r} is not in the dictionary ({len(self)} symbols)") from None

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Indices of ``tokens``."""
        return [self.index(t) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Symbols of ``ids``."""
        return [self.symbols[i] for i in ids]


def read_dict(path: str | Path) -> Dictionary:
    """Read ``dict.<label>.txt`` (``symbol count`` per line)."""
    path = Path(path)
    symbols, counts = [], []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.rsplit(" ", 1)
        if len(parts) != 2 or not parts[0]:
            raise FormatError(f"{path}:{lineno}: expected 'symbol count', got {line!r}")
        try:
            count = int(parts[1])
        except ValueError:
            raise FormatError(f"{path}:{lineno}: count must be an integer, got {parts[1]!r}") from None
        symbols.append(parts[0])
        counts.append(count)
    try:
        return Dictionary(symbols, counts)
    except FormatError as exc:
        raise FormatError(f"{path}: {exc}") from None


def write_dict(path: str | Path, dictionary: Dictionary) -> None:
    """Write a dictionary atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        for s, c in zip(dictionary.symbols, dictionary.counts):
            f.write(f"{s} {c}\n")


def build_dict(rows: Iterable[str], *, sort: str = "count") -> Dictionary:
    """Dictionary of the space-separated tokens in ``rows``.

    Args:
        rows: label lines.
        sort: ``"count"`` (most frequent first, ties by symbol), ``"symbol"`` (lexical; for
            integer unit ids, numeric order).
    """
    counter: collections.Counter[str] = collections.Counter()
    for row in rows:
        counter.update(row.split())
    if sort == "count":
        items = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    elif sort == "symbol":
        numeric = all(s.lstrip("-").isdigit() for s in counter)
        items = sorted(counter.items(), key=lambda kv: int(kv[0]) if numeric else kv[0])
    else:
        raise ValueError(f"sort must be 'count' or 'symbol', got {sort!r}")
    return Dictionary([s for s, _ in items], [c for _, c in items])


def check_label_frames(
    manifest: Manifest, labels: Sequence[str], label_rate: float, *, label_path: str | Path,
    sample_rate: int = 16000, tolerance_s: float = 0.1,
) -> None:
    """Check each frame-level label row has as many frames as its audio implies.

    A row of ``n`` labels at ``label_rate`` Hz covers ``n / label_rate`` seconds; it must be
    within ``tolerance_s`` of the audio's duration.

    Raises:
        FormatError: naming the label file, the line, both frame counts and the audio file.
    """
    if len(labels) != len(manifest):
        raise FormatError(f"{label_path}: has {len(labels)} rows but the manifest has {len(manifest)}")
    for i, (row, size) in enumerate(zip(labels, manifest.sizes)):
        n = len(row.split())
        expected = size / sample_rate * label_rate
        if abs(n - expected) > tolerance_s * label_rate:
            raise FormatError(
                f"{label_path}:{i + 1}: has {n} frames but {manifest.paths[i]} ({size} samples) "
                f"implies {expected:.1f} at {label_rate:g} Hz")
