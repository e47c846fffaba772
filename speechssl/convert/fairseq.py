"""fairseq checkpoints of the wav2vec 2.0 / HuBERT trunk → speechssl.

Which fairseq models a speechssl method reads is the method's: it registers a
:class:`FairseqConverter` (``Method.converters["fairseq"]``) naming fairseq model names
(``_name``/``arch``) and whether each is a fine-tuned wrapper; :func:`read_fairseq` asks the
registered methods.

A fairseq checkpoint (``fairseq.checkpoint_utils`` / ``Trainer.state_dict``) is a dict::

    {"model": <state dict>, "cfg": {"model": {...}, "task": {...}, ...}  # hydra era, a plain dict
     "args": None | argparse.Namespace,                                # legacy flat arguments
     "optimizer_history": [...], "extra_state": {...}, "task_state": {...},
     "last_optimizer_state": {...}, "criterion": ...}

It is read with the allow-listed safe loader (:mod:`speechssl.convert.safe_load`); only
``model`` and ``cfg``/``args`` are used. Pretrained models (e.g. ``hubert``, ``wav2vec2``) and
CTC fine-tuned ones (``hubert_ctc``, ``wav2vec_ctc``: the encoder under
``w2v_encoder.w2v_model.``, its pretraining config in ``w2v_args``) are accepted.

Every parameter is mapped through :data:`KEPT` (speechssl uses fairseq's names, so this is
identity except the weight-norm parametrization naming) or dropped knowingly through
:data:`DROPPED` (pretraining-only heads); any other key is an error that names it. Config
fields that change the architecture in ways speechssl does not implement (conformer layers,
a deep or batch-normed positional conv, an input quantizer) are errors too.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import logging
import re
import sys
from pathlib import Path
from typing import Any, Mapping

import torch

from speechssl._hub.modeldir import HubError, WeightsRecord
from speechssl.registry import Method, methods_with_converter

__all__ = ["KEPT", "DROPPED", "FairseqConverter", "read_fairseq", "fairseq_model_config", "parse_conv_layers",
           "fairseq_models", "DESCRIPTION", "claims_checkpoint", "read_checkpoint"]

#: What this format is, for error messages (the hub's reader protocol, see speechssl._hub.sources).
DESCRIPTION = "a fairseq checkpoint ('model' + 'cfg' or 'args')"
#: Toolkits built on fairseq (LightHuBERT) save this layout too: their own readers are asked first.
GENERIC = True

_log = logging.getLogger(__name__)

#: fairseq parameter name pattern → speechssl name (``\1``... substituted). Everything the upstream uses.
KEPT: tuple[tuple[str, str], ...] = (
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", r"feature_extractor.conv_layers.\1.0.\2"),
    (r"feature_extractor\.conv_layers\.0\.2\.(weight|bias)", r"feature_extractor.conv_layers.0.2.\1"),
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)", r"feature_extractor.conv_layers.\1.2.1.\2"),
    (r"layer_norm\.(weight|bias)", r"layer_norm.\1"),
    (r"post_extract_proj\.(weight|bias)", r"post_extract_proj.\1"),
    (r"mask_emb", r"mask_emb"),
    (r"encoder\.pos_conv\.0\.(weight_g|weight_v|bias)", r"encoder.pos_conv.0.\1"),
    (r"encoder\.pos_conv\.0\.parametrizations\.weight\.original0", r"encoder.pos_conv.0.weight_g"),
    (r"encoder\.pos_conv\.0\.parametrizations\.weight\.original1", r"encoder.pos_conv.0.weight_v"),
    (r"encoder\.layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.(weight|bias)",
     r"encoder.layers.\1.self_attn.\2_proj.\3"),
    (r"encoder\.layers\.(\d+)\.(self_attn_layer_norm|final_layer_norm|fc1|fc2)\.(weight|bias)",
     r"encoder.layers.\1.\2.\3"),
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.layer_norm.\1"),
)

#: fairseq parameter name pattern → why it is not part of an upstream (dropped, logged, recorded).
DROPPED: tuple[tuple[str, str], ...] = (
    (r"label_embs_concat", "HuBERT pretraining: embeddings of the k-means targets"),
    (r"final_proj\..+", "pretraining: projection to the logit space"),
    (r"target_glu\..+", "pretraining: GLU on the targets"),
    (r"quantizer\..+", "wav2vec 2.0 pretraining: the quantizer giving contrastive targets"),
    (r"project_q\..+", "wav2vec 2.0 pretraining: projection of quantized targets"),
    (r"w2v_encoder\.proj\..+", "fine-tuning: the CTC output layer"),
)

_KEPT_RE = [(re.compile(p + r"\Z"), r) for p, r in KEPT]
_DROPPED_RE = [(re.compile(p + r"\Z"), why) for p, why in DROPPED]

_FINETUNED_PREFIX = "w2v_encoder.w2v_model."

# fairseq HubertConfig / Wav2Vec2Config defaults of every field read below (for old checkpoints
# whose config predates a field).
_DEFAULTS: dict[str, Any] = {
    "extractor_mode": "default", "encoder_layers": 12, "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072, "encoder_attention_heads": 12, "activation_fn": "gelu",
    "layer_type": "transformer", "dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0, "dropout_input": 0.0, "dropout_features": 0.0, "final_dim": 0,
    "untie_final_proj": False, "layer_norm_first": False,
    "conv_feature_layers": "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]",
    "conv_bias": False, "logit_temp": 0.1, "target_glu": False, "feature_grad_mult": 1.0,
    "mask_length": 10, "mask_prob": 0.65, "mask_selection": "static", "mask_other": 0.0,
    "no_mask_overlap": False, "mask_min_space": 1, "mask_channel_length": 10, "mask_channel_prob": 0.0,
    "mask_channel_selection": "static", "mask_channel_other": 0.0, "no_mask_channel_overlap": False,
    "mask_channel_min_space": 1, "conv_pos": 128, "conv_pos_groups": 16, "conv_pos_batch_norm": False,
    "pos_conv_depth": 1, "skip_masked": False, "skip_nomask": False, "quantize_input": False,
    "attn_type": "", "adp_num": -1,
}

# fairseq field → speechssl HubertConfig field (same meaning, same units).
_SAME_FIELDS = (
    "extractor_mode", "conv_bias", "feature_grad_mult", "encoder_layers", "encoder_embed_dim",
    "encoder_ffn_embed_dim", "encoder_attention_heads", "layer_norm_first", "conv_pos", "conv_pos_groups",
    "dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop", "dropout_input",
    "dropout_features", "mask_prob", "mask_length", "mask_selection", "mask_other", "no_mask_overlap",
    "mask_min_space", "mask_channel_prob", "mask_channel_length", "mask_channel_selection",
    "mask_channel_other", "no_mask_channel_overlap", "mask_channel_min_space", "final_dim",
    "untie_final_proj", "target_glu", "logit_temp", "skip_masked", "skip_nomask",
)
_FLOAT_FIELDS = {"mask_other", "mask_channel_other", "feature_grad_mult", "dropout", "attention_dropout",
                 "activation_dropout", "encoder_layerdrop", "dropout_input", "dropout_features", "mask_prob",
                 "mask_channel_prob", "logit_temp"}

# fairseq activation name → speechssl's.
_ACTIVATIONS = {"gelu": "gelu", "gelu_accurate": "gelu_tanh", "relu": "relu", "swish": "swish"}

# Fields whose non-default values build something speechssl's upstream does not implement.
_REQUIRED_VALUES: dict[str, tuple[Any, str]] = {
    "layer_type": ("transformer", "conformer / adapter encoder layers"),
    "pos_conv_depth": (1, "a multi-layer positional convolution (data2vec 2.0 style)"),
    "conv_pos_batch_norm": (False, "a batch-normed positional convolution"),
    "quantize_input": (False, "quantized encoder inputs"),
    "attn_type": ("", "a non-default attention implementation"),
    "adp_num": (-1, "adapter layers"),
}


def parse_conv_layers(text: str | list | tuple, where: str) -> tuple[tuple[int, int, int], ...]:
    """fairseq's ``conv_feature_layers`` string (``"[(512,10,5)] + [(512,3,2)] * 4"``) without ``eval``.

    Only list/tuple literals of integers, ``+`` (concatenation) and ``* int`` (repetition) are accepted.
    """
    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [ev(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = ev(node.left), ev(node.right)
            if isinstance(left, list) and isinstance(right, list):
                return left + right
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            left, right = ev(node.left), ev(node.right)
            if isinstance(left, list) and isinstance(right, int):
                return left * right
            if isinstance(left, int) and isinstance(right, list):
                return right * left
        raise ValueError(ast.dump(node))

    if isinstance(text, (list, tuple)):
        value: Any = [tuple(x) for x in text]
    else:
        try:
            value = ev(ast.parse(str(text), mode="eval").body)
        except (SyntaxError, ValueError):
            raise HubError(f"{where}: cannot parse conv_feature_layers {text!r}: expected list literals of "
                           "(channels, kernel, stride) joined with + and * N") from None
    if not isinstance(value, list) or not value or not all(
            isinstance(t, tuple) and len(t) == 3 and all(isinstance(v, int) for v in t) for t in value):
        raise HubError(f"{where}: conv_feature_layers must be a list of (channels, kernel, stride), got {text!r}")
    return tuple(value)


def _as_dict(cfg: Any, what: str, where: str) -> dict[str, Any]:
    if cfg is None:
        return {}
    if isinstance(cfg, argparse.Namespace):
        return dict(vars(cfg))
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise HubError(f"{where}: {what} is a {type(cfg).__module__}.{type(cfg).__name__}; expected a dict "
                   "or argparse.Namespace (re-save the checkpoint with a fairseq whose Trainer stores "
                   "cfg as a plain container)")


def _split_cfg(obj: Mapping[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model_cfg, task_cfg)`` from a hydra ``cfg`` dict or a legacy flat ``args`` Namespace."""
    cfg = obj.get("cfg")
    if cfg is not None:
        cfg = _as_dict(cfg, "cfg", where)
        return _as_dict(cfg.get("model"), "cfg.model", where), _as_dict(cfg.get("task"), "cfg.task", where)
    args = obj.get("args")
    if args is None:
        raise HubError(f"{where}: fairseq checkpoint has neither 'cfg' nor 'args'; cannot tell its model")
    flat = _as_dict(args, "args", where)
    model = dict(flat)
    model.setdefault("_name", flat.get("arch"))
    return model, flat


