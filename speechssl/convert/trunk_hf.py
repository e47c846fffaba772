"""Convert between Hugging Face ``transformers`` HuBERT / wav2vec 2.0 models and the speechssl trunk.

``transformers``' ``HubertModel`` and ``Wav2Vec2Model`` share one architecture with speechssl's
:class:`~speechssl.nn.trunk.Wav2Vec2Trunk` (conv encoder + transformer), so a model converts by
renaming keys through an explicit table built from the config (:func:`hf_key_table`), in both
directions:

    cfg, state = hf_to_speechssl(hf_state_dict, hf_config_dict, config_cls=TrunkConfig)
    hf_config, hf_state = speechssl_to_hf(cfg, model.state_dict(), model_type="hubert")

A method built on the trunk registers a :class:`TrunkHFConverter` naming its transformers
model type(s) as ``Method.converters["hf"]``; :mod:`speechssl.convert.hf` finds it there.

Only plain dicts and tensors cross this module; ``transformers`` is never imported here, so
the converter works without it (the hub writes the directory files).

Key table (HF → speechssl; ``i`` conv layer, ``j`` transformer layer)::

    feature_extractor.conv_layers.i.conv.{weight,bias}     feature_extractor.conv_layers.i.0.{weight,bias}
    feature_extractor.conv_layers.0.layer_norm.*  (group)  feature_extractor.conv_layers.0.2.*
    feature_extractor.conv_layers.i.layer_norm.*  (layer)  feature_extractor.conv_layers.i.2.1.*
    feature_projection.layer_norm.*                        layer_norm.*
    feature_projection.projection.*                        post_extract_proj.*
    masked_spec_embed                                      mask_emb
    encoder.pos_conv_embed.conv.weight_g | ...parametrizations.weight.original0   encoder.pos_conv.0.weight_g
    encoder.pos_conv_embed.conv.weight_v | ...parametrizations.weight.original1   encoder.pos_conv.0.weight_v
    encoder.pos_conv_embed.conv.bias                       encoder.pos_conv.0.bias
    encoder.layer_norm.*                                   encoder.layer_norm.*
    encoder.layers.j.attention.{q,k,v,out}_proj.*          encoder.layers.j.self_attn.{q,k,v,out}_proj.*
    encoder.layers.j.layer_norm.*                          encoder.layers.j.self_attn_layer_norm.*
    encoder.layers.j.feed_forward.intermediate_dense.*     encoder.layers.j.fc1.*
    encoder.layers.j.feed_forward.output_dense.*           encoder.layers.j.fc2.*
    encoder.layers.j.final_layer_norm.*                    encoder.layers.j.final_layer_norm.*

The speechssl names are fairseq's, so a fairseq HuBERT state dict maps to a speechssl one by
dropping ``final_proj``/``label_embs_concat`` (or loading them into ``HubertPretrainModel``).

Hidden-state convention: speechssl's ``hidden_states[j]`` equals transformers'
``hidden_states[j]`` for ``j < L``; the last one equals ``last_hidden_state`` (for
``do_stable_layer_norm`` models transformers 5 returns the pre-LayerNorm state as
``hidden_states[L]``; speechssl, fairseq and transformers 4 give the normalised one).
"""
from __future__ import annotations

import logging
from typing import Any, Literal, Mapping, Sequence

import torch

from speechssl.nn.trunk import TrunkConfig, Wav2Vec2Trunk

__all__ = ["hf_to_speechssl", "speechssl_to_hf", "hf_config_to_speechssl", "speechssl_config_to_hf",
           "hf_key_table", "hf_feature_extractor_config", "WeightNormNaming", "TRUNK_MODEL_TYPES",
           "TrunkHFConverter"]

logger = logging.getLogger(__name__)

WeightNormNaming = Literal["parametrizations", "legacy"]

#: transformers model types that are this trunk (conv encoder + transformer), with their base class name.
TRUNK_MODEL_TYPES: dict[str, str] = {"hubert": "HubertModel", "wav2vec2": "Wav2Vec2Model"}

