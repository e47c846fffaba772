"""Read ``.pt`` files without letting them run code.

Every ``.pt`` file speechssl reads (training checkpoints, fairseq checkpoints, Hugging Face
``pytorch_model.bin``) goes through :func:`safe_torch_load`: ``torch.load(weights_only=True)``
plus an explicit allow-list of the few non-tensor globals those files legitimately contain
(``argparse.Namespace`` for legacy fairseq ``args``, numpy scalars and arrays for fairseq's
logged metrics, fairseq ``Dictionary`` objects in ``task_state``, read as inert stand-ins). Before unpickling, the pickle is disassembled and every global it names is
checked against the allow-list, so a file that refers to anything else (``os.system``,
``builtins.eval``, an unknown class) is refused with an error that names the global, and
nothing in it runs.
"""
from __future__ import annotations

import argparse
import logging
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

__all__ = ["UnsafeCheckpointError", "safe_torch_load", "FAIRSEQ_ALLOWED", "DEFAULT_ALLOWED", "InertObject"]

_log = logging.getLogger(__name__)

# (object, dotted name as it appears in the pickle). Each is data-only: reconstructing it calls
# no user code. numpy's names moved from numpy.core to numpy._core in numpy 2; files written
# by either are accepted.
Allowed = tuple[Callable[..., Any], str]


def _numpy_allowed() -> list[Allowed]:
    try:
        import numpy as np
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # numpy 1.x
        import numpy as np
        from numpy.core import multiarray  # type: ignore[no-redef]
    items: list[Allowed] = []
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        items.append((multiarray._reconstruct, f"{mod}._reconstruct"))
        items.append((multiarray.scalar, f"{mod}.scalar"))
    items.append((np.ndarray, "numpy.ndarray"))
    items.append((np.dtype, "numpy.dtype"))
    # Unpickling a dtype BUILDs an instance of its concrete class (numpy.dtypes.Float32DType...);
    # numeric, bool and string dtypes only: no object or structured (void) arrays.
    for code in "?bBhHiIlLqQefdgFDGSUmM":
        cls = type(np.dtype(code))
        items.append((cls, f"{cls.__module__}.{cls.__qualname__}"))
    return items


# fairseq classes whose instances are pure data in checkpoints; read as InertObject.
_INERT = ("fairseq.data.dictionary.Dictionary",)

#: What any speechssl-readable ``.pt`` may contain besides tensors and plain containers.
DEFAULT_ALLOWED: tuple[str, ...] = ()
#: Extra globals fairseq checkpoints contain (legacy ``args``; numpy values in logged metrics).
FAIRSEQ_ALLOWED: tuple[str, ...] = (
    "argparse.Namespace",
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.ndarray", "numpy.dtype", *_INERT,
)


class InertObject:
    """Stands in for a data-only fairseq object (a ``Dictionary`` in ``task_state``) while unpickling.

    It has no methods: unpickling creates it with ``object.__new__`` and fills its ``__dict__``
    with values that were themselves unpickled under the same allow-list; nothing runs.
    """

    def __repr__(self) -> str:
        return f"InertObject({sorted(self.__dict__)})"


def _resolve(names: Iterable[str]) -> list[Allowed]:
    table: dict[str, Callable[..., Any]] = {"argparse.Namespace": argparse.Namespace}
    table.update({name: InertObject for name in _INERT})
    numpy_items = _numpy_allowed()
    table.update({name: obj for obj, name in numpy_items})
    out = []
    for name in names:
        if name not in table:
            raise ValueError(f"{name!r} is not a global speechssl knows how to allow; known: {sorted(table)}")
        out.append((table[name], name))
    if any(name.startswith("numpy.") for name in names):
        out += [item for item in numpy_items if item[1].startswith("numpy.dtypes.")]
    return out


class UnsafeCheckpointError(ValueError):
    """A ``.pt`` file refers to a global that is not allow-listed; nothing was unpickled.

    Attributes:
        path: the file.
        refused: the dotted names of the refused globals (e.g. ``["posix.system"]``).
    """

    def __init__(self, path: Path, refused: list[str]):
        self.path = path
        self.refused = refused
        super().__init__(
            f"{path}: refused to load: the file's pickle refers to {', '.join(refused)}, which "
            f"{'is' if len(refused) == 1 else 'are'} not on "
            "speechssl's allow-list of data-only globals, so loading it could run code. speechssl never "
            "unpickles arbitrary objects; if the file comes from a trainer speechssl does not know, "
            "re-save only its tensors (a state dict) or a safetensors file in a trusted environment"
            + (_OMEGACONF_HINT if any(r.startswith(("omegaconf.", "fairseq.")) for r in refused) else ""))


