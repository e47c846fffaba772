"""Hugging Face model directories ↔ speechssl.

The key and config mapping is registered by each method (``Method.converters["hf"]``, e.g. a
:class:`speechssl.convert.trunk_hf.TrunkHFConverter` naming the ``model_type`` values it reads);
this module does the directory I/O and asks the registered methods which one reads a
directory's ``model_type``, so the core holds no list of methods.

Reading: ``config.json`` (``model_type`` ``hubert`` or ``wav2vec2``) + ``model.safetensors``
(or a sharded ``model.safetensors.index.json``, or ``pytorch_model.bin`` read with the safe
loader); ``preprocessor_config.json``'s ``do_normalize`` sets speechssl's ``normalize``.
Task classes (``HubertForCTC``, ``Wav2Vec2ForPreTraining``...) convert their base model; their
heads are dropped and recorded. Writing: ``config.json`` + ``model.safetensors`` +
``preprocessor_config.json``, a directory ``transformers.AutoModel.from_pretrained`` loads.
``transformers`` itself is never imported.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from speechssl._hub.modeldir import (
    HubError, WeightsRecord, check_finite_weights, fsync_file, replace_dir, staging_dir,
)
from speechssl.config import to_dict
from speechssl.convert.safe_load import safe_torch_load
from speechssl.registry import Method, RegistryError, get_method, methods_with_converter
from speechssl.safe_io import BadFileError, load_json, safetensors_refusal

__all__ = ["read_hf_dir", "write_hf_dir", "is_hf_dir", "hf_model_types", "DESCRIPTION", "claims_dir",
           "read_dir", "write_dir"]

#: What this format is, for error messages (the hub's reader protocol, see speechssl._hub.sources).
DESCRIPTION = "a Hugging Face model directory (config.json with model_type + weights)"

_log = logging.getLogger(__name__)


def hf_model_types() -> dict[str, Method]:
    """transformers ``model_type`` → the registered method that reads it (first registered wins)."""
    found: dict[str, Method] = {}
    for method in methods_with_converter("hf"):
        for model_type in getattr(method.converters["hf"], "model_types", {}):
            found.setdefault(model_type, method)
    return found


def is_hf_dir(path: Path) -> bool:
    """True when ``path/config.json`` is a transformers config (has ``model_type``)."""
    try:
        meta = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "model_type" in meta


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = load_json(path, "a Hugging Face JSON file")
    except BadFileError as exc:  # file, line and column
        raise HubError(str(exc)) from None
    if not isinstance(data, dict):
        raise HubError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise HubError(str(safetensors_refusal(path, exc, "Hugging Face weights (model.safetensors)"))) from None


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict of a transformers directory and the file(s) it came from."""
    single = path / "model.safetensors"
    if single.is_file():
        return _load_safetensors(single), single.name
    for index_name, loader in (("model.safetensors.index.json", _load_safetensors),
                               ("pytorch_model.bin.index.json", lambda p: safe_torch_load(p))):
        index = path / index_name
        if index.is_file():
            weight_map = _read_json(index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise HubError(f"{index}: no 'weight_map' object")
            state: dict[str, torch.Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                shard_path = path / str(shard)
                if shard_path.parent != path:
                    raise HubError(f"{index}: shard {shard!r} is outside the directory")
                if not shard_path.is_file():
                    raise FileNotFoundError(f"{index}: lists shard {shard}, which does not exist")
                state.update(loader(shard_path))
            return state, index_name
    binary = path / "pytorch_model.bin"
    if binary.is_file():
        state = safe_torch_load(binary)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise HubError(f"{binary}: expected a state dict of tensors")
        return state, binary.name
    raise FileNotFoundError(f"{path}: Hugging Face directory without weights: expected model.safetensors, "
                            "a sharded index, or pytorch_model.bin")


def read_hf_dir(path: str | Path) -> WeightsRecord:
    """A speechssl record from a transformers HuBERT / wav2vec 2.0 directory.

    Raises:
        HubError: an unsupported model type or option, unknown/missing keys, wrong shapes.
        FileNotFoundError: no weights file.
    """
    path = Path(path)
    hf_config = _read_json(path / "config.json")
    model_type = hf_config.get("model_type")
    readers = hf_model_types()
    if model_type not in readers:
        raise HubError(f"{path}: transformers model_type {model_type!r} is not convertible; supported: "
                       f"{', '.join(sorted(readers)) or '(none registered)'}")
    method = readers[model_type]
    converter = method.converters["hf"]
    state, weights_name = _read_weights(path)
    normalize = None
    pre = path / "preprocessor_config.json"
    if pre.is_file():
        value = _read_json(pre).get("do_normalize")
        normalize = None if value is None else bool(value)
    prefix = converter.base_prefix[model_type]  # task classes (…ForCTC) hold the base model under it
    has_base_prefix = any(k.startswith(prefix) for k in state)
    dropped = sorted(k for k in state if has_base_prefix and not k.startswith(prefix))
    try:
        config, converted = converter.hf_to_speechssl(state, hf_config, normalize=normalize, drop_heads=True)
    except ValueError as exc:
        raise HubError(f"{path}: {exc}") from None
    if dropped:
        _log.info("%s: dropped %d task-head parameter(s): %s", path, len(dropped), ", ".join(dropped))
    source = {"format": "hf", "path": str(path), "model_type": model_type, "weights": weights_name,
              "architectures": hf_config.get("architectures"), "dropped": dropped}
    return WeightsRecord(method=method.name, config=to_dict(config), state_dict=converted,
                         source=source)


def write_hf_dir(model: torch.nn.Module, dst: str | Path) -> Path:
    """Write a speechssl upstream whose method has an ``"hf"`` converter as a transformers directory.

    An existing transformers directory at ``dst`` is replaced atomically; anything else is refused.

    Returns:
        ``dst`` as a Path.
    """
    from safetensors.torch import save_file

    method = getattr(model, "method", None)
    try:
        converter = get_method(str(method)).converter("hf")
    except RegistryError:
        exporters = sorted(m.name for m in methods_with_converter("hf"))
        raise HubError(f"a {method!r} model has no Hugging Face counterpart; HF export exists for "
                       f"{', '.join(exporters) or '(none)'}") from None
    model_type = converter.export_type
    try:
        hf_config, hf_state = converter.speechssl_to_hf(model.config, model.state_dict())
    except ValueError as exc:
        raise HubError(f"cannot express this {method} model in transformers: {exc}") from None
    dst = Path(dst).expanduser()
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in hf_state.items()}
    check_finite_weights(tensors, str(dst))
    with staging_dir(dst) as tmp:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        fsync_file(tmp / "model.safetensors")
        for name, data in (("config.json", hf_config),
                           ("preprocessor_config.json", converter.hf_feature_extractor_config(model.config))):
            (tmp / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
            fsync_file(tmp / name)
        replace_dir(tmp, dst, replaceable=is_hf_dir, kind="Hugging Face model")
    _log.info("wrote transformers %s directory %s", model_type, dst)
    return dst


def claims_dir(path: Path) -> bool:
    """Reader protocol: whether ``path`` is a directory of this format."""
    return is_hf_dir(path)


def read_dir(path: Path) -> WeightsRecord:
    """Reader protocol: :func:`read_hf_dir`."""
    return read_hf_dir(path)


def write_dir(model: torch.nn.Module, dst: str | Path) -> Path:
    """Reader protocol (export): :func:`write_hf_dir`."""
    return write_hf_dir(model, dst)
