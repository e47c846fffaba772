"""One safe reader per file kind for the files users hand to speechssl.

Every refusal is one line: the file (and line where there is one), what was found, what was
expected. Nothing here runs code from a file or relays a library's advice to do so.

- :func:`load_yaml` / :func:`loads_yaml`: ``yaml.safe_load`` that refuses duplicate keys (YAML
  would silently keep the last) and names file, line and key.
- :func:`load_json`: JSON with file, line and column on a syntax error.
- :func:`load_npy`: ``np.load(allow_pickle=False)`` that checks the header against the file's
  size first, so a truncated array is named as such (numpy says only "mmap length is greater
  than file size"), and refuses object arrays.
- :func:`describe_file`: what a file looks like (text, zip, empty, binary), for messages.
- :func:`check_finite`: the first non-finite value of an array, named by its source and row.

``.pt`` files are read by :func:`speechssl.convert.safe_load.safe_torch_load`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

__all__ = ["BadFileError", "NonFiniteError", "describe_file", "load_yaml", "loads_yaml", "load_json",
           "load_npy", "check_finite", "safetensors_refusal"]


class BadFileError(ValueError):
    """A file is not what it should be; the message names it, what was found and what was expected."""


class NonFiniteError(ValueError):
    """An array holds NaN or infinity; the message names where it came from, the row and column."""


def describe_file(path: str | Path, head: bytes | None = None) -> str:
    """A short description of what ``path`` holds, e.g. ``"a text file starting 'hello'"``.

    Args:
        head: the file's first bytes, if already read.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if head is None:
            with open(path, "rb") as f:
                head = f.read(256)
    except OSError as exc:
        return f"an unreadable file ({exc.strerror})"
    if size == 0:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        return f"a zip archive of {size} bytes"
    if head.startswith(b"\x93NUMPY"):
        return f"a NumPy .npy array of {size} bytes"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = head[:exc.start].decode("utf-8") if exc.start >= len(head) - 3 else None
    if text is not None and text.strip() and all(c.isprintable() or c in "\t\r\n" for c in text):
        first = text.strip().splitlines()[0]
        return f"a text file starting {first[:40]!r}"
    return f"{size} bytes of binary data starting {head[:8].hex(' ')}"


# ---------------------------------------------------------------------------------------- YAML

class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` whose mappings refuse a key given twice."""


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A YAML mapping gives a key twice (``problem_mark`` is the second occurrence)."""

    def __init__(self, key: Any, first_line: int, mark: Any):
        super().__init__(None, None, f"duplicate key {key!r} (first on line {first_line})", mark)
        self.key = key
        self.first_line = first_line


def _construct_map(loader: _StrictLoader, node: yaml.MappingNode) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *base` then an explicit key overrides on purpose
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # unhashable key: SafeConstructor refuses it with its own message
            continue
        if first is not None:
            raise DuplicateKeyError(key, first, key_node.start_mark)
        seen[key] = key_node.start_mark.line + 1
    yield from yaml.constructor.SafeConstructor.construct_yaml_map(loader, node)


_StrictLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)


def _yaml_error(source: str, exc: yaml.YAMLError, lines: bool = True) -> BadFileError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if not lines:
        mark = None
    where = f"{source}:{mark.line + 1}" if mark is not None else source
    if isinstance(exc, DuplicateKeyError):
        first = f" (first on line {exc.first_line})" if lines else ""
        return BadFileError(f"{where}: duplicate key {exc.key!r}{first}; expected "
                            "each key once per mapping (YAML would silently keep the last)")
    problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
    context = getattr(exc, "context", None)
    detail = f"{problem} ({' '.join(str(context).split())})" if context else problem
    col = f":{mark.column + 1}" if mark is not None else ""
    return BadFileError(f"{where}{col}: not valid YAML: {detail}")


def loads_yaml(text: str, source: str = "<string>", *, lines: bool = True) -> Any:
    """Parse YAML text safely; duplicate keys and syntax errors raise :class:`BadFileError`
    naming ``source`` and (``lines``) the line."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise _yaml_error(source, exc, lines) from None


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file safely (see :func:`loads_yaml`); an empty file is ``None``.

    Raises:
        FileNotFoundError: no such file.
        BadFileError: not UTF-8 text, a syntax error or a duplicate key (file and line named).
    """
    path = Path(path)
    return loads_yaml(_read_text(path, "a YAML file"), str(path))