# Prefixes the task-specific transformers classes put before the base model's keys.
_BASE_PREFIXES = ("hubert.", "wav2vec2.")

# transformers defaults (TrunkConfig / Wav2Vec2Config) for fields a sparse config.json may omit.
_HF_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "hidden_act": "gelu", "hidden_dropout": 0.1, "activation_dropout": 0.1, "attention_dropout": 0.1,
    "feat_proj_dropout": 0.0, "layerdrop": 0.1, "layer_norm_eps": 1e-5, "feat_extract_norm": "group",
    "feat_extract_activation": "gelu", "conv_dim": (512,) * 7, "conv_stride": (5, 2, 2, 2, 2, 2, 2),
    "conv_kernel": (10, 3, 3, 3, 3, 2, 2), "conv_bias": False, "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16, "do_stable_layer_norm": False, "mask_time_prob": 0.05,
    "mask_time_length": 10, "mask_time_min_masks": 2, "mask_feature_prob": 0.0, "mask_feature_length": 10,
    "feat_proj_layer_norm": True, "conv_pos_batch_norm": False, "add_adapter": False, "adapter_attn_dim": None,
}

_HF_ACT = {"gelu": "gelu", "relu": "relu", "swish": "swish", "silu": "swish", "gelu_new": "gelu_tanh",
           "gelu_pytorch_tanh": "gelu_tanh"}
_OUR_ACT = {"gelu": "gelu", "relu": "relu", "swish": "swish", "gelu_tanh": "gelu_new"}

_WN_PARAM = {"parametrizations": ("parametrizations.weight.original0", "parametrizations.weight.original1"),
             "legacy": ("weight_g", "weight_v")}


def _hf(hf_config: Mapping[str, Any], key: str) -> Any:
    return hf_config.get(key, _HF_DEFAULTS.get(key))


