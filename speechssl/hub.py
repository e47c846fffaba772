"""Save, load, inspect and convert pretrained models.

A *model directory* is ``config.json`` (method, full config, speechssl version, sha256 of the
weights) + ``model.safetensors``. Loading never unpickles::

    from speechssl import hub
    hub.save(model, "exp/hubert_tiny")            # atomic; model has .method and .config
    model = hub.load("exp/hubert_tiny")           # eval mode, upstream contract
    out = model([torch.randn(16000)])             # {"hidden_states": [(B, T, D)...], ...}

``hub.load`` also accepts a zoo name (``$SPEECHSSL_HOME/models/<name>``; a path always wins),
a speechssl training checkpoint (``checkpoint_last.pt``), a fairseq HuBERT / wav2vec 2.0
``.pt`` and a Hugging Face ``HubertModel`` / ``Wav2Vec2Model`` directory. Every ``.pt`` is
read with ``torch.load(weights_only=True)`` and an explicit allow-list; a file that refers to
anything else is refused (:class:`UnsafeCheckpointError`) before any of it runs.

Weight-sharing supernets (LightHuBERT) have subnets: ``hub.load(path, subnet="min")`` returns
the standalone model of one subnet (only its weights, the supernet's hidden states for that
subnet), ``hub.convert(src, dst, subnet=...)`` / ``hub.export(src, name, subnet=...)`` write it
as a model directory that plain ``hub.load`` reads, and ``hub.info(src, subnets=[...])`` lists
params, MACs (and with ``time_forward`` the forward time) of each. The spec syntax is the
method's (LightHuBERT: ``max``, ``min``, ``small``, ``base``, ``embed=E,heads=H,ffn=R,layers=L``).
A ``subnet=`` for any other model is refused in one line.
"""
from __future__ import annotations

import dataclasses
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from speechssl._hub.build import build_config, build_model, check_savable
from speechssl._hub.modeldir import (
    WEIGHTS_NAME, HubError, WeightsRecord, check_finite_weights, check_sha256, read_meta, replace_dir,
    staging_dir, warn_nonfinite, write_model_dir,
)
from speechssl._hub.sources import detect_format, foreign_readers, formats, normalise_path, read_record
from speechssl._hub.subnets import forward_ms, is_supernet, select_subnet, split_subnet, subnet_rows
from speechssl._hub.zoo import ZooEntry, is_name, list_zoo, model_home, zoo_dir, zoo_path
from speechssl.config import to_dict
from speechssl.convert.safe_load import UnsafeCheckpointError
from speechssl.registry import get_method

__all__ = [
    "save", "load", "resolve", "info", "list_models", "export", "convert", "model_home",
    "ModelInfo", "ZooEntry", "HubError", "UnsafeCheckpointError", "formats", "targets", "split_subnet",
]


def targets() -> tuple[str, ...]:
    """Formats :func:`convert` writes: ``speechssl`` and every registered format with an exporter."""
    return ("speechssl",) + tuple(f for f, r in foreign_readers().items() if hasattr(r, "write_dir"))


def save(model: torch.nn.Module, dst: str | Path) -> Path:
    """Write ``model`` as a model directory at ``dst``, atomically.

    Args:
        model: follows the upstream contract: ``model.method`` (registry name) and ``model.config``
            (that method's config dataclass).
        dst: the directory; an existing model directory there is replaced, anything else is refused.

    Returns:
        ``dst`` as a Path.

    Raises:
        TypeError: the model lacks ``method``/``config``. HubError: ``dst`` is not replaceable.
    """
    method, config = check_savable(model)
    record = WeightsRecord(method=method, config=to_dict(config), state_dict=model.state_dict(),
                           source=dict(getattr(model, "hub_source", None) or {}))
    build_config(method, record.config, str(dst))  # the saved config must read back
    return write_model_dir(dst, record)


