"""The model directory format: ``config.json`` + ``model.safetensors``, written atomically.

``config.json``::

    {"format_version": 1, "method": "hubert", "config": {...full model config...},
     "speechssl_version": "0.1.0", "sha256": "<hex digest of model.safetensors>",
     "source": {...optional provenance: what it was converted from...}}

Reading never unpickles: the weights are safetensors and the config is JSON.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from speechssl.atomic import temp_dir_beside, temp_name_prefix, umask
from speechssl.safe_io import BadFileError, load_json, safetensors_refusal
from speechssl.version import __version__

__all__ = [
    "HubError", "WeightsRecord", "CONFIG_NAME", "WEIGHTS_NAME", "FORMAT_VERSION",
    "is_model_dir", "read_meta", "read_model_dir", "write_model_dir", "sha256_file", "replace_dir",
    "staging_dir", "fsync_file", "check_sha256", "nonfinite_tensors", "describe_nonfinite",
    "check_finite_weights", "warn_nonfinite",
    "load_strict",
]

_log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1
_REQUIRED_KEYS = ("format_version", "method", "config", "sha256")


class HubError(ValueError):
    """A model directory or checkpoint is malformed, tampered with, or does not fit its model."""


@dataclass
class WeightsRecord:
    """Everything needed to rebuild a model: what every reader returns, what every writer takes.

    Attributes:
        method: registry name (``"hubert"``).
        config: the model config as plain JSON-able values (``speechssl.config.to_dict``).
        state_dict: parameter name → tensor, exactly the keys of ``model.state_dict()``.
        source: provenance (``{"format": "fairseq", "path": ..., "dropped": [...]}``); may be empty.
        sha256: digest of the weights file it came from, when it came from a model directory.
    """

    method: str
    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    source: dict[str, Any] = field(default_factory=dict)
    sha256: str | None = None


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def is_model_dir(path: str | Path) -> bool:
    """True when ``path`` is a directory whose ``config.json`` is a speechssl model config."""
    cfg = Path(path) / CONFIG_NAME
    if not cfg.is_file():
        return False
    try:
        meta = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "method" in meta and "format_version" in meta


def read_meta(path: str | Path) -> dict[str, Any]:
    """The parsed, checked ``config.json`` of model directory ``path``.

    Raises:
        FileNotFoundError: no ``config.json``.
        HubError: not JSON, a required key missing, or a newer ``format_version``.
    """
    path = Path(path)
    cfg_path = path / CONFIG_NAME
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{path}: not a model directory (no {CONFIG_NAME})")
    try:
        meta = load_json(cfg_path, f"a model directory's {CONFIG_NAME}")
    except BadFileError as exc:  # names file, line and column
        raise HubError(str(exc)) from None
    if not isinstance(meta, dict):
        raise HubError(f"{cfg_path}: expected a JSON object, got {type(meta).__name__}")
    missing = [k for k in _REQUIRED_KEYS if k not in meta]
    if missing:
        if "model_type" in meta:
            raise HubError(f"{path}: this is a Hugging Face model directory, not a speechssl one; "
                           f"convert it with `speechssl hub convert {path} DST`")
        raise HubError(f"{cfg_path}: missing key(s) {', '.join(missing)}; expected {', '.join(_REQUIRED_KEYS)}")
    version = meta["format_version"]
    if not isinstance(version, int) or version < 1:
        raise HubError(f"{cfg_path}: format_version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise HubError(f"{cfg_path}: format_version {version} was written by a newer speechssl "
                       f"({meta.get('speechssl_version', '?')}); this is {__version__}, which reads "
                       f"up to {FORMAT_VERSION}: upgrade speechssl")
    if not isinstance(meta["config"], dict):
        raise HubError(f"{cfg_path}: 'config' must be an object, got {type(meta['config']).__name__}")
    return meta


def check_sha256(weights: Path, expected: str) -> None:
    """Raise HubError unless ``weights`` hashes to ``expected`` (the digest in config.json)."""
    actual = sha256_file(weights)
    if actual != expected:
        raise HubError(
            f"{weights}: sha256 mismatch: {CONFIG_NAME} records {expected}, the file hashes to "
            f"{actual}. The weights were modified or corrupted after they were saved; re-export the "
            "model, or load with verify=False (CLI: --no-verify) only if you trust this file")


def read_model_dir(path: str | Path, *, verify: bool = True) -> WeightsRecord:
    """Read a model directory into a :class:`WeightsRecord` (tensors on CPU).

    Args:
        path: the directory.
        verify: check ``model.safetensors`` against the ``sha256`` recorded in ``config.json``.

    Raises:
        FileNotFoundError: no ``config.json`` or no ``model.safetensors``.
        HubError: malformed config, or (with ``verify``) a hash mismatch.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_meta(path)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{path}: model directory has {CONFIG_NAME} but no {WEIGHTS_NAME}")
    if verify:
        check_sha256(weights, meta["sha256"])
    else:
        _log.warning("%s: loading without verifying its sha256", weights)
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise HubError(str(safetensors_refusal(weights, exc, "the weights written by speechssl hub save"))) from None
    warn_nonfinite(state, str(weights))
    return WeightsRecord(method=meta["method"], config=meta["config"], state_dict=state,
                         source=meta.get("source") or {}, sha256=meta["sha256"])