def hf_config_to_speechssl(hf_config: Mapping[str, Any], *, normalize: bool | None = None,
                           config_cls: type[TrunkConfig] = TrunkConfig) -> TrunkConfig:
    """A trunk config (``config_cls``) equivalent to a transformers ``TrunkConfig``/``Wav2Vec2Config`` dict.

    Args:
        hf_config: the contents of ``config.json``.
        normalize: whether inputs are layer-normalised waveforms (transformers keeps this in the
            feature extractor's ``do_normalize``). None: True for ``feat_extract_norm == "layer"``
            models, as fairseq pairs them.
        config_cls: the config class to build (:class:`TrunkConfig` or a method's subclass).

    Raises:
        ValueError: a model type or option with no speechssl equivalent (naming it).
    """
    model_type = hf_config.get("model_type", "hubert")
    if model_type not in TRUNK_MODEL_TYPES:
        raise ValueError(f"cannot convert transformers model_type {model_type!r}; supported: "
                         f"{', '.join(TRUNK_MODEL_TYPES)}")
    unsupported = {
        "feat_proj_layer_norm": (False, "a feature projection without LayerNorm"),
        "conv_pos_batch_norm": (True, "a batch-norm position convolution"),
        "add_adapter": (True, "an output adapter"),
    }
    for key, (bad, what) in unsupported.items():
        if _hf(hf_config, key) == bad:
            raise ValueError(f"transformers config has {key}={bad} ({what}); the speechssl trunk has no equivalent")
    if _hf(hf_config, "adapter_attn_dim") is not None:
        raise ValueError("transformers config has adapter_attn_dim set (attention adapters); not supported")
    if _hf(hf_config, "feat_extract_activation") != "gelu":
        raise ValueError(f"feat_extract_activation must be 'gelu', got {_hf(hf_config, 'feat_extract_activation')!r}")
    act = _hf(hf_config, "hidden_act")
    if act not in _HF_ACT:
        raise ValueError(f"hidden_act {act!r} has no speechssl equivalent; supported: {', '.join(_HF_ACT)}")
    norm = _hf(hf_config, "feat_extract_norm")
    if norm not in ("group", "layer"):
        raise ValueError(f"feat_extract_norm must be 'group' or 'layer', got {norm!r}")
    dims, kernels, strides = (list(_hf(hf_config, k)) for k in ("conv_dim", "conv_kernel", "conv_stride"))
    if not len(dims) == len(kernels) == len(strides):
        raise ValueError(f"conv_dim, conv_kernel and conv_stride differ in length: {dims}, {kernels}, {strides}")
    hidden = int(_hf(hf_config, "hidden_size"))
    if dims[-1] == hidden:
        raise ValueError(f"conv_dim[-1] equals hidden_size ({hidden}): transformers then still has a feature "
                         "projection, which fairseq/speechssl omit; this model cannot be converted exactly")
    return config_cls(
        extractor_mode="default" if norm == "group" else "layer_norm",
        conv_feature_layers=tuple((int(c), int(k), int(s)) for c, k, s in zip(dims, kernels, strides)),
        conv_bias=bool(_hf(hf_config, "conv_bias")),
        normalize=(norm == "layer") if normalize is None else bool(normalize),
        encoder_layers=int(_hf(hf_config, "num_hidden_layers")),
        encoder_embed_dim=hidden,
        encoder_ffn_embed_dim=int(_hf(hf_config, "intermediate_size")),
        encoder_attention_heads=int(_hf(hf_config, "num_attention_heads")),
        activation_fn=_HF_ACT[act],  # type: ignore[arg-type]
        layer_norm_first=bool(_hf(hf_config, "do_stable_layer_norm")),
        layer_norm_eps=float(_hf(hf_config, "layer_norm_eps")),
        conv_pos=int(_hf(hf_config, "num_conv_pos_embeddings")),
        conv_pos_groups=int(_hf(hf_config, "num_conv_pos_embedding_groups")),
        dropout=float(_hf(hf_config, "hidden_dropout")),
        attention_dropout=float(_hf(hf_config, "attention_dropout")),
        activation_dropout=float(_hf(hf_config, "activation_dropout")),
        encoder_layerdrop=float(_hf(hf_config, "layerdrop")),
        dropout_input=float(_hf(hf_config, "feat_proj_dropout")),
        mask_prob=float(_hf(hf_config, "mask_time_prob")),
        mask_length=int(_hf(hf_config, "mask_time_length")),
        mask_min_masks=int(_hf(hf_config, "mask_time_min_masks")),
        mask_channel_prob=float(_hf(hf_config, "mask_feature_prob")),
        mask_channel_length=int(_hf(hf_config, "mask_feature_length")),
    )


def speechssl_config_to_hf(config: TrunkConfig, *, model_type: str = "hubert") -> dict[str, Any]:
    """The transformers ``config.json`` dict of a speechssl HuBERT config (``model_type`` hubert or wav2vec2).

    Raises:
        ValueError: an option transformers cannot express (e.g. no feature projection).
    """
    if model_type not in TRUNK_MODEL_TYPES:
        raise ValueError(f"model_type must be one of {', '.join(TRUNK_MODEL_TYPES)}, got {model_type!r}")
    c = config
    if tuple(c.encoder_position) != ("conv",):
        raise ValueError(f"encoder_position={tuple(c.encoder_position)}: transformers' HuBERT / wav2vec 2.0 have "
                         "only the convolutional position embedding")
    if c.conv_feature_layers[-1][0] == c.encoder_embed_dim:
        raise ValueError("conv channels equal encoder_embed_dim, so this model has no post_extract_proj; "
                         "transformers always has one, so it cannot be expressed exactly")
    if c.mask_selection != "static" or c.no_mask_overlap:
        logger.info("transformers masks with static overlapping spans; mask_selection/no_mask_overlap dropped")
    return {
        "model_type": model_type,
        "architectures": [TRUNK_MODEL_TYPES[model_type]],
        "feat_extract_norm": "group" if c.extractor_mode == "default" else "layer",
        "feat_extract_activation": "gelu",
        "conv_dim": [ch for ch, _, _ in c.conv_feature_layers],
        "conv_kernel": [k for _, k, _ in c.conv_feature_layers],
        "conv_stride": [s for _, _, s in c.conv_feature_layers],
        "num_feat_extract_layers": len(c.conv_feature_layers),
        "conv_bias": c.conv_bias,
        "hidden_size": c.encoder_embed_dim,
        "num_hidden_layers": c.encoder_layers,
        "num_attention_heads": c.encoder_attention_heads,
        "intermediate_size": c.encoder_ffn_embed_dim,
        "hidden_act": _OUR_ACT[c.activation_fn],
        "do_stable_layer_norm": c.layer_norm_first,
        "layer_norm_eps": c.layer_norm_eps,
        "num_conv_pos_embeddings": c.conv_pos,
        "num_conv_pos_embedding_groups": c.conv_pos_groups,
        "hidden_dropout": c.dropout,
        "attention_dropout": c.attention_dropout,
        "activation_dropout": c.activation_dropout,
        "layerdrop": c.encoder_layerdrop,
        "feat_proj_dropout": c.dropout_input,
        "feat_proj_layer_norm": True,
        "mask_time_prob": c.mask_prob,
        "mask_time_length": c.mask_length,
        "mask_time_min_masks": c.mask_min_masks,
        "mask_feature_prob": c.mask_channel_prob,
        "mask_feature_length": c.mask_channel_length,
        "apply_spec_augment": True,
    }