def resolve(name_or_path: str | Path) -> Path:
    """The path a name or path refers to: an existing path wins, else the zoo model of that name.

    Raises:
        FileNotFoundError: neither exists; the message lists the zoo's models.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    text = str(name_or_path)
    if is_name(text):
        candidate = zoo_dir() / text
        if candidate.is_dir():
            return candidate
    names = [e.name for e in list_zoo()]
    raise FileNotFoundError(
        f"{text}: no such file or directory, and no model of that name in the zoo at {zoo_dir()} "
        f"(models there: {', '.join(names) or 'none'}); add one with `speechssl hub export SRC NAME`")


def load(name_or_path: str | Path, device: str | torch.device = "cpu", verify: bool = True,
         fmt: str = "auto", subnet: str | None = None) -> torch.nn.Module:
    """A ready upstream model (eval mode) from a model directory, zoo name or checkpoint.

    Args:
        name_or_path: a model directory, a zoo name, a training checkpoint, a fairseq ``.pt``
            or a Hugging Face directory (see module docstring).
        device: where the model goes.
        verify: check the model directory's sha256 before loading (``False`` skips it).
        fmt: force a source format (one of :func:`formats`); ``auto`` recognises it.
        subnet: a supernet's subnet spec (e.g. ``"min"``, ``"embed=256,heads=4,ffn=3,layers=10"``):
            return that subnet's standalone model; None: the model as saved.

    Returns:
        The model: ``model(wavs) -> {"hidden_states", "last_hidden_state", "lengths"}``.

    Raises:
        FileNotFoundError, HubError (tampered, malformed, or weights not fitting the config; a
        ``subnet`` for a model without subnets, or outside its search space), UnsafeCheckpointError
        (a ``.pt`` referring to a refused global), RegistryError (unknown method).
    """
    path = resolve(name_or_path)
    record = read_record(path, fmt, verify=verify)
    model = build_model(record, str(path), device)
    if record.source:
        model.hub_source = record.source
    if subnet is not None:
        model = select_subnet(model, subnet, str(path))
    return model


@dataclass
class ModelInfo:
    """What ``speechssl hub info`` shows.

    Attributes:
        path: the source inspected.
        format: ``speechssl``, ``checkpoint``, ``fairseq`` or ``hf``.
        method: registry name.
        modality: the method's modality (``audio``, ``image``...).
        input_kind: what its forward takes (``waveform``, ``image``...; see speechssl.registry).
        preset: the method preset whose config equals this one, else None.
        sizes: integer size fields of the config (layers, dims, heads), dotted names.
        num_parameters: trainable and frozen parameters (buffers excluded).
        downsample_rate: samples per output frame at 16 kHz (audio methods), else None.
        hidden_sizes: D of each hidden state.
        sha256: digest of ``model.safetensors`` (model directories only).
        verified: True when the weights' digests (a model directory's sha256, a training
            checkpoint's tensor digests) were checked and matched; None when not checked
            (``verify=False``, a foreign format, an old checkpoint without digests).
        speechssl_version: the version that wrote it (model directories only).
        source: provenance recorded at conversion.
        config: the full config.
        subnets: a supernet's subnet table (:func:`speechssl._hub.subnets.subnet_rows`: name,
            subnet spec, params, MACs per ``num_samples``, forward_ms), the whole supernet last; for
            another model timed with ``time_forward``, one row ``name="model"``; else None.
    """

    path: Path
    format: str
    method: str
    modality: str
    input_kind: str
    preset: str | None
    sizes: dict[str, int]
    num_parameters: int
    downsample_rate: int | None
    hidden_sizes: list[int]
    sha256: str | None
    verified: bool | None
    speechssl_version: str | None
    source: dict[str, Any]
    config: dict[str, Any]
    subnets: list[dict[str, Any]] | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-able dict."""
        out = dataclasses.asdict(self)
        out["path"] = str(self.path)
        return out


_SIZE_RE = re.compile(r"(layers|dim|heads|embed|size|channels)", re.IGNORECASE)


