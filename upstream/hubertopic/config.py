"""HuBERTopic model configuration and size presets.

HuBERTopic (Maekaku et al., ICASSP 2024, arXiv 2310.03975) is HuBERT plus an utterance-level
target: an LDA topic model fitted over the corpus's pseudo-label sequences (each utterance a
bag-of-units document, ``speechssl cluster lda``) gives every utterance a topic id, and an
auxiliary head classifies the pooled encoder output into those ``K`` topics with weight ``λ``.

The config is the trunk + HuBERT's prediction head
(:class:`speechssl.nn.unit_prediction.UnitPredictionConfig`, the same fields and defaults as
``HubertConfig``, so HuBERT settings and fairseq YAML keys carry over) plus the topic head.

Choice of ``K`` and ``λ``. The paper's abstract does not give them and the full text was not at
hand, so they are chosen here, not read from the paper (a sweep on the small corpus is pending):

* ``num_topics`` (K): ``tiny`` uses 8, the number of text themes of the embedded corpus (read/
  sentences are about 8 topics; 10 speakers, 4 styles and 3 voice genders in the tiny corpus), so
  the topic metrics (NMI, purity against theme, speaker, voice) are read on a K of the same size
  as the themes. ``base`` uses 32: LDA topics over acoustic units follow speaker and voice more
  than theme (the paper's own finding), and 32 sits between the 8 themes and the ~100 speakers of
  the base corpus without leaving topics with a handful of utterances each.
* ``topic_weight`` (λ): 0.5. The task's loss is ``HuBERT loss per frame + λ · topic CE per
  utterance`` (both are means per decision). The topic is one decision per utterance, derived
  from the same units the frame loss predicts, so it gets half the weight of the frame
  objective: large enough that its gradient (spread over ``T`` frames by the pooling) is not
  negligible, small enough that the masked prediction stays the main objective.
* ``topic_pooling``: ``mean`` (no parameters; ``attention`` adds one ``Linear(D, 1)``) and
  ``topic_layer`` −1 (the last layer, the one the unit head reads).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from speechssl.nn.unit_prediction import HUBERT_SIZES, UnitPredictionConfig

__all__ = ["HubertopicConfig", "tiny", "base", "PRESETS"]

TopicPooling = Literal["mean", "attention"]


@dataclass
class HubertopicConfig(UnitPredictionConfig):
    """HuBERT's architecture, masking and prediction head, plus the topic head.

    The trunk and unit-head fields are :class:`UnitPredictionConfig`'s.
    """

    # --- topic head (pretraining only) --------------------------------------------------
    num_topics: int = 8  # K, LDA topics (the size of dict.topic.txt)
    topic_weight: float = 0.5  # λ, weight of the topic CE (per utterance) beside the unit CE (per frame)
    topic_pooling: TopicPooling = "mean"  # how frames of topic_layer are pooled: mean or attention
    topic_layer: int = -1  # hidden state pooled for the topic: 0 (input of layer 1) .. L, or -1 for L

    def validate(self) -> None:
        """Raise ValueError naming the field when the settings cannot build a model."""
        super().validate()
        if self.num_topics < 2:
            raise ValueError(f"num_topics must be >= 2, got {self.num_topics}")
        if self.topic_weight < 0:
            raise ValueError(f"topic_weight must be >= 0, got {self.topic_weight}")
        if self.topic_pooling not in ("mean", "attention"):
            raise ValueError(f"topic_pooling must be 'mean' or 'attention', got {self.topic_pooling!r}")
        if not -(self.encoder_layers + 1) <= self.topic_layer <= self.encoder_layers:
            raise ValueError(f"topic_layer must be in -{self.encoder_layers + 1}..{self.encoder_layers} "
                             f"(hidden states 0..L of {self.encoder_layers} layers), got {self.topic_layer}")

    @property
    def topic_hidden_index(self) -> int:
        """``topic_layer`` as a non-negative index into the ``L + 1`` hidden states."""
        n = self.encoder_layers + 1
        return self.topic_layer % n


def tiny() -> HubertopicConfig:
    """HuBERT ``tiny`` (4 × 192, 64-channel conv encoder, ~2.0M parameters) plus an 8-topic head."""
    return HubertopicConfig(**HUBERT_SIZES["tiny"], num_topics=8, topic_weight=0.5)


def base() -> HubertopicConfig:
    """HuBERT Base (12 × 768, fairseq ``hubert_base_librispeech.yaml``) plus a 32-topic head."""
    return HubertopicConfig(**HUBERT_SIZES["base"], num_topics=32, topic_weight=0.5)


PRESETS: dict[str, Callable[[], HubertopicConfig]] = {"tiny": tiny, "base": base}
