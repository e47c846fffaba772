"""SpeechT5 (Ao et al., 2022): the shared encoder-decoder with speech and text pre/post-nets.

:class:`SpeechT5Model` is the upstream. Its speech encoder pre-net and shared encoder are the
wav2vec 2.0 / HuBERT trunk (:class:`~speechssl.nn.trunk.Wav2Vec2Trunk`: conv stack, LayerNorm,
projection, ``mask_emb``) whose transformer adds SpeechT5's positions to the frames (the conv
embedding and concat-layout sinusoids from ``position_offset``) and uses relative keys in every
layer. ``forward(wavs)`` is the upstream contract: the encoder's hidden states
(``downsample_rate`` 320 for the fairseq conv stack). Beside it:

* :meth:`encode_text` — text encoder pre-net, then the same encoder layers (relative keys only).
* :meth:`decode_text` — text decoder pre-net, the decoder over an encoder output, ``lm_head``.
* :meth:`decode_speech` — speech decoder pre-net, the decoder, the speech post-net.
* :meth:`generate_text` / :meth:`generate_speech` — greedy decoding (speech → text, text → mel).

Parameter names (speechssl / transformers ``SpeechT5ForSpeechToText`` etc., see
:mod:`speechssl.upstream.speecht5.convert`)::

    feature_extractor.*, layer_norm, post_extract_proj, mask_emb      speecht5.encoder.prenet.*
    encoder.pos_conv.0.*                                              speecht5.encoder.prenet.pos_conv_embed.conv.*
    encoder.layer_norm, encoder.pos_emb.pe_k, encoder.layers.j.*      speecht5.encoder.wrapped_encoder.*
    embed_tokens                                                      speecht5.{encoder,decoder}.prenet.embed_tokens
    text_encoder_prenet.encode_positions.alpha                        speecht5.encoder.prenet.encode_positions.alpha
    lm_head (only when not tied)                                      text_decoder_postnet.lm_head
    decoder.layers.j.*                                                speecht5.decoder.wrapped_decoder.layers.j.*
    speech_decoder_prenet.*                                           speecht5.decoder.prenet.*
    speech_decoder_postnet.*                                          speech_decoder_postnet.*
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from speechssl.nn.decoder import TransformerDecoder
from speechssl.nn.lengths import padding_mask
from speechssl.nn.position import SinusoidalPositionalEmbedding
from speechssl.nn.trunk import Wav2Vec2Trunk
from speechssl.upstream.speecht5.config import SpeechT5Config
from speechssl.upstream.speecht5.nets import (SpeechDecoderPostnet, SpeechDecoderPrenet, TextDecoderPrenet,
                                              TextEncoderPrenet)

__all__ = ["SpeechT5Model", "shift_tokens_right", "speech_decoder_inputs"]


def shift_tokens_right(tokens: torch.Tensor, lengths: torch.Tensor, start_id: int, pad_id: int) -> torch.Tensor:
    """Teacher-forcing decoder inputs: ``[start, y_0 .. y_{n-2}]`` per row, ``(B, L)`` → ``(B, L)``."""
    out = torch.cat([tokens.new_full((tokens.shape[0], 1), start_id), tokens[:, :-1]], dim=1)
    return out.masked_fill(padding_mask(lengths, tokens.shape[1]), pad_id)


def speech_decoder_inputs(mels: torch.Tensor, lengths: torch.Tensor, reduction_factor: int
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forcing speech decoder inputs (transformers ``shift_spectrograms_right``).

    Every ``r``-th target frame (``r - 1, 2r - 1, ...``), shifted right by one step with a zero
    frame first.

    Args:
        mels: ``(B, T, M)`` log-mel targets; lengths: ``(B,)`` valid frames.

    Returns:
        inputs ``(B, T // r, M)`` and valid steps ``(B,)`` (``floor(len / r)``).
    """
    r = reduction_factor
    reduced = mels[:, r - 1::r]  # (B, T // r, M)
    inputs = torch.cat([reduced.new_zeros(reduced.shape[0], 1, reduced.shape[2]), reduced[:, :-1]], dim=1)
    steps = torch.div(lengths, r, rounding_mode="floor")
    return inputs.masked_fill(padding_mask(steps, inputs.shape[1]).unsqueeze(-1), 0.0), steps