def _sizes(config: dict[str, Any], prefix: str = "") -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_sizes(value, f"{prefix}{key}."))
        elif isinstance(value, int) and not isinstance(value, bool) and _SIZE_RE.search(key):
            out[prefix + key] = value
    return out


def _preset_of(method: str, config: dict[str, Any]) -> str | None:
    try:  # compare complete configs: one written by an older version may lack newer fields
        config = to_dict(build_config(method, config, method))
    except HubError:
        return None
    for name, make in get_method(method).presets.items():
        try:
            if to_dict(make()) == config:
                return name
        except Exception:  # noqa: BLE001 - a broken preset must not break info
            continue
    return None


_META_BUILD_BYTES = 64 << 20


def _shape_model(method: str, config: dict[str, Any], where: str, weight_bytes: int) -> torch.nn.Module:
    """The model, built to read its sizes; big ones on the meta device (no memory, no init).

    The meta device's first use imports much of torch (seconds), which costs more than a
    small model's CPU init, so only models with over 64 MiB of weights go there.
    """
    spec = get_method(method)
    cfg = build_config(method, config, where)
    if weight_bytes > _META_BUILD_BYTES:
        try:
            with torch.device("meta"):
                return spec.build(cfg)
        except Exception:  # noqa: BLE001 - some layers cannot be built on meta; fall back to CPU
            pass
    return spec.build(cfg)


def info(name_or_path: str | Path, verify: bool = True, fmt: str = "auto", *, subnets: list[str] | None = None,
         time_forward: bool = False, num_samples: int = 16000, repeats: int = 5) -> ModelInfo:
    """Describe a model directory (or any loadable source); it runs only with ``time_forward``.

    Args:
        subnets: subnet specs to tabulate (a supernet's active subnet and the whole supernet are
            always in its table); given for a model without subnets: HubError.
        time_forward: time a forward of one ``num_samples`` waveform (median of ``repeats``) of each
            subnet's standalone model, or of the model itself; loads the weights.
        num_samples: input length of the MAC count and the timing (default 1 s at 16 kHz).

    Raises:
        HubError: with ``verify``, a model directory whose weights fail their sha256; a bad subnet spec.
    """
    path = normalise_path(resolve(name_or_path))
    kind = detect_format(path) if fmt == "auto" else fmt
    sha = version = None
    verified: bool | None = None
    if kind == "speechssl":
        meta = read_meta(path)
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"{path}: model directory has no {WEIGHTS_NAME}")
        method, config, source = meta["method"], meta["config"], meta.get("source") or {}
        sha, version = meta["sha256"], meta.get("speechssl_version")
        if verify:
            check_sha256(weights, sha)
            verified = True
            # info must vouch for the tensors it reports, not only their bytes (issue 23 item 5)
            source = dict(source)
            warn_nonfinite(_read_weights(weights), str(weights), source)
    else:
        record = read_record(path, fmt, verify=verify)
        method, config, source = record.method, record.config, record.source
        kind = source.get("format", kind)
        weights = None
        # a training checkpoint's tensor digests (issue 23 item 3) were checked and matched
        # (read_record refuses a mismatch); "none" (an old checkpoint) and "not checked" stay None
        if source.get("digests") == "verified":
            verified = True
    size = weights.stat().st_size if weights is not None else 0
    model = _shape_model(method, config, str(path), size)
    runnable = load(path, verify=verify, fmt=fmt) if time_forward else model
    rows = None
    if subnets or is_supernet(model):
        rows = subnet_rows(runnable, list(subnets or []), str(path), num_samples=num_samples,
                           time_forward=time_forward, repeats=repeats)
    elif time_forward:
        rows = [{"name": "model", "subnet": None, "params": sum(p.numel() for p in model.parameters()),
                 "macs": None,
                 "forward_ms": round(forward_ms(runnable, num_samples, repeats), 3)}]
    spec = get_method(method)
    rate = getattr(model, "downsample_rate", None) if spec.modality == "audio" else None
    return ModelInfo(
        path=path, format=kind, method=method, modality=spec.modality, input_kind=spec.input_kind,
        preset=_preset_of(method, config), sizes=_sizes(config),
        num_parameters=sum(p.numel() for p in model.parameters()),
        downsample_rate=None if rate is None else int(rate), hidden_sizes=[int(d) for d in model.hidden_sizes],
        sha256=sha, verified=verified, speechssl_version=version, source=source, config=config, subnets=rows)