def hf_feature_extractor_config(config: TrunkConfig) -> dict[str, Any]:
    """transformers ``preprocessor_config.json`` (``Wav2Vec2FeatureExtractor``) matching ``config``."""
    return {
        "feature_extractor_type": "Wav2Vec2FeatureExtractor",
        "feature_size": 1,
        "sampling_rate": 16000,
        "padding_value": 0.0,
        "padding_side": "right",
        "do_normalize": config.normalize,
        # group-norm models give padding-dependent outputs in transformers: feed them unpadded
        "return_attention_mask": config.extractor_mode == "layer_norm",
    }


def _has_mask_emb(config: TrunkConfig) -> bool:
    # transformers creates masked_spec_embed only when some masking is configured
    return config.mask_prob > 0 or config.mask_channel_prob > 0


def hf_key_table(config: TrunkConfig, *, weight_norm: WeightNormNaming = "legacy") -> dict[str, str]:
    """Every transformers base-model key of ``config`` → its speechssl key.

    Args:
        config: the (speechssl) architecture.
        weight_norm: naming of the position-conv weight norm on the transformers side.
    """
    table: dict[str, str] = {}
    for i in range(len(config.conv_feature_layers)):
        params = ["weight", "bias"] if config.conv_bias else ["weight"]
        for p in params:
            table[f"feature_extractor.conv_layers.{i}.conv.{p}"] = f"feature_extractor.conv_layers.{i}.0.{p}"
        if config.extractor_mode == "layer_norm":
            for p in ("weight", "bias"):
                table[f"feature_extractor.conv_layers.{i}.layer_norm.{p}"] = f"feature_extractor.conv_layers.{i}.2.1.{p}"
        elif i == 0:
            for p in ("weight", "bias"):
                table[f"feature_extractor.conv_layers.0.layer_norm.{p}"] = f"feature_extractor.conv_layers.0.2.{p}"
    for p in ("weight", "bias"):
        table[f"feature_projection.layer_norm.{p}"] = f"layer_norm.{p}"
        table[f"feature_projection.projection.{p}"] = f"post_extract_proj.{p}"
        table[f"encoder.layer_norm.{p}"] = f"encoder.layer_norm.{p}"
    if _has_mask_emb(config):
        table["masked_spec_embed"] = "mask_emb"
    g, v = _WN_PARAM[weight_norm]
    table[f"encoder.pos_conv_embed.conv.{g}"] = "encoder.pos_conv.0.weight_g"
    table[f"encoder.pos_conv_embed.conv.{v}"] = "encoder.pos_conv.0.weight_v"
    table["encoder.pos_conv_embed.conv.bias"] = "encoder.pos_conv.0.bias"
    per_layer = {
        **{f"attention.{n}_proj": f"self_attn.{n}_proj" for n in ("q", "k", "v", "out")},
        "layer_norm": "self_attn_layer_norm",
        "feed_forward.intermediate_dense": "fc1",
        "feed_forward.output_dense": "fc2",
        "final_layer_norm": "final_layer_norm",
    }
    for j in range(config.encoder_layers):
        for hf_name, our_name in per_layer.items():
            for p in ("weight", "bias"):
                table[f"encoder.layers.{j}.{hf_name}.{p}"] = f"encoder.layers.{j}.{our_name}.{p}"
    return table


