"""HuBERT model configuration and size presets.

Field names follow fairseq's ``HubertConfig`` where a field corresponds (so fairseq YAML
keys carry over); the conv stack is a tuple of ``(channels, kernel, stride)``, never a
string. Presets: :func:`tiny` (CPU quickstart), :func:`base` (HuBERT Base, fairseq
``hubert_base_librispeech.yaml``), :func:`large` (HuBERT Large, ``hubert_large_librivox.yaml``).

Two deliberate differences from fairseq:

* ``normalize`` (per-utterance waveform layer norm, fairseq ``task.normalize``) lives here,
  not in the task, because the upstream must apply it at inference too and a saved model
  only carries its model config.
* ``label_rate`` is not here: it belongs to the labels, so it lives in
  :class:`~speechssl.upstream.hubert.task.HubertTaskConfig` (fairseq couples the two with
  ``II("task.label_rate")``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from speechssl.nn.unit_prediction import UnitPredictionConfig

__all__ = ["HubertConfig", "tiny", "base", "large", "PRESETS"]


@dataclass
class HubertConfig(UnitPredictionConfig):
    """Architecture, masking and prediction-head settings of a HuBERT model.

    The trunk fields (conv encoder, transformer, dropout, masking) are
    :class:`~speechssl.nn.trunk.TrunkConfig`'s, the prediction-head fields
    :class:`~speechssl.nn.unit_prediction.UnitPredictionConfig`'s.
    """


def tiny() -> HubertConfig:
    """A few-million-parameter HuBERT that pretrains on a laptop CPU (quickstart).

    Same 7-layer conv geometry as Base (400-sample receptive field, 320 stride, 50 Hz frames)
    with 64 channels (the conv stack dominates CPU time: 64 channels train ~1.7x faster than
    128), and 4 transformer layers of width 192. About 2.0M parameters.
    """
    return HubertConfig(
        conv_feature_layers=((64, 10, 5),) + ((64, 3, 2),) * 4 + ((64, 2, 2),) * 2,
        encoder_layers=4,
        encoder_embed_dim=192,
        encoder_ffn_embed_dim=768,
        encoder_attention_heads=4,
        conv_pos=32,
        conv_pos_groups=8,
        final_dim=64,
        dropout=0.1,
        attention_dropout=0.1,
        dropout_input=0.1,
        dropout_features=0.1,
        feature_grad_mult=0.1,
        # 0.5 rather than 0.8: with ~3 minutes of audio and a few hundred updates, 0.8 leaves too little
        # context and the model only learns the label prior (measured on the tiny corpus)
        mask_prob=0.5,
        untie_final_proj=True,
    )


def base() -> HubertConfig:
    """HuBERT Base (12 × 768, ~94.7M parameters), fairseq ``hubert_base_librispeech.yaml``."""
    return HubertConfig(
        extractor_mode="default",
        encoder_layers=12,
        encoder_embed_dim=768,
        encoder_ffn_embed_dim=3072,
        encoder_attention_heads=12,
        final_dim=256,
        encoder_layerdrop=0.05,
        dropout_input=0.1,
        dropout_features=0.1,
        dropout=0.1,
        attention_dropout=0.1,
        feature_grad_mult=0.1,
        untie_final_proj=True,
        mask_prob=0.8,
    )


def large() -> HubertConfig:
    """HuBERT Large (24 × 1024, pre-LN, LayerNorm conv encoder with biases, normalised waveform; ~316M).

    ``conv_bias=True`` as in the released HuBERT Large checkpoints (the fairseq YAML leaves it out).
    """
    return HubertConfig(
        extractor_mode="layer_norm",
        conv_bias=True,
        normalize=True,
        layer_norm_first=True,
        encoder_layers=24,
        encoder_embed_dim=1024,
        encoder_ffn_embed_dim=4096,
        encoder_attention_heads=16,
        final_dim=768,
        encoder_layerdrop=0.0,
        dropout_input=0.0,
        dropout_features=0.0,
        dropout=0.0,
        attention_dropout=0.0,
        feature_grad_mult=1.0,
        untie_final_proj=True,
        mask_prob=0.8,
    )


PRESETS: dict[str, Callable[[], HubertConfig]] = {"tiny": tiny, "base": base, "large": large}