def _read_weights(weights: Path) -> dict[str, torch.Tensor]:
    """A model directory's tensors (its sha256 already checked)."""
    from safetensors.torch import load_file

    return load_file(str(weights), device="cpu")


def list_models() -> list[ZooEntry]:
    """The models of the local zoo (``$SPEECHSSL_HOME/models``), sorted by name."""
    return list_zoo()


def export(src: str | Path, name: str, *, verify: bool = True, overwrite: bool = False,
           fmt: str = "auto", subnet: str | None = None) -> Path:
    """Put ``src`` into the zoo as ``name``: a model directory is copied (hash checked), anything
    else is converted; with ``subnet``, that subnet's standalone model is written (:func:`convert`).

    Raises:
        FileExistsError-like HubError: ``name`` exists and ``overwrite`` is False.
    """
    dst = zoo_path(name)
    src_path = normalise_path(resolve(src))
    if src_path.resolve() == dst.resolve():
        raise HubError(f"{src}: is already the zoo model {name!r}")
    if dst.exists() and not overwrite:
        raise HubError(f"the zoo already has a model named {name!r} at {dst}; pass overwrite=True "
                       "(CLI: --force) to replace it")
    if subnet is None and detect_format(src_path) == "speechssl" and fmt in ("auto", "speechssl"):
        if verify:
            meta = read_meta(src_path)
            check_sha256(src_path / WEIGHTS_NAME, meta["sha256"])
            check_finite_weights(_read_weights(src_path / WEIGHTS_NAME), f"{src}: export to {name!r}")
        # staging_dir: named after this process beside dst, so a killed export's copy is removed
        # by the next one; replace_dir gives the tree the umask's modes
        with staging_dir(dst) as staged:
            shutil.copytree(src_path, staged, dirs_exist_ok=True)
            replace_dir(staged, dst)
        return dst
    return convert(src_path, dst, src_format=fmt, to="speechssl", verify=verify, subnet=subnet)


def convert(src: str | Path, dst: str | Path, *, src_format: str = "auto", to: str = "speechssl",
            verify: bool = True, subnet: str | None = None) -> Path:
    """Convert ``src`` (any readable source) to a speechssl model directory or a Hugging Face one.

    Args:
        src: model directory, zoo name, training checkpoint, fairseq ``.pt`` or HF directory.
        dst: the output directory (an existing one of the same kind is replaced atomically).
        src_format: one of :func:`formats`.
        to: one of :func:`targets` (``speechssl``, ``hf``: for methods with an ``"hf"`` converter).
        verify: check the source's sha256 when it is a model directory.
        subnet: a supernet's subnet spec: write that subnet's standalone model (only its weights;
            plain :func:`load` reads it) instead of the whole model.

    Returns:
        ``dst`` as a Path.
    """
    if to not in targets():
        raise ValueError(f"unknown target format {to!r}; expected one of {', '.join(targets())}")
    src_path = resolve(src)
    record = read_record(src_path, src_format, verify=verify)
    # Build and load strictly before writing anything: a conversion that does not fit fails here.
    model = build_model(record, str(src_path))
    source = record.source
    if subnet is not None:
        model.hub_source = dict(record.source)
        model = select_subnet(model, subnet, str(src_path))
        source = model.hub_source
    if to != "speechssl":
        return foreign_readers()[to].write_dir(model, dst)
    record = WeightsRecord(method=record.method, config=to_dict(model.config),
                           state_dict=model.state_dict(), source=source)
    return write_model_dir(dst, record)