def nonfinite_tensors(state_dict: dict[str, torch.Tensor]) -> list[tuple[str, int, int]]:
    """``(name, NaN count, infinite count)`` of every floating-point tensor that is not all finite,
    in state-dict order."""
    out = []
    for name, t in state_dict.items():
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()) and t.numel():
            finite = torch.isfinite(t)
            if not bool(finite.all()):
                nan = int(torch.isnan(t).sum())
                out.append((name, nan, int((~finite).sum()) - nan))
    return out


def describe_nonfinite(bad: list[tuple[str, int, int]], state_dict: dict[str, torch.Tensor]) -> str:
    """``"tensor 'x' (float32, shape (4, 3)) holds 2 NaN (and 3 more tensors)"`` for messages."""
    name, nan, inf = bad[0]
    t = state_dict[name]
    what = " and ".join(part for part in (f"{nan} NaN" if nan else "", f"{inf} infinite" if inf else "") if part)
    more = f" (and {len(bad) - 1} more tensor{'s' if len(bad) > 2 else ''}: {_listing([b[0] for b in bad[1:]], 4)})" \
        if len(bad) > 1 else ""
    return (f"tensor {name!r} ({str(t.dtype).removeprefix('torch.')}, shape {tuple(t.shape)}) holds {what} "
            f"of its {t.numel()} values{more}")


def check_finite_weights(state_dict: dict[str, torch.Tensor], where: str) -> None:
    """Refuse weights holding NaN or infinity (a diverged run), naming the first such tensor.

    Raises:
        HubError: ``"<where>: refusing to write: tensor 'x' ... holds 3 NaN ...; expected finite weights"``.
    """
    bad = nonfinite_tensors(state_dict)
    if bad:
        raise HubError(f"{where}: refusing to write: {describe_nonfinite(bad, state_dict)}; expected finite "
                       "weights (the model diverged? use an earlier checkpoint)")


def warn_nonfinite(state_dict: dict[str, torch.Tensor], where: str,
                   source: dict[str, Any] | None = None) -> list[tuple[str, int, int]]:
    """Flag weights being read that hold NaN or infinity: one warning line naming the first
    tensor, and (given ``source``, a record's provenance that ``hub info`` prints)
    ``source["nonfinite"]`` = that description. Writing such weights is refused
    (:func:`check_finite_weights`). Returns the ``(name, NaN, inf)`` triples."""
    bad = nonfinite_tensors(state_dict)
    if bad:
        text = describe_nonfinite(bad, state_dict)
        _log.warning("%s: %s; its outputs will not be finite", where, text)
        if source is not None:
            source["nonfinite"] = text
    return bad