def _check_keys(found: set[str], expected: set[str], what: str) -> None:
    unknown = sorted(found - expected)
    missing = sorted(expected - found)
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"unexpected keys ({len(unknown)}): {', '.join(unknown[:10])}"
                         + (" ..." if len(unknown) > 10 else ""))
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:10])}"
                         + (" ..." if len(missing) > 10 else ""))
        raise ValueError(f"{what}: " + "; ".join(parts))


def _strip_base_prefix(state_dict: Mapping[str, torch.Tensor], drop_heads: bool) -> dict[str, torch.Tensor]:
    """Keys of the base model, without the ``hubert.``/``wav2vec2.`` prefix of task classes."""
    prefixed = [p for p in _BASE_PREFIXES if any(k.startswith(p) for k in state_dict)]
    if not prefixed:
        return dict(state_dict)
    prefix = prefixed[0]
    base = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    heads = sorted(k for k in state_dict if not k.startswith(prefix))
    if heads and not drop_heads:
        raise ValueError(f"the state dict has keys outside the base model ({', '.join(heads[:8])}"
                         f"{' ...' if len(heads) > 8 else ''}); pass drop_heads=True to convert the base model only")
    if heads:
        logger.info("dropping %d head parameters: %s", len(heads), ", ".join(heads))
    return base


def hf_to_speechssl(hf_state_dict: Mapping[str, torch.Tensor], hf_config: Mapping[str, Any], *,
                    normalize: bool | None = None, drop_heads: bool = False,
                    config_cls: type[TrunkConfig] = TrunkConfig
                    ) -> tuple[TrunkConfig, dict[str, torch.Tensor]]:
    """Convert a transformers ``HubertModel``/``Wav2Vec2Model`` to speechssl.

    Args:
        hf_state_dict: the transformers state dict (either weight-norm naming; the base model
            may sit under ``hubert.``/``wav2vec2.`` as in ``HubertForCTC``).
        hf_config: the transformers ``config.json`` dict.
        normalize, config_cls: see :func:`hf_config_to_speechssl`.
        drop_heads: drop parameters outside the base model (CTC/classification heads,
            quantizer) instead of raising.

    Returns:
        the config and a state dict that ``HubertModel(config).load_state_dict`` accepts strictly.

    Raises:
        ValueError: unknown or missing keys (named), wrong shapes, or an unsupported option.
    """
    config = hf_config_to_speechssl(hf_config, normalize=normalize, config_cls=config_cls)
    state = _strip_base_prefix(hf_state_dict, drop_heads)
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key.replace("parametrizations.weight.original0", "weight_g")
        key = key.replace("parametrizations.weight.original1", "weight_v")
        renamed[key] = value
    table = hf_key_table(config, weight_norm="legacy")
    if "masked_spec_embed" in renamed and "masked_spec_embed" not in table:
        table["masked_spec_embed"] = "mask_emb"
    optional = {"masked_spec_embed"}
    _check_keys(set(renamed), set(table) - (optional - set(renamed)), "transformers state dict")
    out = {table[k]: v for k, v in renamed.items()}
    if "mask_emb" not in out:
        # transformers omits it when the config has no masking; it only matters for pretraining
        logger.info("no masked_spec_embed in the transformers model; mask_emb set to zeros")
        out["mask_emb"] = torch.zeros(config.encoder_embed_dim, dtype=out["layer_norm.weight"].dtype)
    _check_shapes(config, out)
    return config, out


def _check_shapes(config: TrunkConfig, state: Mapping[str, torch.Tensor]) -> None:
    with torch.device("meta"):
        reference = Wav2Vec2Trunk(config).state_dict()
    _check_keys(set(state), set(reference), "converted state dict")
    for key, ref in reference.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise ValueError(f"{key}: expected shape {tuple(ref.shape)} for this config, got {tuple(state[key].shape)}")