def fairseq_model_config(model_cfg: Mapping[str, Any], task_cfg: Mapping[str, Any], where: str
                         ) -> dict[str, Any]:
    """A speechssl trunk config dict (HuBERT head fields included) from fairseq's model and task config.

    Raises:
        HubError: a field whose value needs an architecture speechssl does not implement.
    """
    def get(name: str) -> Any:
        value = model_cfg.get(name)
        return _DEFAULTS[name] if value is None else value

    for name, (required, what) in _REQUIRED_VALUES.items():
        value = get(name)
        if value != required and not (name == "attn_type" and value in ("", None)):
            raise HubError(f"{where}: model.{name}={value!r} ({what}) is not supported by speechssl's "
                           f"upstream; only {name}={required!r} converts")
    out: dict[str, Any] = {}
    for name in _SAME_FIELDS:
        value = get(name)
        out[name] = float(value) if name in _FLOAT_FIELDS else value
    act = get("activation_fn")
    if act not in _ACTIVATIONS:
        raise HubError(f"{where}: model.activation_fn={act!r} is not supported; known: {', '.join(_ACTIVATIONS)}")
    out["activation_fn"] = _ACTIVATIONS[act]
    out["conv_feature_layers"] = [list(t) for t in parse_conv_layers(get("conv_feature_layers"), where)]
    out["normalize"] = bool(task_cfg.get("normalize", False))
    out["layer_norm_eps"] = 1e-5  # fairseq's LayerNorm default everywhere in this model
    return out