def _plain_tensors(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors; tensors sharing storage are cloned (safetensors refuses them)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state dict entry {key!r} is a {type(value).__name__}, not a tensor")
        t = value.detach().to("cpu").contiguous()
        ident = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if t.numel() and ident in seen:
            t = t.clone()
        seen.add((t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()))
        out[key] = t
    return out


@contextlib.contextmanager
def staging_dir(dst: Path) -> Iterator[Path]:
    """A fresh temporary directory beside ``dst``; removed on error.

    It has the user's usual directory mode (umask), not ``mkdtemp``'s 0700, so the model
    directory renamed from it does too; staging and ``.old`` directories that killed runs
    left beside ``dst`` are removed first (:func:`speechssl.atomic.remove_stale`).
    """
    tmp = temp_dir_beside(dst)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _apply_umask(root: Path) -> None:
    """Give ``root`` and everything in it the modes ``mkdir``/``open`` give under the umask.

    Writers that stage through temporary files (``safetensors.save_file``, ``mkdtemp``) make
    0600/0700 entries; a model directory must be as readable as the user's other files.
    """
    mask = umask()
    os.chmod(root, 0o777 & ~mask)
    for path in root.rglob("*"):
        if path.is_symlink():
            continue
        executable = path.is_dir() or path.stat().st_mode & 0o111
        os.chmod(path, (0o777 if executable else 0o666) & ~mask)


def replace_dir(staged: Path, dst: Path, replaceable: Callable[[Path], bool] = is_model_dir,
                kind: str = "speechssl model") -> None:
    """Move the finished directory ``staged`` to ``dst``, swapping out an existing model directory.

    The old directory is renamed aside first and removed only after the new one is in place,
    so a crash leaves either the old or the new model (plus a hidden leftover that the next
    write removes), never a mix. Everything in ``staged`` gets the umask's modes first.

    Args:
        replaceable: whether an existing non-empty ``dst`` may be replaced.
        kind: what ``replaceable`` accepts, for the error message.

    Raises:
        HubError: ``dst`` exists and is not replaceable (or is a file); nothing is touched.
    """
    if dst.is_file() or dst.is_symlink() and not dst.is_dir():
        shutil.rmtree(staged, ignore_errors=True)
        raise HubError(f"{dst}: exists and is a file; refusing to replace it with a model directory")
    if dst.exists() and any(dst.iterdir()) and not replaceable(dst):
        shutil.rmtree(staged, ignore_errors=True)
        raise HubError(f"{dst}: exists and is not a {kind} directory; refusing to overwrite it: choose "
                       "a new or empty directory")
    _apply_umask(staged)
    old = None
    if dst.exists():
        old = Path(tempfile.mkdtemp(prefix=temp_name_prefix(dst), suffix=".old", dir=dst.parent))
        os.rmdir(old)
        os.rename(dst, old)
    try:
        os.rename(staged, dst)
    except BaseException:
        if old is not None:
            os.rename(old, dst)
        shutil.rmtree(staged, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_model_dir(dst: str | Path, record: WeightsRecord) -> Path:
    """Write ``record`` as a model directory at ``dst``, atomically (staging dir + rename).

    An existing model directory at ``dst`` is replaced; anything else there is refused.

    Returns:
        ``dst`` as a Path.
    """
    from safetensors.torch import save_file

    dst = Path(dst).expanduser()
    if dst.exists() and (dst.is_file() or any(dst.iterdir()) and not is_model_dir(dst)):
        raise HubError(f"{dst}: exists and is not a speechssl model directory; refusing to overwrite "
                       "it: choose a new or empty directory")
    tensors = _plain_tensors(record.state_dict)
    origin = record.source.get("path") if isinstance(record.source, dict) else None
    check_finite_weights(tensors, f"{dst}" + (f" (from {origin})" if origin else ""))
    with staging_dir(dst) as tmp:
        weights = tmp / WEIGHTS_NAME
        save_file(tensors, str(weights), metadata={"format": "pt", "method": record.method})
        fsync_file(weights)
        meta: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "method": record.method,
            "config": record.config,
            "speechssl_version": __version__,
            "sha256": sha256_file(weights),
        }
        if record.source:
            meta["source"] = record.source
        (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        fsync_file(tmp / CONFIG_NAME)
        replace_dir(tmp, dst)
    _log.info("wrote %s model to %s (%d tensors)", record.method, dst, len(tensors))
    return dst


def _listing(items: list[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def load_strict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], where: str) -> None:
    """``model.load_state_dict(state_dict, strict=True)`` with one error listing every mismatch.

    Raises:
        HubError: naming the missing keys, unexpected keys and wrong shapes (file vs model).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [f"{k} (file {tuple(state_dict[k].shape)}, model {tuple(v.shape)})"
             for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {_listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {_listing(unexpected)}")
        if wrong:
            parts.append(f"{len(wrong)} with the wrong shape: {_listing(wrong)}")
        raise HubError(f"{where}: the weights do not fit the {type(model).__name__} built from its config; "
                       + "; ".join(parts))
    model.load_state_dict(state_dict, strict=True)