def speechssl_to_hf(config: TrunkConfig, state_dict: Mapping[str, torch.Tensor], *,
                    model_type: str = "hubert", weight_norm: WeightNormNaming = "parametrizations"
                    ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Convert a speechssl trunk upstream to a transformers ``HubertModel``/``Wav2Vec2Model``.

    Args:
        config: the upstream's config.
        state_dict: the upstream's ``state_dict()``; a pretraining model's state dict is accepted
            too (its ``upstream.`` keys are used, the prediction head is dropped).
        model_type: ``"hubert"`` or ``"wav2vec2"``.
        weight_norm: naming of the position-conv weight norm to write (``"parametrizations"``:
            what current transformers uses; ``"legacy"``: ``weight_g``/``weight_v``).

    Returns:
        the ``config.json`` dict and a state dict ``transformers.HubertModel(...).load_state_dict``
        accepts strictly.
    """
    state = dict(state_dict)
    if any(k.startswith("upstream.") for k in state):
        state = {k[len("upstream."):]: v for k, v in state.items() if k.startswith("upstream.")}
    hf_config = speechssl_config_to_hf(config, model_type=model_type)
    _check_shapes(config, state)
    table = hf_key_table(config, weight_norm=weight_norm)
    inverse = {ours: hf for hf, ours in table.items()}
    out = {inverse[k]: v for k, v in state.items() if k in inverse}
    dropped = sorted(set(state) - set(inverse))
    if dropped != [] and dropped != ["mask_emb"]:
        raise ValueError(f"keys with no transformers counterpart: {', '.join(dropped)}")
    return hf_config, out


class TrunkHFConverter:
    """``Method.converters["hf"]`` of a method built on the trunk.

    Args:
        config_cls: the method's config class (a :class:`TrunkConfig` subclass).
        model_types: transformers ``model_type`` values this method reads, the first one is the
            type it exports as (each must be in :data:`TRUNK_MODEL_TYPES`).

    Attributes:
        model_types: ``model_type`` → transformers base class name.
        export_type: the ``model_type`` written by :meth:`speechssl_to_hf`.
        base_prefix: the prefix transformers' task classes put before base-model keys, per type.
    """

    def __init__(self, config_cls: type[TrunkConfig], model_types: Sequence[str]) -> None:
        unknown = [t for t in model_types if t not in TRUNK_MODEL_TYPES]
        if not model_types or unknown:
            raise ValueError(f"model_types must be a non-empty subset of {', '.join(TRUNK_MODEL_TYPES)}, "
                             f"got {list(model_types)}")
        self.config_cls = config_cls
        self.model_types = {t: TRUNK_MODEL_TYPES[t] for t in model_types}
        self.export_type = model_types[0]
        self.base_prefix = {t: f"{t}." for t in model_types}

    @property
    def reader(self) -> Any:
        """The format's reader module (:mod:`speechssl.convert.hf`), for the hub."""
        from speechssl.convert import hf

        return hf

    def hf_to_speechssl(self, hf_state_dict: Mapping[str, torch.Tensor], hf_config: Mapping[str, Any], *,
                        normalize: bool | None = None, drop_heads: bool = False
                        ) -> tuple[TrunkConfig, dict[str, torch.Tensor]]:
        """:func:`hf_to_speechssl` building this method's config class."""
        return hf_to_speechssl(hf_state_dict, hf_config, normalize=normalize, drop_heads=drop_heads,
                               config_cls=self.config_cls)

    def speechssl_to_hf(self, config: TrunkConfig, state_dict: Mapping[str, torch.Tensor], *,
                        weight_norm: WeightNormNaming = "parametrizations"
                        ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """:func:`speechssl_to_hf` as this method's export model type."""
        return speechssl_to_hf(config, state_dict, model_type=self.export_type, weight_norm=weight_norm)

    def hf_feature_extractor_config(self, config: TrunkConfig) -> dict[str, Any]:
        """:func:`hf_feature_extractor_config`."""
        return hf_feature_extractor_config(config)
