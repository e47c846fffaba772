"""Convert between transformers ``Wav2Vec2BertModel`` (w2v-BERT 2.0) and :class:`W2vBertModel`.

``Method.converters["hf"]`` of ``w2v_bert`` is :data:`CONVERTER` (a :class:`W2vBertHFConverter`);
:mod:`speechssl.convert.hf` does the directory I/O (safetensors; ``pytorch_model.bin`` only through
the safe loader, which refuses pickled code). ``transformers`` is never imported here.

Key table (HF → speechssl; ``j`` layer, ``f`` ``ffn1``/``ffn2``)::

    masked_spec_embed                                     mask_emb
    feature_projection.{layer_norm,projection}.*          feature_projection.{layer_norm,projection}.*
    encoder.layers.j.f_layer_norm.*                       encoder.layers.j.f.layer_norm.*
    encoder.layers.j.f.intermediate_dense.*               encoder.layers.j.f.w_1.*
    encoder.layers.j.f.output_dense.*                     encoder.layers.j.f.w_2.*
    encoder.layers.j.self_attn_layer_norm.*               (same)
    encoder.layers.j.self_attn.linear_{q,k,v,out}.*       (same)
    encoder.layers.j.self_attn.distance_embedding.weight  (same; relative_key)
    encoder.layers.j.self_attn.{linear_pos.weight,pos_bias_u,pos_bias_v}   (same; relative)
    encoder.layers.j.conv_module.{layer_norm.*,pointwise_conv1.weight,depthwise_conv.weight,
        depthwise_layer_norm.*,pointwise_conv2.weight}    (same)
    encoder.layers.j.final_layer_norm.*                   (same)

Config: transformers has one stack of ``num_hidden_layers``; speechssl splits it into
``contrastive_layers`` (N) and ``mlm_layers`` (M). Reading, ``N = num_hidden_layers // 3``
(8 of 24, the 600M split) — it only matters for pretraining; writing, ``N + M``. The
quantizer/head fields keep :class:`W2vBertConfig`'s defaults (transformers' base model has no
quantizer). The front end is ``SeamlessM4TFeatureExtractor``'s (80 bins × stride 2): a
``feature_projection_input_dim`` other than ``2 · num_mel_bins`` for 80 bins is refused.
Adapters (``add_adapter``) and the intermediate FFN have no speechssl counterpart and are refused.

Hidden states: speechssl ``hidden_states[j]`` equals transformers' ``hidden_states[j]``
(``output_hidden_states=True``) for every ``j``, ``[0]`` being the projected features.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

import torch

from speechssl.upstream.w2v_bert.config import W2vBertConfig

__all__ = ["W2vBertHFConverter", "CONVERTER", "hf_config_to_speechssl", "speechssl_config_to_hf",
           "hf_key_table", "hf_to_speechssl", "speechssl_to_hf", "hf_feature_extractor_config", "MODEL_TYPE"]

_log = logging.getLogger(__name__)

MODEL_TYPE = "wav2vec2-bert"
_BASE_PREFIX = "wav2vec2_bert."

# transformers Wav2Vec2BertConfig defaults for fields a sparse config.json may omit
_HF_DEFAULTS: dict[str, Any] = {
    "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
    "feature_projection_input_dim": 160, "hidden_act": "swish", "hidden_dropout": 0.0, "activation_dropout": 0.0,
    "attention_dropout": 0.0, "feat_proj_dropout": 0.0, "layerdrop": 0.1, "layer_norm_eps": 1e-5,
    "mask_time_prob": 0.05, "mask_time_length": 10, "mask_time_min_masks": 2, "mask_feature_prob": 0.0,
    "add_adapter": False, "use_intermediate_ffn_before_adapter": False, "position_embeddings_type": "relative_key",
    "rotary_embedding_base": 10000, "left_max_position_embeddings": 64, "right_max_position_embeddings": 8,
    "conv_depthwise_kernel_size": 31, "conformer_conv_dropout": 0.1,
}
_HF_ACT = {"swish": "swish", "silu": "swish", "gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh",
           "gelu_pytorch_tanh": "gelu_tanh"}
_OUR_ACT = {"swish": "swish", "gelu": "gelu", "relu": "relu", "gelu_tanh": "gelu_new"}
_HF_POSITION = {"relative_key": "relative_key", "relative": "rel_pos", "rotary": "rotary", None: "none"}
_OUR_POSITION = {v: k for k, v in _HF_POSITION.items()}


def _hf(hf_config: Mapping[str, Any], key: str) -> Any:
    return hf_config.get(key, _HF_DEFAULTS.get(key))


def hf_config_to_speechssl(hf_config: Mapping[str, Any]) -> W2vBertConfig:
    """A :class:`W2vBertConfig` equivalent to a transformers ``Wav2Vec2BertConfig`` dict.

    Raises:
        ValueError: an option with no speechssl equivalent (named).
    """
    model_type = hf_config.get("model_type", MODEL_TYPE)
    if model_type != MODEL_TYPE:
        raise ValueError(f"expected model_type {MODEL_TYPE!r}, got {model_type!r}")
    for key in ("add_adapter", "use_intermediate_ffn_before_adapter"):
        if _hf(hf_config, key):
            raise ValueError(f"config.json sets {key}=true; speechssl's w2v-BERT has no adapter / intermediate FFN")
    act = _hf(hf_config, "hidden_act")
    if act not in _HF_ACT:
        raise ValueError(f"hidden_act {act!r} is not supported; supported: {', '.join(sorted(_HF_ACT))}")
    position = _hf(hf_config, "position_embeddings_type")
    if position not in _HF_POSITION:
        raise ValueError(f"position_embeddings_type {position!r} is not supported; supported: "
                         f"{', '.join(str(p) for p in _HF_POSITION)}")
    in_dim = int(_hf(hf_config, "feature_projection_input_dim"))
    if in_dim % 2:
        raise ValueError(f"feature_projection_input_dim {in_dim} is not 2 × mel bins (SeamlessM4T stride 2)")
    if float(_hf(hf_config, "mask_feature_prob")) > 0:
        _log.info("mask_feature_prob > 0 (channel masking) has no speechssl w2v-BERT counterpart; dropped")
    layers = int(_hf(hf_config, "num_hidden_layers"))
    contrastive = max(1, layers // 3)
    return W2vBertConfig(
        num_mel_bins=in_dim // 2, stack=2, fbank_normalize=True,
        encoder_embed_dim=int(_hf(hf_config, "hidden_size")),
        encoder_ffn_embed_dim=int(_hf(hf_config, "intermediate_size")),
        encoder_attention_heads=int(_hf(hf_config, "num_attention_heads")),
        contrastive_layers=contrastive, mlm_layers=layers - contrastive,
        depthwise_kernel_size=int(_hf(hf_config, "conv_depthwise_kernel_size")),
        conv_causal=True, conv_norm="layer_norm", position=_HF_POSITION[position],  # type: ignore[arg-type]
        left_max_distance=int(_hf(hf_config, "left_max_position_embeddings")),
        right_max_distance=int(_hf(hf_config, "right_max_position_embeddings")),
        rotary_base=float(_hf(hf_config, "rotary_embedding_base")),
        activation_fn=_HF_ACT[act], layer_norm_eps=float(_hf(hf_config, "layer_norm_eps")),
        dropout=float(_hf(hf_config, "hidden_dropout")), attention_dropout=float(_hf(hf_config, "attention_dropout")),
        activation_dropout=float(_hf(hf_config, "activation_dropout")),
        dropout_input=float(_hf(hf_config, "feat_proj_dropout")), encoder_layerdrop=float(_hf(hf_config, "layerdrop")),
        mask_prob=float(_hf(hf_config, "mask_time_prob")), mask_length=int(_hf(hf_config, "mask_time_length")),
        mask_min_masks=int(_hf(hf_config, "mask_time_min_masks")),
    )


def speechssl_config_to_hf(config: W2vBertConfig) -> dict[str, Any]:
    """The transformers ``config.json`` dict of a :class:`W2vBertConfig`.

    Raises:
        ValueError: a layout transformers cannot express (centred or batch-norm conv module, conv
            subsampling front end, stack ≠ 2).
    """
    c = config
    if not c.conv_causal or c.conv_norm != "layer_norm":
        raise ValueError("transformers' Wav2Vec2BertModel has a causal depthwise conv with layer norm; this model "
                         f"has conv_causal={c.conv_causal}, conv_norm={c.conv_norm!r}")
    if c.frontend != "stack":
        raise ValueError(f"transformers' Wav2Vec2BertModel takes stacked fbank frames; this model has "
                         f"frontend={c.frontend!r} (conv subsampling), which it cannot express")
    if c.stack != 2:
        raise ValueError(f"SeamlessM4TFeatureExtractor stacks 2 fbank frames; this model stacks {c.stack}")
    if c.activation_fn not in _OUR_ACT:
        raise ValueError(f"activation_fn {c.activation_fn!r} has no transformers name")
    return {
        "model_type": MODEL_TYPE, "architectures": ["Wav2Vec2BertModel"],
        "hidden_size": c.encoder_embed_dim, "num_hidden_layers": c.encoder_layers,
        "num_attention_heads": c.encoder_attention_heads, "intermediate_size": c.encoder_ffn_embed_dim,
        "feature_projection_input_dim": c.num_mel_bins * c.stack, "hidden_act": _OUR_ACT[c.activation_fn],
        "hidden_dropout": c.dropout, "attention_dropout": c.attention_dropout,
        "activation_dropout": c.activation_dropout, "feat_proj_dropout": c.dropout_input,
        "conformer_conv_dropout": c.dropout, "layerdrop": c.encoder_layerdrop, "layer_norm_eps": c.layer_norm_eps,
        "mask_time_prob": c.mask_prob, "mask_time_length": c.mask_length, "mask_time_min_masks": c.mask_min_masks,
        "mask_feature_prob": 0.0, "apply_spec_augment": True, "add_adapter": False,
        "use_intermediate_ffn_before_adapter": False, "position_embeddings_type": _OUR_POSITION[c.position],
        "rotary_embedding_base": int(c.rotary_base), "left_max_position_embeddings": c.left_max_distance,
        "right_max_position_embeddings": c.right_max_distance, "conv_depthwise_kernel_size": c.depthwise_kernel_size,
    }


def hf_feature_extractor_config(config: W2vBertConfig) -> dict[str, Any]:
    """transformers ``preprocessor_config.json`` (``SeamlessM4TFeatureExtractor``) for ``config``."""
    return {"feature_extractor_type": "SeamlessM4TFeatureExtractor", "feature_size": config.num_mel_bins,
            "num_mel_bins": config.num_mel_bins, "sampling_rate": 16000, "stride": config.stack,
            "padding_value": 0.0, "padding_side": "right", "return_attention_mask": True}


def hf_key_table(config: W2vBertConfig) -> dict[str, str]:
    """Every transformers ``Wav2Vec2BertModel`` key of ``config`` → its speechssl key."""
    table = {"masked_spec_embed": "mask_emb"}
    for mod in ("layer_norm", "projection"):
        for p in ("weight", "bias"):
            table[f"feature_projection.{mod}.{p}"] = f"feature_projection.{mod}.{p}"
    wb = ("weight", "bias")
    for j in range(config.encoder_layers):
        hf, ours = f"encoder.layers.{j}.", f"encoder.layers.{j}."
        for f in ("ffn1", "ffn2"):
            for p in wb:
                table[f"{hf}{f}_layer_norm.{p}"] = f"{ours}{f}.layer_norm.{p}"
                table[f"{hf}{f}.intermediate_dense.{p}"] = f"{ours}{f}.w_1.{p}"
                table[f"{hf}{f}.output_dense.{p}"] = f"{ours}{f}.w_2.{p}"
        same = [f"self_attn_layer_norm.{p}" for p in wb] + [f"final_layer_norm.{p}" for p in wb]
        same += [f"self_attn.linear_{n}.{p}" for n in ("q", "k", "v", "out") for p in wb]
        same += [f"conv_module.layer_norm.{p}" for p in wb] + [f"conv_module.depthwise_layer_norm.{p}" for p in wb]
        same += ["conv_module.pointwise_conv1.weight", "conv_module.depthwise_conv.weight",
                 "conv_module.pointwise_conv2.weight"]
        if config.position == "relative_key":
            same.append("self_attn.distance_embedding.weight")
        elif config.position == "rel_pos":
            same += ["self_attn.linear_pos.weight", "self_attn.pos_bias_u", "self_attn.pos_bias_v"]
        for name in same:
            table[hf + name] = ours + name
    return table


def _check_keys(found: set[str], expected: set[str], what: str) -> None:
    unknown, missing = sorted(found - expected), sorted(expected - found)
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"unexpected keys ({len(unknown)}): {', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''}")
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
        raise ValueError(f"{what}: " + "; ".join(parts))


def _check_shapes(config: W2vBertConfig, state: Mapping[str, torch.Tensor]) -> None:
    from speechssl.upstream.w2v_bert.model import W2vBertModel

    with torch.device("meta"):
        reference = W2vBertModel(config).state_dict()
    _check_keys(set(state), set(reference), "converted state dict")
    for key, ref in reference.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise ValueError(f"{key}: expected shape {tuple(ref.shape)} for this config, got {tuple(state[key].shape)}")


def hf_to_speechssl(hf_state_dict: Mapping[str, torch.Tensor], hf_config: Mapping[str, Any], *,
                    normalize: bool | None = None, drop_heads: bool = False
                    ) -> tuple[W2vBertConfig, dict[str, torch.Tensor]]:
    """Convert a transformers ``Wav2Vec2BertModel`` (or a task class holding it under ``wav2vec2_bert.``).

    Args:
        hf_state_dict: the transformers state dict.
        hf_config: the ``config.json`` dict.
        normalize: ignored (``preprocessor_config.json``'s ``do_normalize`` is a waveform option the
            SeamlessM4T extractor does not have; its fbank normalisation is always on).
        drop_heads: drop keys outside the base model (CTC / classification heads) instead of raising.

    Returns:
        the config and a state dict ``W2vBertModel(config).load_state_dict`` accepts strictly.

    Raises:
        ValueError: unknown or missing keys (named), wrong shapes, unsupported options.
    """
    config = hf_config_to_speechssl(hf_config)
    state = dict(hf_state_dict)
    if any(k.startswith(_BASE_PREFIX) for k in state):
        heads = sorted(k for k in state if not k.startswith(_BASE_PREFIX))
        if heads and not drop_heads:
            raise ValueError(f"keys outside the base model ({', '.join(heads[:8])}); pass drop_heads=True")
        state = {k[len(_BASE_PREFIX):]: v for k, v in state.items() if k.startswith(_BASE_PREFIX)}
    table = hf_key_table(config)
    _check_keys(set(state), set(table) - ({"masked_spec_embed"} - set(state)), "transformers state dict")
    out = {table[k]: v for k, v in state.items()}
    if "mask_emb" not in out:
        _log.info("no masked_spec_embed in the transformers model (no masking configured); mask_emb set to zeros")
        out["mask_emb"] = torch.zeros(config.encoder_embed_dim, dtype=out["feature_projection.projection.weight"].dtype)
    _check_shapes(config, out)
    return config, out


def speechssl_to_hf(config: W2vBertConfig, state_dict: Mapping[str, torch.Tensor]
                    ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Convert a :class:`W2vBertModel` (or a pretraining model: its ``upstream.`` keys) to transformers.

    Returns:
        the ``config.json`` dict and a state dict ``transformers.Wav2Vec2BertModel`` loads strictly
        (``masked_spec_embed`` is written only when ``mask_prob > 0``, as transformers creates it).
    """
    state = dict(state_dict)
    if any(k.startswith("upstream.") for k in state):
        state = {k[len("upstream."):]: v for k, v in state.items() if k.startswith("upstream.")}
    hf_config = speechssl_config_to_hf(config)
    _check_shapes(config, state)
    inverse = {ours: hf for hf, ours in hf_key_table(config).items()}
    if config.mask_prob <= 0:
        inverse.pop("mask_emb")
    out = {inverse[k]: v for k, v in state.items() if k in inverse}
    return hf_config, out


