"""wav2vec 2.0 upstream configuration and size presets.

wav2vec 2.0 and HuBERT share the upstream architecture (fairseq builds both from
``ConvFeatureExtractionModel`` + ``TransformerEncoder``): :class:`Wav2Vec2Config` is the shared
:class:`~speechssl.nn.trunk.TrunkConfig` plus the two head fields fairseq's ``Wav2Vec2Config``
shares with the contrastive head (``final_dim``, ``logit_temp``). The quantizer and
contrastive-loss settings are not part of the upstream and are dropped by the converters.

Presets follow fairseq's ``wav2vec2_base_librispeech.yaml`` and ``wav2vec2_large_librivox.yaml``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from speechssl.nn.trunk import TrunkConfig

__all__ = ["Wav2Vec2Config", "tiny", "base", "large_lv60", "PRESETS"]


_log = logging.getLogger(__name__)

# HuBERT prediction-head fields that speechssl 0.1 wrote into wav2vec2 configs (its Wav2Vec2Config
# was HubertConfig); they never changed a wav2vec2 upstream's outputs.
_HUBERT_HEAD_FIELDS = ("untie_final_proj", "target_glu", "skip_masked", "skip_nomask")


@dataclass
class Wav2Vec2Config(TrunkConfig):
    """Architecture and masking settings of a wav2vec 2.0 upstream (trunk fields: see TrunkConfig)."""

    final_dim: int = 0  # projection width of the contrastive head; <= 0 means encoder_embed_dim
    logit_temp: float = 0.1  # temperature of the contrastive head's cosine similarities

    @classmethod
    def upgrade(cls, data: dict[str, Any]) -> dict[str, Any]:
        """A config dict written by an older speechssl, in this version's fields."""
        old = [k for k in _HUBERT_HEAD_FIELDS if k in data]
        if old:
            _log.debug("wav2vec2 config: dropping 0.1 HuBERT-head field(s) %s", ", ".join(old))
        return {k: v for k, v in data.items() if k not in _HUBERT_HEAD_FIELDS}

    def validate(self) -> None:
        """Raise ValueError naming the field when the settings cannot build a model."""
        super().validate()
        if self.logit_temp <= 0:
            raise ValueError(f"logit_temp must be > 0, got {self.logit_temp}")


def tiny() -> Wav2Vec2Config:
    """A small wav2vec 2.0 for CPU tests: fairseq conv geometry with 128 channels, 4 × 192 transformer."""
    return Wav2Vec2Config(
        conv_feature_layers=((128, 10, 5),) + ((128, 3, 2),) * 4 + ((128, 2, 2),) * 2,
        encoder_layers=4, encoder_embed_dim=192, encoder_ffn_embed_dim=768, encoder_attention_heads=4,
        conv_pos=32, conv_pos_groups=8, final_dim=64, mask_prob=0.65, feature_grad_mult=0.1)


def base() -> Wav2Vec2Config:
    """wav2vec 2.0 Base (12 × 768, ~95M parameters), fairseq ``wav2vec2_base_librispeech.yaml``."""
    return Wav2Vec2Config(
        extractor_mode="default", encoder_layers=12, encoder_embed_dim=768, encoder_ffn_embed_dim=3072,
        encoder_attention_heads=12, final_dim=256, encoder_layerdrop=0.05, dropout_input=0.1,
        dropout_features=0.1, feature_grad_mult=0.1, mask_prob=0.65)


def large_lv60() -> Wav2Vec2Config:
    """wav2vec 2.0 Large (LV-60k): pre-LN, LayerNorm conv encoder with bias, normalised waveform."""
    return Wav2Vec2Config(
        extractor_mode="layer_norm", conv_bias=True, normalize=True, layer_norm_first=True,
        encoder_layers=24, encoder_embed_dim=1024, encoder_ffn_embed_dim=4096, encoder_attention_heads=16,
        final_dim=768, encoder_layerdrop=0.0, dropout=0.0, attention_dropout=0.0, dropout_input=0.0,
        dropout_features=0.0, feature_grad_mult=1.0, mask_prob=0.65)


PRESETS: dict[str, Callable[[], Wav2Vec2Config]] = {"tiny": tiny, "base": base, "large_lv60": large_lv60}
