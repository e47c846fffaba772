"""SpeechT5 model configuration and size presets.

SpeechT5 (Ao et al., ACL 2022) is one encoder-decoder shared by speech and text through
modality-specific pre/post-nets. The speech encoder pre-net and the shared encoder are the
wav2vec 2.0 / HuBERT trunk (:class:`~speechssl.nn.trunk.TrunkConfig`'s fields; transformers'
``SpeechT5Config`` names in the comments), with SpeechT5's positions: the conv embedding and a
sinusoidal one added to the frames, and relative keys in every encoder layer
(``encoder_position = ("conv", "sinusoidal", "relative")``).

The other parts are switched by config so that transformers' single-purpose classes convert
(``SpeechT5ForSpeechToText``: speech encoder + text decoder; ``SpeechT5ForSpeechToSpeech``:
speech encoder + speech decoder) while pretraining builds all of them:

* ``text_encoder``: the text encoder pre-net (token embedding + scaled positions).
* ``text_decoder``: the text decoder pre-net (token embedding + sinusoidal positions) and
  post-net (``lm_head``, tied to the embedding when ``tie_word_embeddings``).
* ``speech_decoder``: the speech decoder pre-net (2 × 256 ReLU + consistent dropout) and
  post-net (mel + stop-token heads, 5-conv residual post-net, ``reduction_factor`` frames per step).

Presets: :func:`tiny` (CPU), :func:`base` (SpeechT5 Base, ``microsoft/speecht5_asr`` sizes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from speechssl.nn.unit_prediction import UnitPredictionConfig

__all__ = ["SpeechT5Config", "tiny", "base", "PRESETS"]


@dataclass
class SpeechT5Config(UnitPredictionConfig):
    """Architecture of a SpeechT5 model (trunk + unit-prediction head fields, then the SpeechT5 parts)."""

    encoder_position: tuple[str, ...] = ("conv", "sinusoidal", "relative")  # SpeechT5's speech encoder
    max_relative_distance: int = 160  # encoder_max_relative_position

    # --- which parts exist ---------------------------------------------------------------
    text_encoder: bool = True  # text encoder pre-net (needs vocab_size)
    text_decoder: bool = True  # text decoder pre-net + lm_head (needs vocab_size)
    speech_decoder: bool = True  # speech decoder pre-net + post-net

    # --- text (sentencepiece vocabulary) ------------------------------------------------------
    vocab_size: int = 0  # tokens, set from the sentencepiece model (0: no text parts)
    pad_token_id: int = 3  # speechssl sentencepiece ids: unk 0, bos 1, eos 2, pad 3 (transformers: pad 1)
    bos_token_id: int = 1
    eos_token_id: int = 2
    decoder_start_token_id: int = 2  # first input of the text decoder (transformers: eos)
    tie_word_embeddings: bool = True  # lm_head shares the token embedding
    scale_embedding: bool = False  # text decoder embeddings times sqrt(D)
    positional_dropout: float = 0.1  # after the pre-nets' position embeddings
    # position of the first speech frame / text token in the "concat" sinusoidal tables
    # (transformers: pad_token_id + 1, positions start after the padding index)
    position_offset: int = 4  # pad_token_id + 1, as transformers

    # --- decoder -------------------------------------------------------------------------------
    decoder_layers: int = 6
    decoder_ffn_embed_dim: int = 3072
    decoder_attention_heads: int = 12
    decoder_layerdrop: float = 0.0

    # --- speech decoder pre/post-nets -------------------------------------------------------------
    num_mel_bins: int = 80  # log-mel channels of the targets
    reduction_factor: int = 2  # mel frames predicted per decoder step
    speech_decoder_prenet_layers: int = 2
    speech_decoder_prenet_units: int = 256
    speech_decoder_prenet_dropout: float = 0.5  # consistent dropout (one mask for the whole batch)
    prenet_dropout_in_eval: bool = True  # Tacotron 2 §2.2: the pre-net dropout also runs at inference
    speech_decoder_postnet_layers: int = 5
    speech_decoder_postnet_units: int = 256
    speech_decoder_postnet_kernel: int = 5
    speech_decoder_postnet_dropout: float = 0.5
    speaker_embedding_dim: int = 0  # x-vector width fed to the speech decoder pre-net (0: none)

    # --- cross-modal quantizer (pretraining only) -----------------------------------------------
    codebook_groups: int = 2  # G codebooks
    codebook_vars: int = 100  # V entries per codebook
    codebook_mix_prob: float = 0.1  # fraction of encoder positions replaced by their quantized vector
    codebook_temperature: tuple[float, float, float] = (2.0, 0.5, 0.999995)  # Gumbel (max, min, decay)

    @property
    def has_text(self) -> bool:
        """Whether any text pre/post-net exists."""
        return self.text_encoder or self.text_decoder

    def validate(self) -> None:
        """Raise ValueError naming the field when the settings cannot build a model."""
        super().validate()
        if self.has_text and self.vocab_size < 4:
            raise ValueError(f"vocab_size must be >= 4 with text_encoder/text_decoder, got {self.vocab_size} "
                             "(set it from the sentencepiece model)")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
            value = getattr(self, name)
            if self.has_text and not 0 <= value < self.vocab_size:
                raise ValueError(f"{name} ({value}) must be in [0, vocab_size={self.vocab_size})")
        if self.encoder_embed_dim % self.decoder_attention_heads:
            raise ValueError(f"encoder_embed_dim ({self.encoder_embed_dim}) must be divisible by "
                             f"decoder_attention_heads ({self.decoder_attention_heads})")
        if self.decoder_layers < 1:
            raise ValueError(f"decoder_layers must be >= 1, got {self.decoder_layers}")
        if self.reduction_factor < 1:
            raise ValueError(f"reduction_factor must be >= 1, got {self.reduction_factor}")
        if self.speech_decoder_postnet_layers < 1 or self.speech_decoder_prenet_layers < 1:
            raise ValueError("speech_decoder_prenet_layers and speech_decoder_postnet_layers must be >= 1")
        for name in ("speech_decoder_prenet_dropout", "speech_decoder_postnet_dropout", "positional_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if not 0.0 <= self.decoder_layerdrop < 1.0:
            raise ValueError(f"decoder_layerdrop must be in [0, 1), got {self.decoder_layerdrop}")
        if not 0.0 <= self.codebook_mix_prob <= 1.0:
            raise ValueError(f"codebook_mix_prob must be in [0, 1], got {self.codebook_mix_prob}")
        if self.encoder_embed_dim % self.codebook_groups:
            raise ValueError(f"encoder_embed_dim ({self.encoder_embed_dim}) must be divisible by "
                             f"codebook_groups ({self.codebook_groups})")
        if self.speaker_embedding_dim < 0:
            raise ValueError(f"speaker_embedding_dim must be >= 0, got {self.speaker_embedding_dim}")


def tiny() -> SpeechT5Config:
    """A ~0.9M-parameter SpeechT5 upstream that pretrains on CPU in seconds (HuBERT tiny's conv geometry)."""
    return SpeechT5Config(
        conv_feature_layers=((64, 10, 5),) + ((64, 3, 2),) * 4 + ((64, 2, 2),) * 2,
        encoder_layers=2,
        encoder_embed_dim=128,
        encoder_ffn_embed_dim=256,
        encoder_attention_heads=4,
        conv_pos=32,
        conv_pos_groups=8,
        max_relative_distance=64,
        final_dim=64,
        feature_grad_mult=0.1,
        mask_prob=0.5,
        untie_final_proj=True,
        vocab_size=64,
        decoder_layers=2,
        decoder_ffn_embed_dim=256,
        decoder_attention_heads=4,
        speech_decoder_prenet_units=64,
        speech_decoder_postnet_units=64,
        num_mel_bins=40,
    )


def base() -> SpeechT5Config:
    """SpeechT5 Base: 12-layer encoder, 6-layer decoder, width 768 (fairseq ``speecht5_base``)."""
    return SpeechT5Config(
        encoder_layers=12,
        encoder_embed_dim=768,
        encoder_ffn_embed_dim=3072,
        encoder_attention_heads=12,
        final_dim=256,
        encoder_layerdrop=0.05,
        dropout_input=0.1,
        dropout=0.1,
        attention_dropout=0.1,
        activation_dropout=0.1,
        feature_grad_mult=1.0,
        mask_prob=0.8,
        untie_final_proj=True,
        vocab_size=81,
        decoder_layers=6,
        decoder_ffn_embed_dim=3072,
        decoder_attention_heads=12,
        decoder_layerdrop=0.05,
    )


PRESETS: dict[str, Callable[[], SpeechT5Config]] = {"tiny": tiny, "base": base}