class W2vBertHFConverter:
    """``Method.converters["hf"]`` of ``w2v_bert`` (the protocol :mod:`speechssl.convert.hf` calls).

    Attributes:
        model_types: ``{"wav2vec2-bert": "Wav2Vec2BertModel"}``.
        export_type: ``"wav2vec2-bert"``.
        base_prefix: ``{"wav2vec2-bert": "wav2vec2_bert."}`` (transformers' task classes).
    """

    model_types = {MODEL_TYPE: "Wav2Vec2BertModel"}
    export_type = MODEL_TYPE
    base_prefix = {MODEL_TYPE: _BASE_PREFIX}

    @property
    def reader(self) -> Any:
        """The format's reader module (:mod:`speechssl.convert.hf`)."""
        from speechssl.convert import hf

        return hf

    def hf_to_speechssl(self, hf_state_dict: Mapping[str, torch.Tensor], hf_config: Mapping[str, Any], *,
                        normalize: bool | None = None, drop_heads: bool = True
                        ) -> tuple[W2vBertConfig, dict[str, torch.Tensor]]:
        """:func:`hf_to_speechssl`."""
        return hf_to_speechssl(hf_state_dict, hf_config, normalize=normalize, drop_heads=drop_heads)

    def speechssl_to_hf(self, config: W2vBertConfig, state_dict: Mapping[str, torch.Tensor]
                        ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """:func:`speechssl_to_hf`."""
        return speechssl_to_hf(config, state_dict)

    def hf_feature_extractor_config(self, config: W2vBertConfig) -> dict[str, Any]:
        """:func:`hf_feature_extractor_config`."""
        return hf_feature_extractor_config(config)


CONVERTER = W2vBertHFConverter()