def _map_state(state: Mapping[str, Any], prefix: str, where: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    kept: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    for key, value in state.items():
        if key.startswith("w2v_encoder.proj."):
            dropped.append(key)
            continue
        if prefix:
            if not key.startswith(prefix):
                unknown.append(key)
                continue
            key = key[len(prefix):]
        for pattern, _why in _DROPPED_RE:
            if pattern.match(key):
                dropped.append(key)
                break
        else:
            for pattern, repl in _KEPT_RE:
                if pattern.match(key):
                    if not isinstance(value, torch.Tensor):
                        raise HubError(f"{where}: model.{prefix}{key} is a {type(value).__name__}, not a tensor")
                    kept[pattern.sub(repl, key)] = value
                    break
            else:
                unknown.append(prefix + key)
    if unknown:
        shown = ", ".join(unknown[:12]) + (f", ... ({len(unknown) - 12} more)" if len(unknown) > 12 else "")
        raise HubError(f"{where}: {len(unknown)} fairseq parameter(s) with no speechssl counterpart: {shown}. "
                       "They would change the model's outputs, so the conversion stops rather than drop them")
    return kept, dropped


class FairseqConverter:
    """``Method.converters["fairseq"]`` of a method built on the wav2vec 2.0 / HuBERT trunk.

    Args:
        config_cls: the method's config dataclass; the converted config keeps only its fields
            (fairseq fields of other heads are dropped).
        models: fairseq model name (``cfg.model._name`` / ``args.arch``) → True for a fine-tuned
            wrapper whose encoder sits under ``w2v_encoder.w2v_model.`` (``hubert_ctc``).
    """

    @property
    def reader(self) -> Any:
        """The format's reader module (this one), for the hub."""
        return sys.modules[__name__]

    def __init__(self, config_cls: type, models: Mapping[str, bool]) -> None:
        if not models:
            raise ValueError("models is empty: name the fairseq model(s) this method reads")
        self.config_cls = config_cls
        self.models = dict(models)

    def config_fields(self, config: dict[str, Any]) -> dict[str, Any]:
        """``config`` restricted to the fields of :attr:`config_cls`."""
        names = {f.name for f in dataclasses.fields(self.config_cls)}
        return {k: v for k, v in config.items() if k in names}


def fairseq_models() -> dict[str, Method]:
    """fairseq model name → the registered method that reads it (first registered wins)."""
    found: dict[str, Method] = {}
    for method in methods_with_converter("fairseq"):
        for name in method.converters["fairseq"].models:
            found.setdefault(name, method)
    return found


def read_fairseq(path: str | Path, obj: Mapping[str, Any]) -> WeightsRecord:
    """Convert an unpickled fairseq checkpoint (read from ``path``) into a speechssl record.

    Raises:
        HubError: unknown model type, unsupported architecture options, or unknown parameters.
    """
    where = str(path)
    model_cfg, task_cfg = _split_cfg(obj, where)
    name = model_cfg.get("_name")
    readers = fairseq_models()
    if name not in readers:
        raise HubError(f"{where}: fairseq model {name!r} is not convertible; supported: "
                       f"{', '.join(sorted(readers)) or '(none registered)'}")
    spec = readers[name]
    converter: FairseqConverter = spec.converters["fairseq"]
    method, finetuned = spec.name, converter.models[name]
    prefix = ""
    if finetuned:
        w2v_args = model_cfg.get("w2v_args")
        if w2v_args is None:
            raise HubError(f"{where}: fine-tuned fairseq model {name!r} has no w2v_args (the pretrained "
                           "model's config); convert the pretrained checkpoint instead")
        model_cfg, task_cfg = _split_cfg({"cfg": w2v_args} if not isinstance(w2v_args, argparse.Namespace)
                                         else {"args": w2v_args}, where)
        prefix = _FINETUNED_PREFIX
    state = obj.get("model")
    if not isinstance(state, Mapping):
        raise HubError(f"{where}: 'model' must be a state dict, got {type(state).__name__}")
    config = converter.config_fields(fairseq_model_config(model_cfg, task_cfg, where))
    tensors, dropped = _map_state(state, prefix, where)
    if dropped:
        _log.info("%s: dropped %d pretraining/fine-tuning-only parameter(s): %s", where, len(dropped),
                  ", ".join(dropped))
    source: dict[str, Any] = {"format": "fairseq", "path": where, "fairseq_model": name, "dropped": dropped}
    history = obj.get("optimizer_history")
    if isinstance(history, list) and history and isinstance(history[-1], Mapping):
        updates = history[-1].get("num_updates")
        if isinstance(updates, int):
            source["num_updates"] = updates
    return WeightsRecord(method=method, config=config, state_dict=tensors, source=source)


def claims_checkpoint(obj: Any) -> bool:
    """Reader protocol: whether an unpickled ``.pt`` is a fairseq checkpoint."""
    return isinstance(obj, dict) and "model" in obj and ("cfg" in obj or "args" in obj)


def read_checkpoint(path: Path, obj: Mapping[str, Any]) -> WeightsRecord:
    """Reader protocol: :func:`read_fairseq`."""
    return read_fairseq(path, obj)