def _read_text(path: Path, expected: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BadFileError(f"{path}: is a directory; expected {expected}") from None
    except UnicodeDecodeError:
        raise BadFileError(f"{path}: not UTF-8 text: found {describe_file(path)}; expected {expected}") from None
    except OSError as exc:
        raise BadFileError(f"{path}: cannot read it ({exc.strerror}); expected {expected}") from None


# ---------------------------------------------------------------------------------------- JSON

def load_json(path: str | Path, expected: str = "a JSON file") -> Any:
    """Read a JSON file; a syntax error names file, line and column.

    Args:
        expected: what the file should be, for messages (``"a model directory's config.json"``).

    Raises:
        FileNotFoundError: no such file.
        BadFileError: not UTF-8 or not valid JSON.
    """
    path = Path(path)
    text = _read_text(path, expected)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        found = "an empty file" if not text.strip() else f"{exc.msg}"
        raise BadFileError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({found}); expected {expected}") from None


# ---------------------------------------------------------------------------------------- .npy

def load_npy(path: str | Path, *, mmap_mode: str | None = "r", ndim: int | None = None,
             expected: str = "a NumPy array written by numpy.save") -> np.ndarray:
    """``np.load(path, mmap_mode, allow_pickle=False)`` after checking the header against the file.

    Args:
        mmap_mode: as for ``np.load`` (``None`` reads the array into memory).
        ndim: refuse an array with another number of dimensions.
        expected: what the file should be, for messages.

    Raises:
        FileNotFoundError: no such file.
        BadFileError: not a ``.npy`` file, a damaged header, object dtype, a file shorter or
            longer than its header says (truncated or overwritten), or the wrong ``ndim``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file" if not path.exists() else
                                f"{path}: not a file; expected {expected}")
    try:
        with open(path, "rb") as f:
            try:
                version = np.lib.format.read_magic(f)
            except ValueError:
                raise BadFileError(f"{path}: not a .npy file: found {describe_file(path)}; "
                                   f"expected {expected}") from None
            try:
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            except ValueError as exc:
                raise BadFileError(f"{path}: damaged .npy header ({' '.join(str(exc).split())[:120]}); "
                                   f"expected {expected}") from None
            offset = f.tell()
        size = path.stat().st_size
    except OSError as exc:
        raise BadFileError(f"{path}: cannot read it ({exc.strerror}); expected {expected}") from None
    if dtype.hasobject:
        raise BadFileError(f"{path}: holds Python objects (dtype {dtype}); expected a numeric array, which "
                           "speechssl reads without unpickling")
    need = offset + math.prod(shape) * dtype.itemsize
    if size != need:
        state = "truncated" if size < need else "longer than its header says"
        raise BadFileError(f"{path}: {state}: its header says shape {tuple(shape)} {dtype} ({need} bytes with "
                           f"the header), the file has {size} bytes; write it again")
    if ndim is not None and len(shape) != ndim:
        raise BadFileError(f"{path}: found an array of shape {tuple(shape)}; expected {ndim} dimensions "
                           f"({expected})")
    try:
        return np.load(path, mmap_mode=mmap_mode if math.prod(shape) else None, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise BadFileError(f"{path}: cannot read the array ({' '.join(str(exc).split())[:160]}); "
                           f"expected {expected}") from None


# ---------------------------------------------------------------------------------------- safetensors

def safetensors_refusal(path: str | Path, exc: BaseException, expected: str) -> BadFileError:
    """The one-line error for a file that safetensors cannot read: what it holds, safetensors'
    reason, what was expected (raise it ``from None``)."""
    reason = " ".join(str(exc).split())[:120]
    return BadFileError(f"{path}: not a readable safetensors file: found {describe_file(path)} ({reason}); "
                        f"expected {expected}")


# ---------------------------------------------------------------------------------------- values

def check_finite(array: Any, where: str, *, row_names: Any = None, what: str = "row", offset: int = 0) -> None:
    """Raise :class:`NonFiniteError` naming the first NaN/infinite value of ``array``.

    Args:
        array: a numpy array or torch tensor, ``(N, ...)``.
        where: what the values came from (a file, a model and utterance), first in the message.
        row_names: optional per-row labels (``row_names(i)`` or ``row_names[i]``) for the message.
        what: what a row is (``"frame"``, ``"row"``).
        offset: added to the row index in the message (``array`` is a chunk starting there).
    """
    if hasattr(array, "detach"):  # a torch tensor; no torch import needed here
        array = array.detach().float().cpu().numpy()
    arr = np.asarray(array)
    if arr.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(arr)
    if not bad.any():
        return
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    value = arr[index]
    count = int(bad.sum())  # in this array (a chunk, when offset is given)
    row = index[0] if index else 0
    name = ""
    if row_names is not None:
        name = f" ({row_names(row) if callable(row_names) else row_names[row]})"
    col = f", column {index[1]}" if len(index) > 1 else ""
    raise NonFiniteError(f"{where}: {what} {offset + row}{name}{col} is {value}" +
                         (f" ({count} non-finite values in {what}s {offset}..{offset + arr.shape[0] - 1})"
                          if count > 1 else "") +
                         "; expected finite values")
