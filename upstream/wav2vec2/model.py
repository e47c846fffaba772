"""The wav2vec 2.0 upstream: the shared wav2vec 2.0 / HuBERT trunk under the name ``wav2vec2``.

fairseq's ``Wav2Vec2Model`` and ``HubertModel`` compute their hidden states with the same
modules and parameter names (``feature_extractor``, ``layer_norm``, ``post_extract_proj``,
``mask_emb``, ``encoder``); only their pretraining heads differ, and those are not part of an
upstream. So :class:`Wav2Vec2Model` is :class:`speechssl.nn.trunk.Wav2Vec2Trunk` registered under
its own method name, which keeps converted wav2vec 2.0 checkpoints labelled as such in model
directories, ``speechssl hub info`` and downstream reports.
"""
from __future__ import annotations

from speechssl.nn.trunk import Wav2Vec2Trunk
from speechssl.upstream.wav2vec2.config import Wav2Vec2Config

__all__ = ["Wav2Vec2Model"]


class Wav2Vec2Model(Wav2Vec2Trunk):
    """wav2vec 2.0 upstream following the speechssl contract (shapes: see Wav2Vec2Trunk)."""

    method = "wav2vec2"

    def __init__(self, config: Wav2Vec2Config) -> None:
        if not isinstance(config, Wav2Vec2Config):
            raise TypeError(f"Wav2Vec2Model needs a Wav2Vec2Config, got {type(config).__name__}")
        super().__init__(config)
        self.config: Wav2Vec2Config = config

    @classmethod
    def from_config(cls, config: Wav2Vec2Config) -> "Wav2Vec2Model":
        """A freshly initialised model."""
        return cls(config)
