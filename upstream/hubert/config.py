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

from speechssl.nn.unit_prediction import HUBERT_SIZES, UnitPredictionConfig

__all__ = ["HubertConfig", "tiny", "base", "large", "PRESETS"]


@dataclass
class HubertConfig(UnitPredictionConfig):
    """Architecture, masking and prediction-head settings of a HuBERT model.

    The trunk fields (conv encoder, transformer, dropout, masking) are
    :class:`~speechssl.nn.trunk.TrunkConfig`'s, the prediction-head fields
    :class:`~speechssl.nn.unit_prediction.UnitPredictionConfig`'s.
    """


def tiny() -> HubertConfig:
    """A few-million-parameter HuBERT that pretrains on a laptop CPU (quickstart; ``HUBERT_SIZES["tiny"]``)."""
    return HubertConfig(**HUBERT_SIZES["tiny"])


def base() -> HubertConfig:
    """HuBERT Base (12 × 768, ~94.7M parameters), fairseq ``hubert_base_librispeech.yaml``."""
    return HubertConfig(**HUBERT_SIZES["base"])


def large() -> HubertConfig:
    """HuBERT Large (24 × 1024, pre-LN, LayerNorm conv encoder with biases, normalised waveform; ~316M)."""
    return HubertConfig(**HUBERT_SIZES["large"])


PRESETS: dict[str, Callable[[], HubertConfig]] = {"tiny": tiny, "base": base, "large": large}
