"""Convert between transformers' SpeechT5 classes and :class:`~speechssl.upstream.speecht5.model.SpeechT5Model`.

transformers splits SpeechT5 into single-purpose classes, each holding some of the pre/post-nets:

=============================  ==========================================  =========================
architecture                   parts                                       speechssl config
=============================  ==========================================  =========================
``SpeechT5ForSpeechToText``    speech encoder pre-net, text decoder         text_decoder
``SpeechT5ForSpeechToSpeech``  speech encoder pre-net, speech decoder       speech_decoder
``SpeechT5ForTextToSpeech``    text encoder pre-net, speech decoder         (no waveform encoder:
                                                                            refused)
=============================  ==========================================  =========================

Reading finds the parts from the keys present; writing exports ``SpeechT5ForSpeechToText`` when
the model has a text decoder, else ``SpeechT5ForSpeechToSpeech``; parts the exported class
lacks (e.g. the text encoder pre-net of a pretrained model) are dropped and logged.
:func:`hf_key_table` is the whole mapping (the trunk's part is
:func:`speechssl.convert.trunk_hf.hf_key_table` under SpeechT5's prefixes). ``transformers`` is
never imported here.

Two config differences: transformers' sinusoidal positions start at ``pad_token_id + 1``
(speechssl: ``position_offset``), and transformers ties ``lm_head`` to the embedding with
``tie_word_embeddings`` (speechssl then has no ``lm_head`` parameter).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Mapping

import torch

from speechssl.convert.trunk_hf import hf_key_table as trunk_key_table
from speechssl.upstream.speecht5.config import SpeechT5Config

__all__ = ["hf_key_table", "hf_config_to_speechssl", "speechssl_config_to_hf", "hf_to_speechssl",
           "speechssl_to_hf", "SpeechT5HFConverter", "HF_DEFAULTS"]

logger = logging.getLogger(__name__)

_ENC = "speecht5.encoder."
_DEC = "speecht5.decoder."

#: transformers ``SpeechT5Config`` defaults for fields a sparse config.json may omit.
HF_DEFAULTS: dict[str, Any] = {
    "vocab_size": 81, "hidden_size": 768, "encoder_layers": 12, "encoder_attention_heads": 12,
    "encoder_ffn_dim": 3072, "encoder_layerdrop": 0.1, "decoder_layers": 6, "decoder_ffn_dim": 3072,
    "decoder_attention_heads": 12, "decoder_layerdrop": 0.1, "hidden_act": "gelu", "positional_dropout": 0.1,
    "hidden_dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.1, "layer_norm_eps": 1e-5,
    "scale_embedding": False, "feat_extract_norm": "group", "feat_proj_dropout": 0.0,
    "feat_extract_activation": "gelu", "conv_dim": (512,) * 7, "conv_stride": (5, 2, 2, 2, 2, 2, 2),
    "conv_kernel": (10, 3, 3, 3, 3, 2, 2), "conv_bias": False, "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16, "mask_time_prob": 0.05, "mask_time_length": 10,
    "mask_time_min_masks": 2, "mask_feature_prob": 0.0, "mask_feature_length": 10, "pad_token_id": 1,
    "bos_token_id": 0, "eos_token_id": 2, "decoder_start_token_id": 2, "num_mel_bins": 80,
    "speech_decoder_prenet_layers": 2, "speech_decoder_prenet_units": 256, "speech_decoder_prenet_dropout": 0.5,
    "speaker_embedding_dim": 512, "speech_decoder_postnet_layers": 5, "speech_decoder_postnet_units": 256,
    "speech_decoder_postnet_kernel": 5, "speech_decoder_postnet_dropout": 0.5, "reduction_factor": 2,
    "encoder_max_relative_position": 160, "tie_word_embeddings": True,
}

_ACT = {"gelu": "gelu", "relu": "relu", "swish": "swish", "silu": "swish", "gelu_new": "gelu_tanh"}
_OUR_ACT = {"gelu": "gelu", "relu": "relu", "swish": "swish", "gelu_tanh": "gelu_new"}

_DECODER_LAYER = {
    **{f"self_attn.{n}_proj": f"self_attn.{n}_proj" for n in ("q", "k", "v", "out")},
    **{f"encoder_attn.{n}_proj": f"encoder_attn.{n}_proj" for n in ("q", "k", "v", "out")},
    "self_attn_layer_norm": "self_attn_layer_norm", "encoder_attn_layer_norm": "encoder_attn_layer_norm",
    "feed_forward.intermediate_dense": "fc1", "feed_forward.output_dense": "fc2",
    "final_layer_norm": "final_layer_norm",
}


def _get(hf_config: Mapping[str, Any], key: str) -> Any:
    return hf_config.get(key, HF_DEFAULTS[key])


def hf_key_table(config: SpeechT5Config, *, weight_norm: str = "parametrizations") -> dict[str, str]:
    """Every transformers key of the parts ``config`` has → its speechssl key.

    ``config.text_encoder`` and ``config.text_decoder`` both read the one shared embedding; a
    model with both maps it from the text decoder (``speecht5.decoder.prenet.embed_tokens``).
    """
    table: dict[str, str] = {}
    for hf, ours in trunk_key_table(config, weight_norm=weight_norm).items():  # type: ignore[arg-type]
        if hf.startswith("feature_extractor."):
            hf = _ENC + "prenet.feature_encoder." + hf[len("feature_extractor."):]
        elif hf.startswith(("feature_projection.", "masked_spec_embed")):
            hf = _ENC + "prenet." + hf
        elif hf.startswith("encoder.pos_conv_embed."):
            hf = _ENC + "prenet." + hf[len("encoder."):]
        elif hf.startswith("encoder."):
            hf = _ENC + "wrapped_encoder." + hf[len("encoder."):]
        table[hf] = ours
    table[_ENC + "wrapped_encoder.embed_positions.pe_k.weight"] = "encoder.pos_emb.pe_k.weight"
    if config.text_encoder and not config.text_decoder:
        table[_ENC + "prenet.embed_tokens.weight"] = "embed_tokens.weight"
    if config.text_encoder:
        table[_ENC + "prenet.encode_positions.alpha"] = "text_encoder_prenet.encode_positions.alpha"
    if config.text_decoder:
        table[_DEC + "prenet.embed_tokens.weight"] = "embed_tokens.weight"
        if not config.tie_word_embeddings:
            table["text_decoder_postnet.lm_head.weight"] = "lm_head.weight"
    if config.text_decoder or config.speech_decoder:
        for j in range(config.decoder_layers):
            for hf, ours in _DECODER_LAYER.items():
                for p in ("weight", "bias"):
                    table[f"{_DEC}wrapped_decoder.layers.{j}.{hf}.{p}"] = f"decoder.layers.{j}.{ours}.{p}"
    if config.speech_decoder:
        pre = "speech_decoder_prenet."
        names = [f"layers.{i}" for i in range(config.speech_decoder_prenet_layers)] + ["final_layer"]
        if config.speaker_embedding_dim > 0:
            names.append("speaker_embeds_layer")
        for name in names:
            for p in ("weight", "bias"):
                table[f"{_DEC}prenet.{name}.{p}"] = f"{pre}{name}.{p}"
        table[_DEC + "prenet.encode_positions.alpha"] = pre + "encode_positions.alpha"
        post = "speech_decoder_postnet."
        for name in ("feat_out", "prob_out"):
            for p in ("weight", "bias"):
                table[f"{post}{name}.{p}"] = f"{post}{name}.{p}"
        for i in range(config.speech_decoder_postnet_layers):
            keys = ["conv.weight"] + [f"batch_norm.{p}" for p in
                                      ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
            for k in keys:
                table[f"{post}layers.{i}.{k}"] = f"{post}layers.{i}.{k}"
    return table


def hf_config_to_speechssl(hf_config: Mapping[str, Any], *, text_encoder: bool, text_decoder: bool,
                           speech_decoder: bool) -> SpeechT5Config:
    """A :class:`SpeechT5Config` equivalent to a transformers ``SpeechT5Config`` dict with the given parts.

    Raises:
        ValueError: an option with no speechssl equivalent (naming it).
    """
    if hf_config.get("model_type", "speecht5") != "speecht5":
        raise ValueError(f"expected model_type 'speecht5', got {hf_config.get('model_type')!r}")
    if _get(hf_config, "feat_extract_activation") != "gelu":
        raise ValueError(f"feat_extract_activation must be 'gelu', got {_get(hf_config, 'feat_extract_activation')!r}")
    act = _get(hf_config, "hidden_act")
    if act not in _ACT:
        raise ValueError(f"hidden_act {act!r} has no speechssl equivalent; supported: {', '.join(_ACT)}")
    norm = _get(hf_config, "feat_extract_norm")
    if norm not in ("group", "layer"):
        raise ValueError(f"feat_extract_norm must be 'group' or 'layer', got {norm!r}")
    dims, kernels, strides = (list(_get(hf_config, k)) for k in ("conv_dim", "conv_kernel", "conv_stride"))
    if not len(dims) == len(kernels) == len(strides):
        raise ValueError(f"conv_dim, conv_kernel and conv_stride differ in length: {dims}, {kernels}, {strides}")
    hidden = int(_get(hf_config, "hidden_size"))
    if dims[-1] == hidden:
        raise ValueError(f"conv_dim[-1] equals hidden_size ({hidden}): transformers then still has a feature "
                         "projection, which the speechssl trunk omits; this model cannot be converted exactly")
    g = lambda k: _get(hf_config, k)  # noqa: E731
    pad = int(g("pad_token_id"))
    return SpeechT5Config(
        extractor_mode="default" if norm == "group" else "layer_norm",
        conv_feature_layers=tuple((int(c), int(k), int(s)) for c, k, s in zip(dims, kernels, strides)),
        conv_bias=bool(g("conv_bias")), encoder_layers=int(g("encoder_layers")), encoder_embed_dim=hidden,
        encoder_ffn_embed_dim=int(g("encoder_ffn_dim")), encoder_attention_heads=int(g("encoder_attention_heads")),
        activation_fn=_ACT[act],  # type: ignore[arg-type]
        layer_norm_eps=float(g("layer_norm_eps")), conv_pos=int(g("num_conv_pos_embeddings")),
        conv_pos_groups=int(g("num_conv_pos_embedding_groups")),
        max_relative_distance=int(g("encoder_max_relative_position")),
        dropout=float(g("hidden_dropout")), attention_dropout=float(g("attention_dropout")),
        activation_dropout=float(g("activation_dropout")), encoder_layerdrop=float(g("encoder_layerdrop")),
        dropout_input=float(g("feat_proj_dropout")), mask_prob=float(g("mask_time_prob")),
        mask_length=int(g("mask_time_length")), mask_min_masks=int(g("mask_time_min_masks")),
        mask_channel_prob=float(g("mask_feature_prob")), mask_channel_length=int(g("mask_feature_length")),
        text_encoder=text_encoder, text_decoder=text_decoder, speech_decoder=speech_decoder,
        vocab_size=int(g("vocab_size")), pad_token_id=pad, bos_token_id=int(g("bos_token_id")),
        eos_token_id=int(g("eos_token_id")), decoder_start_token_id=int(g("decoder_start_token_id")),
        tie_word_embeddings=bool(g("tie_word_embeddings")), scale_embedding=bool(g("scale_embedding")),
        positional_dropout=float(g("positional_dropout")), position_offset=pad + 1,
        decoder_layers=int(g("decoder_layers")), decoder_ffn_embed_dim=int(g("decoder_ffn_dim")),
        decoder_attention_heads=int(g("decoder_attention_heads")), decoder_layerdrop=float(g("decoder_layerdrop")),
        num_mel_bins=int(g("num_mel_bins")), reduction_factor=int(g("reduction_factor")),
        speech_decoder_prenet_layers=int(g("speech_decoder_prenet_layers")),
        speech_decoder_prenet_units=int(g("speech_decoder_prenet_units")),
        speech_decoder_prenet_dropout=float(g("speech_decoder_prenet_dropout")),
        speech_decoder_postnet_layers=int(g("speech_decoder_postnet_layers")),
        speech_decoder_postnet_units=int(g("speech_decoder_postnet_units")),
        speech_decoder_postnet_kernel=int(g("speech_decoder_postnet_kernel")),
        speech_decoder_postnet_dropout=float(g("speech_decoder_postnet_dropout")),
        speaker_embedding_dim=int(g("speaker_embedding_dim")) if speech_decoder else 0,
    )


def speechssl_config_to_hf(config: SpeechT5Config, architecture: str) -> dict[str, Any]:
    """The transformers ``config.json`` dict of ``config`` exported as ``architecture``.

    Raises:
        ValueError: an option transformers cannot express.
    """
    c = config
    if tuple(c.encoder_position) != ("conv", "sinusoidal", "relative"):
        raise ValueError(f"encoder_position={tuple(c.encoder_position)}: transformers' SpeechT5 has exactly "
                         "('conv', 'sinusoidal', 'relative')")
    if c.layer_norm_first or c.normalize:
        raise ValueError("transformers' SpeechT5 is post-LN on unnormalised waveforms "
                         "(layer_norm_first and normalize must be False)")
    if c.position_offset != c.pad_token_id + 1:
        raise ValueError(f"position_offset ({c.position_offset}) must be pad_token_id + 1 "
                         f"({c.pad_token_id + 1}) in transformers")
    if c.conv_feature_layers[-1][0] == c.encoder_embed_dim:
        raise ValueError("conv channels equal encoder_embed_dim (no post_extract_proj); transformers always has one")
    return {
        "model_type": "speecht5", "architectures": [architecture], "is_encoder_decoder": True,
        "vocab_size": max(c.vocab_size, 1), "hidden_size": c.encoder_embed_dim,
        "encoder_layers": c.encoder_layers, "encoder_attention_heads": c.encoder_attention_heads,
        "encoder_ffn_dim": c.encoder_ffn_embed_dim, "encoder_layerdrop": c.encoder_layerdrop,
        "decoder_layers": c.decoder_layers, "decoder_ffn_dim": c.decoder_ffn_embed_dim,
        "decoder_attention_heads": c.decoder_attention_heads, "decoder_layerdrop": c.decoder_layerdrop,
        "hidden_act": _OUR_ACT[c.activation_fn], "positional_dropout": c.positional_dropout,
        "hidden_dropout": c.dropout, "attention_dropout": c.attention_dropout,
        "activation_dropout": c.activation_dropout, "layer_norm_eps": c.layer_norm_eps,
        "scale_embedding": c.scale_embedding,
        "feat_extract_norm": "group" if c.extractor_mode == "default" else "layer",
        "feat_proj_dropout": c.dropout_input, "feat_extract_activation": "gelu",
        "conv_dim": [ch for ch, _, _ in c.conv_feature_layers], "conv_kernel": [k for _, k, _ in c.conv_feature_layers],
        "conv_stride": [s for _, _, s in c.conv_feature_layers], "num_feat_extract_layers": len(c.conv_feature_layers),
        "conv_bias": c.conv_bias, "num_conv_pos_embeddings": c.conv_pos,
        "num_conv_pos_embedding_groups": c.conv_pos_groups, "apply_spec_augment": True,
        "mask_time_prob": c.mask_prob, "mask_time_length": c.mask_length, "mask_time_min_masks": c.mask_min_masks,
        "mask_feature_prob": c.mask_channel_prob, "mask_feature_length": c.mask_channel_length,
        "pad_token_id": c.pad_token_id, "bos_token_id": c.bos_token_id, "eos_token_id": c.eos_token_id,
        "decoder_start_token_id": c.decoder_start_token_id, "num_mel_bins": c.num_mel_bins,
        "speech_decoder_prenet_layers": c.speech_decoder_prenet_layers,
        "speech_decoder_prenet_units": c.speech_decoder_prenet_units,
        "speech_decoder_prenet_dropout": c.speech_decoder_prenet_dropout,
        "speaker_embedding_dim": c.speaker_embedding_dim,
        "speech_decoder_postnet_layers": c.speech_decoder_postnet_layers,
        "speech_decoder_postnet_units": c.speech_decoder_postnet_units,
        "speech_decoder_postnet_kernel": c.speech_decoder_postnet_kernel,
        "speech_decoder_postnet_dropout": c.speech_decoder_postnet_dropout,
        "reduction_factor": c.reduction_factor, "encoder_max_relative_position": c.max_relative_distance,
        "tie_word_embeddings": c.tie_word_embeddings, "use_guided_attention_loss": False,
    }


def _check_keys(found: set[str], expected: set[str], what: str) -> None:
    unknown, missing = sorted(found - expected), sorted(expected - found)
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"unexpected keys ({len(unknown)}): {', '.join(unknown[:8])}" + (" ..." if len(unknown) > 8 else ""))
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:8])}" + (" ..." if len(missing) > 8 else ""))
        raise ValueError(f"{what}: " + "; ".join(parts))


def _legacy_weight_norm(key: str) -> str:
    return key.replace("conv.weight_g", "conv.parametrizations.weight.original0").replace(
        "conv.weight_v", "conv.parametrizations.weight.original1")


def hf_to_speechssl(hf_state_dict: Mapping[str, torch.Tensor], hf_config: Mapping[str, Any], *,
                    normalize: bool | None = None, drop_heads: bool = False
                    ) -> tuple[SpeechT5Config, dict[str, torch.Tensor]]:
    """Convert a transformers SpeechT5 state dict (any of the classes in the module table).

    Args:
        hf_state_dict, hf_config: the weights and ``config.json`` dict.
        normalize: ``do_normalize`` of the preprocessor (True is refused: SpeechT5 reads raw waveforms).
        drop_heads: accepted for the hub's reader protocol (every SpeechT5 part converts).

    Raises:
        ValueError: no speech encoder pre-net, unknown/missing keys, wrong shapes, unsupported options.
    """
    del drop_heads
    if normalize:
        raise ValueError("preprocessor do_normalize=True: the speechssl SpeechT5 trunk reads raw waveforms")
    state = {_legacy_weight_norm(k): v for k, v in hf_state_dict.items()}
    if not any(k.startswith(_ENC + "prenet.feature_encoder.") for k in state):
        raise ValueError("no speech encoder pre-net (speecht5.encoder.prenet.feature_encoder.*): a "
                         "SpeechT5ForTextToSpeech or bare SpeechT5Model? The speechssl upstream takes waveforms; "
                         "convert SpeechT5ForSpeechToText or SpeechT5ForSpeechToSpeech")
    text_decoder = _DEC + "prenet.embed_tokens.weight" in state
    speech_decoder = _DEC + "prenet.final_layer.weight" in state
    config = hf_config_to_speechssl(hf_config, text_encoder=False, text_decoder=text_decoder,
                                    speech_decoder=speech_decoder)
    if text_decoder and config.tie_word_embeddings:
        state.pop("text_decoder_postnet.lm_head.weight", None)  # tied: the embedding itself
    table = hf_key_table(config)
    spec = _ENC + "prenet.masked_spec_embed"  # present only when transformers' config masks
    table[spec] = "mask_emb"
    _check_keys(set(state) - {spec}, set(table) - {spec}, "transformers SpeechT5 state dict")
    out = {table[k]: v for k, v in state.items()}
    if "mask_emb" not in out:
        logger.info("no masked_spec_embed in the transformers model; mask_emb set to zeros")
        out["mask_emb"] = torch.zeros(config.encoder_embed_dim, dtype=out["layer_norm.weight"].dtype)
    _check_shapes(config, out)
    return config, out


def _check_shapes(config: SpeechT5Config, state: Mapping[str, torch.Tensor]) -> None:
    from speechssl.upstream.speecht5.model import SpeechT5Model

    with torch.device("meta"):
        reference = SpeechT5Model(config).state_dict()
    _check_keys(set(state), set(reference), "converted SpeechT5 state dict")
    for key, ref in reference.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise ValueError(f"{key}: expected shape {tuple(ref.shape)} for this config, got {tuple(state[key].shape)}")


def speechssl_to_hf(config: SpeechT5Config, state_dict: Mapping[str, torch.Tensor]
                    ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Export as ``SpeechT5ForSpeechToText`` (text decoder present) or ``SpeechT5ForSpeechToSpeech``.

    ``state_dict`` may be a pretraining model's (its ``upstream.`` keys are used).

    Returns:
        the ``config.json`` dict and a state dict the transformers class loads strictly.

    Raises:
        ValueError: a model with neither decoder, or an option transformers cannot express.
    """
    state = dict(state_dict)
    if any(k.startswith("upstream.") for k in state):
        state = {k[len("upstream."):]: v for k, v in state.items() if k.startswith("upstream.")}
    _check_shapes(config, state)
    if config.text_decoder:
        arch, export = "SpeechT5ForSpeechToText", replace(config, text_encoder=False, speech_decoder=False)
    elif config.speech_decoder:
        arch, export = "SpeechT5ForSpeechToSpeech", replace(config, text_encoder=False)
    else:
        raise ValueError("a SpeechT5 model without a decoder has no transformers counterpart")
    hf_config = speechssl_config_to_hf(export, arch)
    inverse = {ours: hf for hf, ours in hf_key_table(export).items()}
    out = {inverse[k]: v for k, v in state.items() if k in inverse}
    # tied: transformers ties lm_head to the embedding on load (safetensors refuses the shared copy)
    dropped = sorted(set(state) - set(inverse) - {"mask_emb"})
    if dropped:
        logger.info("%s has no place for %d parameter(s), dropped: %s", arch, len(dropped), ", ".join(dropped))
    return hf_config, out