_OMEGACONF_HINT = (
    ". This looks like a fairseq checkpoint whose 'cfg' was pickled as an omegaconf object; in a "
    "trusted environment with fairseq's dependencies, store it as a plain dict first: python -c "
    "\"import torch; from omegaconf import OmegaConf; s = torch.load('IN.pt', weights_only=False); "
    "s['cfg'] = OmegaConf.to_container(s['cfg'], resolve=True); s.pop('task_state', None); "
    "torch.save(s, 'OUT.pt')\"")

_GLOBAL_RE = re.compile(r"GLOBAL (\S+) ")


def safe_torch_load(path: str | Path, *, allow: Iterable[str] = DEFAULT_ALLOWED,
                    map_location: str | torch.device = "cpu", mmap: bool = True) -> Any:
    """``torch.load(path, weights_only=True)`` with an explicit allow-list of extra globals.

    Args:
        path: a file written by ``torch.save`` (zip or legacy format).
        allow: dotted names from :data:`FAIRSEQ_ALLOWED` (or empty: tensors and plain containers only).
        map_location: where tensors land.
        mmap: memory-map the tensors of a zip checkpoint (False: read them into memory, so
            later changes to the file cannot reach them).

    Returns:
        The unpickled object (dicts, lists, tensors and the allowed types only).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafeCheckpointError: the pickle names a global outside the allow-list (nothing ran).
        ValueError: the file is not a PyTorch checkpoint or is corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file" if not path.exists() else
                                f"{path}: not a file; expected a PyTorch checkpoint written by torch.save")
    allowed = _resolve(allow)
    kind = _sniff(path)
    is_zip = kind == "zip"
    with torch.serialization.safe_globals(allowed):
        if is_zip:
            # Static scan first: list every refused global at once, before any unpickling.
            try:
                refused = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
            except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged archives
                raise ValueError(f"{path}: found a zip archive that torch.save did not write, or a damaged "
                                 f"one ({_reason(exc)}); expected a PyTorch checkpoint") from None
            if refused:
                raise UnsafeCheckpointError(path, sorted(refused))
        try:
            # mmap: a fairseq checkpoint is mostly optimizer state that is never touched
            return torch.load(path, map_location=map_location, weights_only=True, mmap=is_zip and mmap)
        except pickle.UnpicklingError as exc:
            match = _GLOBAL_RE.search(str(exc))
            if match:
                raise UnsafeCheckpointError(path, [match.group(1)]) from None
            raise ValueError(f"{path}: refused: its pickle is damaged or uses what speechssl does not load "
                             f"({_reason(exc)}); expected a PyTorch checkpoint of tensors and plain "
                             "containers") from None
        except Exception as exc:  # noqa: BLE001 - KeyError, EOFError, RuntimeError... from damaged files
            raise ValueError(f"{path}: damaged or truncated PyTorch checkpoint ({_reason(exc)}); "
                             "expected a complete file written by torch.save") from None


# torch.save's legacy (non-zip) format starts with the pickled magic number 0x1950a86a20f9469cfc6c
_LEGACY_MAGIC = bytes.fromhex("6cfc9c46f9206aa85019")


def _sniff(path: Path) -> str:
    """``"zip"`` or ``"legacy"`` for the two torch.save formats; anything else is refused here,
    naming what the file looks like, before torch sees it."""
    from speechssl.safe_io import describe_file

    with open(path, "rb") as f:
        head = f.read(256)
    if head.startswith(b"PK\x03\x04"):
        if zipfile.is_zipfile(path):
            return "zip"
        raise ValueError(f"{path}: truncated or damaged: found the start of a zip archive "
                         f"({path.stat().st_size} bytes) without its directory; expected a complete "
                         "PyTorch checkpoint written by torch.save")
    if head[:1] == b"\x80" and _LEGACY_MAGIC in head[:32]:
        return "legacy"
    raise ValueError(f"{path}: not a PyTorch checkpoint: found {describe_file(path, head)}; expected a "
                     "file written by torch.save (a zip archive or torch's legacy format)")


def _reason(exc: BaseException) -> str:
    """torch's error, reduced to one line without its advice to load with weights_only=False."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1].split("Check the documentation", 1)[0]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "weights_only" not in ln]
    first = lines[0] if lines else ""
    first = first.split(". This is an internal")[0].split(". If you are seeing")[0]
    return f"{type(exc).__name__}: {first[:160]}" if first else type(exc).__name__
