"""HuBERT: the upstream encoder (:class:`HubertModel`) and its pretraining head (:class:`HubertPretrainModel`).

The upstream is the shared wav2vec 2.0 / HuBERT trunk (:class:`speechssl.nn.trunk.Wav2Vec2Trunk`;
data flow and padding rules are documented there). :class:`HubertPretrainModel` is the shared
masked unit-prediction model (:class:`speechssl.nn.unit_prediction.UnitPredictionModel`) on
:class:`HubertModel`: it holds the upstream under ``upstream.`` and adds ``final_proj``,
``label_embs_concat`` (and ``target_glu``), so a fairseq HuBERT state dict maps to it by renaming only.
"""
from __future__ import annotations

from typing import Sequence

from speechssl.nn.trunk import TrunkFeatures, Wav2Vec2Trunk, normalize_waveform
from speechssl.nn.unit_prediction import UnitPredictionModel, UnitPredictionOutput
from speechssl.upstream.hubert.config import HubertConfig

__all__ = ["HubertModel", "HubertFeatures", "HubertPretrainModel", "HubertPretrainOutput", "normalize_waveform"]

#: What :meth:`HubertModel.extract_features` returns (the trunk's features).
HubertFeatures = TrunkFeatures

#: What :meth:`HubertPretrainModel.forward` returns (see :class:`UnitPredictionOutput` for the keys).
HubertPretrainOutput = UnitPredictionOutput


class HubertModel(Wav2Vec2Trunk):
    """The HuBERT upstream: the wav2vec 2.0 / HuBERT trunk built from a :class:`HubertConfig`.

    Shapes, stages and the upstream contract: see :class:`speechssl.nn.trunk.Wav2Vec2Trunk`.
    """

    method = "hubert"

    def __init__(self, config: HubertConfig) -> None:
        super().__init__(config)
        self.config: HubertConfig = config

    @classmethod
    def from_config(cls, config: HubertConfig) -> "HubertModel":
        """A freshly initialised model."""
        return cls(config)


class HubertPretrainModel(UnitPredictionModel):
    """HuBERT with its masked-prediction head: ``upstream`` (:class:`HubertModel`) + ``final_proj`` +
    ``label_embs_concat``.

    Each frame's final hidden state is projected (``final_proj``) and compared by cosine similarity
    with one embedding per class of each label set; logits are divided by ``logit_temp``. Forward
    and shapes: :meth:`speechssl.nn.unit_prediction.UnitPredictionModel.forward`.

    Args:
        config: the model config.
        num_classes: classes ``K_i`` of each label set (dictionary sizes).
        label_rates: frame rate (Hz) of each label set, e.g. 100 for MFCC k-means labels, 50 for
            HuBERT-feature labels.
        sample_rate: audio sample rate.
    """

    upstream_cls = HubertModel
    upstream: HubertModel
    config: HubertConfig

    def __init__(self, config: HubertConfig, num_classes: Sequence[int], label_rates: Sequence[float],
                 sample_rate: int = 16000) -> None:
        super().__init__(config, num_classes, label_rates, sample_rate=sample_rate)