class SpeechT5Model(Wav2Vec2Trunk):
    """SpeechT5: the trunk as speech encoder pre-net + shared encoder, plus the optional parts.

    Args:
        config: a :class:`SpeechT5Config`.

    Attributes:
        downsample_rate, hidden_sizes: the encoder's (upstream contract).
    """

    method = "speecht5"

    def __init__(self, config: SpeechT5Config) -> None:
        super().__init__(config)
        D = config.encoder_embed_dim
        if self.encoder.pos_sinusoidal is not None:  # SpeechT5's speech positions: concat layout, from offset
            self.encoder.pos_sinusoidal = SinusoidalPositionalEmbedding(D, layout="concat",
                                                                        offset=config.position_offset)
        self.embed_tokens = None
        if config.has_text:  # fairseq's init: N(0, D^-1/2), padding row 0 (tied logits start near unit scale)
            self.embed_tokens = nn.Embedding(config.vocab_size, D, padding_idx=config.pad_token_id)
            nn.init.normal_(self.embed_tokens.weight, std=D ** -0.5)
            with torch.no_grad():
                self.embed_tokens.weight[config.pad_token_id].zero_()
        self.text_encoder_prenet = (TextEncoderPrenet(self.embed_tokens, config.positional_dropout)
                                    if config.text_encoder else None)
        self.text_decoder_prenet = (TextDecoderPrenet(self.embed_tokens, config.positional_dropout,
                                                      config.position_offset, config.scale_embedding)
                                    if config.text_decoder else None)
        self.lm_head = (nn.Linear(D, config.vocab_size, bias=False)
                        if config.text_decoder and not config.tie_word_embeddings else None)
        has_decoder = config.text_decoder or config.speech_decoder
        self.decoder = TransformerDecoder(
            D, config.decoder_ffn_embed_dim, config.decoder_layers, config.decoder_attention_heads,
            dropout=config.dropout, attention_dropout=config.attention_dropout,
            activation_dropout=config.activation_dropout, activation_fn=config.activation_fn,
            layer_norm_eps=config.layer_norm_eps, layerdrop=config.decoder_layerdrop) if has_decoder else None
        self.speech_decoder_prenet = SpeechDecoderPrenet(
            config.num_mel_bins, D, units=config.speech_decoder_prenet_units,
            layers=config.speech_decoder_prenet_layers, dropout=config.speech_decoder_prenet_dropout,
            positional_dropout=config.positional_dropout, speaker_embedding_dim=config.speaker_embedding_dim,
            in_eval=config.prenet_dropout_in_eval) if config.speech_decoder else None
        self.speech_decoder_postnet = SpeechDecoderPostnet(
            D, config.num_mel_bins, config.reduction_factor, units=config.speech_decoder_postnet_units,
            layers=config.speech_decoder_postnet_layers, kernel=config.speech_decoder_postnet_kernel,
            dropout=config.speech_decoder_postnet_dropout) if config.speech_decoder else None

    @property
    def vocab_size(self) -> int:
        """Text tokens (0 without text parts)."""
        return self.config.vocab_size if self.config.has_text else 0

    def _require(self, part: str) -> None:
        if getattr(self, part) is None:
            raise ValueError(f"this SpeechT5 model has no {part} (see the config's text_encoder / text_decoder / "
                             "speech_decoder fields)")

    # --- encoder ------------------------------------------------------------------------------

    def encode_embedded(self, x: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """Pre-net output → the shared encoder's hidden states, without the speech position embeddings.

        The encoder's LayerNorm, dropout, layer drop and layers with their relative keys; the
        absolute (speech) position embeddings are left out, text gets its own in the pre-net.

        Args:
            x: ``(B, T, D)``; lengths: ``(B,)``.

        Returns:
            ``L + 1`` tensors ``(B, T, D)``, padded steps 0.
        """
        return self.encoder(x, lengths, absolute_positions=False)

    def encode_text(self, tokens: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """``tokens`` ``(B, L)`` int64, ``lengths`` ``(B,)`` → the encoder's ``L + 1`` hidden states ``(B, L, D)``."""
        self._require("text_encoder_prenet")
        return self.encode_embedded(self.text_encoder_prenet(tokens), lengths)

    # --- decoder ------------------------------------------------------------------------------

    def text_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Text post-net: decoder states ``(B, L, D)`` → logits ``(B, L, V)``."""
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(h, weight)

    def decode_text(self, tokens: torch.Tensor, lengths: torch.Tensor, memory: torch.Tensor | None,
                    memory_lengths: torch.Tensor | None) -> torch.Tensor:
        """Teacher-forced text decoding.

        Args:
            tokens: ``(B, L)`` decoder inputs (:func:`shift_tokens_right` of the targets).
            lengths: ``(B,)`` valid inputs.
            memory: ``(B, S, D)`` encoder output (None: no cross-attention).
            memory_lengths: ``(B,)`` valid encoder frames.

        Returns:
            logits ``(B, L, V)``.
        """
        self._require("text_decoder_prenet")
        h = self.decoder(self.text_decoder_prenet(tokens, lengths), lengths, memory, memory_lengths)[-1]
        return self.text_logits(h)

    def decode_speech(self, mels: torch.Tensor, lengths: torch.Tensor, memory: torch.Tensor | None,
                      memory_lengths: torch.Tensor | None, speaker: torch.Tensor | None = None, *,
                      generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forced speech decoding.

        Args:
            mels: ``(B, T, M)`` decoder inputs (:func:`speech_decoder_inputs` of the targets).
            lengths: ``(B,)`` valid steps.
            memory, memory_lengths: the encoder output and its valid frames.
            speaker: ``(B, S)`` speaker embeddings when ``speaker_embedding_dim > 0``.
            generator: CPU generator for the pre-net's consistent dropout.

        Returns:
            mel before / after the post-net ``(B, T·r, M)`` and stop logits ``(B, T·r)``.
        """
        self._require("speech_decoder_prenet")
        x = self.speech_decoder_prenet(mels, speaker, generator=generator)
        h = self.decoder(x, lengths, memory, memory_lengths)[-1]
        return self.speech_decoder_postnet(h, lengths)

    # --- generation ---------------------------------------------------------------------------

    @torch.no_grad()
    def generate_text(self, wavs: list[torch.Tensor], max_length: int = 100) -> list[list[int]]:
        """Greedy speech → text decoding: one token-id list per waveform (without start and eos)."""
        out = self.forward(wavs)
        memory, mem_len = out["last_hidden_state"], out["lengths"]
        B = memory.shape[0]
        cfg = self.config
        tokens = torch.full((B, 1), cfg.decoder_start_token_id, dtype=torch.long, device=memory.device)
        done = torch.zeros(B, dtype=torch.bool, device=memory.device)
        for _ in range(max_length):
            lengths = torch.full((B,), tokens.shape[1], device=memory.device)
            nxt = self.decode_text(tokens, lengths, memory, mem_len)[:, -1].argmax(-1)
            nxt = nxt.masked_fill(done, cfg.pad_token_id)
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            done |= nxt == cfg.eos_token_id
            if bool(done.all()):
                break
        result = []
        for row in tokens[:, 1:].tolist():
            ids = []
            for t in row:
                if t in (cfg.eos_token_id, cfg.pad_token_id):
                    break
                ids.append(t)
            result.append(ids)
        return result

    @torch.no_grad()
    def generate_speech(self, tokens: torch.Tensor, lengths: torch.Tensor, speaker: torch.Tensor | None = None, *,
                        max_steps: int = 200, threshold: float = 0.5,
                        generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Greedy text → log-mel decoding: one ``(T_i, M)`` tensor per row of ``tokens`` ``(B, L)``."""
        hidden = self.encode_text(tokens, lengths)
        memory = hidden[-1]
        B, M, r = tokens.shape[0], self.config.num_mel_bins, self.config.reduction_factor
        inputs = memory.new_zeros(B, 1, M)
        frames: list[torch.Tensor] = []
        stop_at = torch.full((B,), -1, dtype=torch.long, device=memory.device)
        for step in range(max_steps):
            steps = torch.full((B,), inputs.shape[1], device=memory.device)
            _, after, stop = self.decode_speech(inputs, steps, memory, lengths, speaker, generator=generator)
            new = after[:, -r:]  # (B, r, M)
            frames.append(new)
            inputs = torch.cat([inputs, new[:, -1:]], dim=1)
            ended = (torch.sigmoid(stop[:, -r:]) >= threshold).any(-1) & (stop_at < 0)
            stop_at = torch.where(ended, torch.full_like(stop_at, step + 1), stop_at)
            if bool((stop_at >= 0).all()):
                break
        mel = torch.cat(frames, dim=1)  # (B, steps·r, M)
        ends = torch.where(stop_at < 0, torch.full_like(stop_at, len(frames)), stop_at) * r
        return [mel[i, : int(ends[i])] for i in range(B)]
