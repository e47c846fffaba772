"""HuBERTopic: the upstream encoder (:class:`HubertopicModel`) and its pretraining model.

The upstream is the shared wav2vec 2.0 / HuBERT trunk (:class:`speechssl.nn.trunk.Wav2Vec2Trunk`),
so a HuBERTopic model directory is used downstream exactly like a HuBERT one. Pretraining
(:class:`HubertopicPretrainModel`) is the shared masked unit-prediction model
(:class:`speechssl.nn.unit_prediction.UnitPredictionModel`: ``upstream.*``, ``final_proj``,
``label_embs_concat``, ``target_glu``) plus the topic head::

    hidden_states[topic_layer] (B, T, D) ─ pool over valid frames (mean | attention) ─▶ (B, D)
        ─ topic_head: Linear(D, K) ─▶ topic logits (B, K)

The topic head reads the same (masked) forward pass as the unit head, so it costs one linear
layer. Pooling uses valid frames only: padding never changes an utterance's topic logits.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from speechssl.nn.pooling import AttentionPooling, masked_mean
from speechssl.nn.trunk import Wav2Vec2Trunk
from speechssl.nn.unit_prediction import UnitPredictionModel, UnitPredictionOutput
from speechssl.upstream.hubertopic.config import HubertopicConfig

__all__ = ["HubertopicModel", "HubertopicPretrainModel", "HubertopicOutput"]


class HubertopicModel(Wav2Vec2Trunk):
    """The HuBERTopic upstream: the wav2vec 2.0 / HuBERT trunk built from a :class:`HubertopicConfig`.

    Shapes, stages and the upstream contract: see :class:`speechssl.nn.trunk.Wav2Vec2Trunk`.
    """

    method = "hubertopic"

    def __init__(self, config: HubertopicConfig) -> None:
        super().__init__(config)
        self.config: HubertopicConfig = config

    @classmethod
    def from_config(cls, config: HubertopicConfig) -> "HubertopicModel":
        """A freshly initialised model."""
        return cls(config)


class HubertopicOutput(UnitPredictionOutput):
    """:class:`UnitPredictionOutput` plus the topic head's output.

    Keys (beside the unit-prediction ones):
        topic_logits: ``(B, K)`` float32 topic logits of every utterance.
        topic_lengths: ``(B,)`` frames that were pooled (0: no frames; the utterance has no topic logit
            worth scoring).
    """

    topic_logits: torch.Tensor
    topic_lengths: torch.Tensor


class HubertopicPretrainModel(UnitPredictionModel):
    """HuBERT's masked unit prediction plus utterance topic classification.

    Args:
        config: the model config (``num_topics``, ``topic_pooling``, ``topic_layer`` shape the head).
        num_classes: classes ``K_i`` of each unit label set (dictionary sizes).
        label_rates: frame rate (Hz) of each unit label set.
        sample_rate: audio sample rate.

    Attributes:
        topic_attention: :class:`AttentionPooling` (``topic_pooling="attention"`` only).
        topic_head: ``Linear(D, num_topics)``.
    """

    upstream_cls = HubertopicModel
    upstream: HubertopicModel
    config: HubertopicConfig

    def __init__(self, config: HubertopicConfig, num_classes: Sequence[int], label_rates: Sequence[float],
                 sample_rate: int = 16000) -> None:
        super().__init__(config, num_classes, label_rates, sample_rate=sample_rate)
        D = config.encoder_embed_dim
        self.topic_attention = AttentionPooling(D) if config.topic_pooling == "attention" else None
        self.topic_head = nn.Linear(D, config.num_topics)

    def pool(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` frames of the topic layer, ``(B,)`` valid frames → ``(B, D)``."""
        if self.topic_attention is not None:
            return self.topic_attention(hidden, lengths)
        return masked_mean(hidden, lengths)

    def topic_logits(self, hidden_states: Sequence[torch.Tensor], lengths: torch.Tensor) -> torch.Tensor:
        """Topic logits ``(B, K)`` (float32) from the ``L + 1`` hidden states and ``(B,)`` valid frames."""
        pooled = self.pool(hidden_states[self.config.topic_hidden_index], lengths)  # (B, D)
        return self.topic_head(pooled).float()  # (B, K)

    def forward(self, source: torch.Tensor, lengths: torch.Tensor, targets: Sequence[torch.Tensor],
                target_lengths: Sequence[torch.Tensor], *, mask: bool | torch.Tensor = True,
                generator: torch.Generator | None = None) -> HubertopicOutput:
        """Masked prediction of frame units and the topic logits of each utterance.

        Args:
            source: ``(B, S)`` 16 kHz samples, right-padded.
            lengths: ``(B,)`` valid samples.
            targets: per unit label set, ``(B, T_i)`` int64 class ids at that set's label rate.
            target_lengths: per unit label set, ``(B,)`` valid labels.
            mask: True samples a time mask; a ``(B, T)`` bool tensor fixes it; False disables masking.
            generator: CPU generator for the mask (None: torch's global RNG).

        Returns:
            :class:`HubertopicOutput`; the topic pooling covers the label-aligned valid frames.
        """
        result, enc = self.forward_units(source, lengths, targets, target_lengths, mask=mask, generator=generator)
        out: HubertopicOutput = {**result,  # type: ignore[typeddict-item]
                                 "topic_logits": self.topic_logits(enc.hidden_states, enc.lengths),
                                 "topic_lengths": enc.lengths}
        return out
