"""Recognise what a path holds and read it into a :class:`WeightsRecord`.

Native formats: ``speechssl`` (a model directory) and ``checkpoint`` (a speechssl training
checkpoint). Foreign formats are those some registered method has a converter for
(``Method.converters``, e.g. ``fairseq``, ``hf``); each converter names the format's reader
(``converter.reader``: a module with ``DESCRIPTION`` and either ``claims_dir``/``read_dir`` for
directory formats or ``claims_checkpoint``/``read_checkpoint`` for ``.pt`` formats; a reader of
a layout other toolkits share sets ``GENERIC = True`` and is asked last). Every ``.pt`` goes
through the allow-listed safe loader.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from speechssl._hub.checkpoint import is_training_checkpoint, read_training_checkpoint
from speechssl._hub.modeldir import (
    CONFIG_NAME, WEIGHTS_NAME, HubError, WeightsRecord, is_model_dir, read_meta, read_model_dir,
    warn_nonfinite,
)
from speechssl.convert.safe_load import FAIRSEQ_ALLOWED, safe_torch_load
from speechssl.registry import get_method, list_methods

__all__ = ["NATIVE_FORMATS", "formats", "foreign_readers", "detect_format", "read_record", "normalise_path"]

NATIVE_FORMATS = ("auto", "speechssl", "checkpoint")


def foreign_readers() -> dict[str, Any]:
    """Foreign format → its reader module, for every format a registered method converts."""
    readers: dict[str, Any] = {}
    for name in list_methods():
        for fmt, converter in get_method(name).converters.items():
            reader = getattr(converter, "reader", None)
            if reader is not None:
                readers.setdefault(fmt, reader)
    return dict(sorted(readers.items()))


def formats() -> tuple[str, ...]:
    """Every source format :func:`read_record` accepts (``auto`` first)."""
    return NATIVE_FORMATS + tuple(foreign_readers())


def normalise_path(path: Path) -> Path:
    """A model directory's own path when ``path`` is its config.json or model.safetensors."""
    # Pointing at a file inside a model directory means the directory.
    if path.is_file() and path.name in (WEIGHTS_NAME, CONFIG_NAME):
        return path.parent
    return path


def detect_format(path: str | Path) -> str:
    """``speechssl``, a foreign directory format (``hf``), or ``pt`` (a file to unpickle safely
    and classify by content).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        HubError: a directory that is neither a speechssl nor a Hugging Face model directory.
    """
    path = normalise_path(Path(path).expanduser())
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if path.is_dir():
        if is_model_dir(path):
            return "speechssl"
        dir_readers = {f: r for f, r in foreign_readers().items() if hasattr(r, "claims_dir")}
        for fmt, reader in dir_readers.items():
            if reader.claims_dir(path):
                return fmt
        if (path / CONFIG_NAME).is_file():
            read_meta(path)  # raises the precise problem (bad JSON, missing keys)
        others = "".join(f" or {r.DESCRIPTION}" for r in dir_readers.values())
        raise HubError(f"{path}: not a model directory: expected {CONFIG_NAME} + {WEIGHTS_NAME} (speechssl)"
                       f"{others}")
    return "pt"


def _classify_pt(path: Path, obj: Any, fmt: str, verify: bool = True) -> WeightsRecord:
    if fmt in ("auto", "checkpoint") and is_training_checkpoint(obj):
        return read_training_checkpoint(path, obj, verify=verify)
    file_readers = {f: r for f, r in foreign_readers().items() if hasattr(r, "claims_checkpoint")}
    # a GENERIC layout (fairseq's, which toolkits built on fairseq share) claims last
    order = sorted(file_readers.items(), key=lambda item: bool(getattr(item[1], "GENERIC", False)))
    for name, reader in order:
        if fmt in ("auto", name) and reader.claims_checkpoint(obj):
            return reader.read_checkpoint(path, obj)
    keys = ", ".join(sorted(map(str, obj))[:10]) if isinstance(obj, dict) else type(obj).__name__
    native = "a speechssl training checkpoint ('model' + 'upstream')"
    if fmt == "checkpoint":
        wanted = native
    elif fmt == "auto":
        wanted = " or ".join([native] + [r.DESCRIPTION for r in file_readers.values()])
    else:
        wanted = file_readers[fmt].DESCRIPTION
    raise HubError(f"{path}: not {wanted}; the file holds: {keys}")


def read_record(path: str | Path, fmt: str = "auto", *, verify: bool = True) -> WeightsRecord:
    """Read any supported source into a :class:`WeightsRecord` (tensors on CPU).

    Args:
        path: a model directory, a training checkpoint, a fairseq ``.pt`` or a Hugging Face directory.
        fmt: one of :func:`formats`; ``auto`` recognises the source.
        verify: check a model directory's sha256, or a training checkpoint's tensor digests
            (foreign formats carry no hash).

    Raises:
        FileNotFoundError, HubError, UnsafeCheckpointError (a ``.pt`` naming a refused global).
    """
    readers = foreign_readers()
    if fmt not in NATIVE_FORMATS and fmt not in readers:
        raise ValueError(f"unknown source format {fmt!r}; expected one of {', '.join(formats())}")
    path = normalise_path(Path(path).expanduser())
    kind = detect_format(path)
    if kind == "speechssl":
        if fmt not in ("auto", "speechssl"):
            raise HubError(f"{path}: is a speechssl model directory, not {fmt}")
        return read_model_dir(path, verify=verify)
    if kind != "pt":
        if fmt not in ("auto", kind):
            raise HubError(f"{path}: is a {readers[kind].DESCRIPTION}, not {fmt}")
        return _flagged(readers[kind].read_dir(path), path)
    if fmt == "speechssl" or hasattr(readers.get(fmt), "claims_dir"):
        raise HubError(f"{path}: is a file; a {fmt} model is a directory")
    obj = safe_torch_load(path, allow=FAIRSEQ_ALLOWED)
    return _flagged(_classify_pt(path, obj, fmt, verify), path)


def _flagged(record: WeightsRecord, path: Path) -> WeightsRecord:
    """NaN/inf weights: a warning and ``source["nonfinite"]`` (hub info shows it); writing them is refused."""
    warn_nonfinite(record.state_dict, str(path), record.source)
    return record
