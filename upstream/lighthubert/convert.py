"""Reader of the official LightHuBERT checkpoints (mechanicalsea/lighthubert, ``lighthubert_*.pt``).

An official checkpoint is a fairseq-style dict ``{"cfg": {"model": {...}}, "model": state}``
with ``cfg.model._name`` ``hubert_pruner`` (stage 2, a supernet; ``pruner_supernet`` names
``small.yaml`` or ``base.yaml``) or ``student_hubert`` (stage 1, the full student). The
converted model runs the subnet the official s3prl expert runs: the released subnet of the
space (:data:`~speechssl.upstream.lighthubert.config.NAMED_SUBNETS`) for a pruner, the largest
for a student. As the official expert, waveforms are layer-normalised (``normalize=True``).

Parameters map one to one through :data:`_KEPT` (the official names are fairseq's); the
distillation heads (``layer_pred_heads.*``) and HuBERT's unit heads are dropped; any other key
is an error naming it.

Reader protocol (``speechssl._hub.sources``): format ``lighthubert`` —
``hub.load(path, fmt="lighthubert")``.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from speechssl.config import to_dict
from speechssl.convert.fairseq import fairseq_model_config
from speechssl._hub.modeldir import HubError, WeightsRecord
from speechssl.upstream.lighthubert.config import NAMED_SUBNETS, LightHubertConfig, base, small

__all__ = ["DESCRIPTION", "OFFICIAL_MODELS", "claims_checkpoint", "read_checkpoint", "convert_official",
           "LightHubertConverter"]

_log = logging.getLogger(__name__)

DESCRIPTION = "an official LightHuBERT checkpoint ('cfg.model._name' hubert_pruner or student_hubert)"
OFFICIAL_MODELS = ("hubert_pruner", "student_hubert")

# LightHuBERTConfig's own defaults where they differ from fairseq HuBERT's (official lighthubert.py)
_OFFICIAL_DEFAULTS: dict[str, Any] = {"extractor_mode": "layer_norm", "mask_prob": 0.65}

_LAYER = r"encoder\.layers\.\d+\."
_KEPT = [re.compile(p) for p in (
    r"feature_extractor\.conv_layers\.\d+\.0\.(weight|bias)$",
    r"feature_extractor\.conv_layers\.\d+\.2\.(1\.)?(weight|bias)$",
    r"layer_norm\.(weight|bias)$", r"post_extract_proj\.(weight|bias)$", r"mask_emb$",
    r"encoder\.pos_conv\.0\.(weight_g|weight_v|bias)$",
    _LAYER + r"self_attn\.(q|k|v|out)_proj\.(weight|bias)$",
    _LAYER + r"(self_attn_layer_norm|final_layer_norm|fc1|fc2)\.(weight|bias)$",
    r"encoder\.layer_norm\.(weight|bias)$",
)]
_RENAMED = {"encoder.pos_conv.0.parametrizations.weight.original0": "encoder.pos_conv.0.weight_g",
            "encoder.pos_conv.0.parametrizations.weight.original1": "encoder.pos_conv.0.weight_v"}
_DROPPED = [re.compile(p) for p in (r"layer_pred_heads\.", r"label_embs_concat$", r"final_proj\.")]


def _model_cfg(obj: Mapping[str, Any], where: str) -> dict[str, Any]:
    cfg = obj.get("cfg")
    model = cfg.get("model") if isinstance(cfg, Mapping) else None
    if not isinstance(model, Mapping):
        raise HubError(f"{where}: no cfg.model mapping; not an official LightHuBERT checkpoint")
    return dict(model)


def convert_official(obj: Mapping[str, Any], where: str = "checkpoint") -> tuple[LightHubertConfig, dict[str, torch.Tensor], list[str]]:
    """Config, state dict and dropped keys of an official LightHuBERT checkpoint dict.

    Raises:
        HubError: not a LightHuBERT checkpoint, an architecture speechssl does not implement, or
            a parameter with no counterpart (named).
    """
    model_cfg = _model_cfg(obj, where)
    name = model_cfg.get("_name")
    if name not in OFFICIAL_MODELS:
        raise HubError(f"{where}: cfg.model._name={name!r}; an official LightHuBERT checkpoint has one of "
                       f"{', '.join(OFFICIAL_MODELS)}")
    merged = {**_OFFICIAL_DEFAULTS, **{k: v for k, v in model_cfg.items() if v is not None}}
    fields = fairseq_model_config(merged, {"normalize": True}, where)
    kind = "base"
    if name == "hubert_pruner" and str(model_cfg.get("pruner_supernet", "")).lower().endswith("small.yaml"):
        kind = "small"
    space = small() if kind == "small" else base()
    trunk = {k: v for k, v in fields.items() if k in LightHubertConfig.__dataclass_fields__}
    trunk["encoder_layerdrop"] = 0.0  # the official expert disables it for inference
    trunk["conv_feature_layers"] = tuple(tuple(t) for t in trunk["conv_feature_layers"])
    config = LightHubertConfig(**trunk, space_embed_dims=space.space_embed_dims, space_heads=space.space_heads,
                               space_ffn_ratios=space.space_ffn_ratios, space_layers=space.space_layers)
    if config.encoder_embed_dim < max(config.space_embed_dims):
        # a supernet narrower than its space's maximum: bound the space by the supernet (as the official code must)
        config.space_embed_dims = tuple(e for e in config.space_embed_dims if e <= config.encoder_embed_dim)
        config.space_heads = tuple(h for h in config.space_heads if h <= config.encoder_attention_heads)
    subnet = NAMED_SUBNETS[kind] if name == "hubert_pruner" else config.search_space.max()
    config = config.with_subnet(subnet)
    try:
        config.validate()
    except ValueError as err:
        raise HubError(f"{where}: {err}") from None
    state = obj.get("model")
    if not isinstance(state, Mapping):
        raise HubError(f"{where}: 'model' must be a state dict, got {type(state).__name__}")
    kept: dict[str, torch.Tensor] = {}
    dropped, unknown = [], []
    for key, value in state.items():
        key = _RENAMED.get(key, key)
        if any(p.match(key) for p in _DROPPED):
            dropped.append(key)
        elif any(p.match(key) for p in _KEPT):
            if not isinstance(value, torch.Tensor):
                raise HubError(f"{where}: model.{key} is a {type(value).__name__}, not a tensor")
            kept[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise HubError(f"{where}: {len(unknown)} LightHuBERT parameter(s) with no speechssl counterpart: "
                       f"{', '.join(unknown[:12])}")
    return config, kept, dropped


def claims_checkpoint(obj: Any) -> bool:
    """Reader protocol: an unpickled ``.pt`` whose ``cfg.model._name`` is an official LightHuBERT model."""
    if not (isinstance(obj, dict) and "model" in obj and isinstance(obj.get("cfg"), Mapping)):
        return False
    model = obj["cfg"].get("model")
    return isinstance(model, Mapping) and model.get("_name") in OFFICIAL_MODELS


def read_checkpoint(path: Path, obj: Mapping[str, Any]) -> WeightsRecord:
    """Reader protocol: the :class:`WeightsRecord` of an official checkpoint."""
    config, state, dropped = convert_official(obj, str(path))
    if dropped:
        _log.info("%s: dropped %d distillation-head parameter(s)", path, len(dropped))
    source = {"format": "lighthubert", "path": str(path), "model": _model_cfg(obj, str(path)).get("_name"),
              "dropped": dropped}
    return WeightsRecord(method="lighthubert", config=to_dict(config), state_dict=state, source=source)


class LightHubertConverter:
    """``Method.converters["lighthubert"]``: the official checkpoint reader (this module)."""

    @property
    def reader(self) -> Any:
        import sys
        return sys.modules[__name__]