class SpeechT5HFConverter:
    """``Method.converters["hf"]`` of SpeechT5 (the interface of :class:`speechssl.convert.trunk_hf.TrunkHFConverter`)."""

    model_types = {"speecht5": "SpeechT5ForSpeechToText"}
    export_type = "speecht5"
    base_prefix = {"speecht5": ""}  # every key converts: nothing is a dropped head

    @property
    def reader(self) -> Any:
        """The format's reader module (:mod:`speechssl.convert.hf`)."""
        from speechssl.convert import hf

        return hf

    def hf_to_speechssl(self, hf_state_dict: Mapping[str, torch.Tensor], hf_config: Mapping[str, Any], *,
                        normalize: bool | None = None, drop_heads: bool = False
                        ) -> tuple[SpeechT5Config, dict[str, torch.Tensor]]:
        """:func:`hf_to_speechssl`."""
        return hf_to_speechssl(hf_state_dict, hf_config, normalize=normalize, drop_heads=drop_heads)

    def speechssl_to_hf(self, config: SpeechT5Config, state_dict: Mapping[str, torch.Tensor], **_: Any
                        ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """:func:`speechssl_to_hf`."""
        return speechssl_to_hf(config, state_dict)

    def hf_feature_extractor_config(self, config: SpeechT5Config) -> dict[str, Any]:
        """transformers ``preprocessor_config.json`` (``SpeechT5FeatureExtractor``) for ``config``."""
        return {"feature_extractor_type": "SpeechT5FeatureExtractor", "feature_size": 1, "sampling_rate": 16000,
                "padding_value": 0.0, "do_normalize": False, "num_mel_bins": config.num_mel_bins,
                "return_attention_mask": True}
