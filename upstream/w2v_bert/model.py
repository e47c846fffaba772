"""w2v-BERT: the upstream encoder (:class:`W2vBertModel`) and its pretraining head (:class:`W2vBertPretrainModel`).

Upstream (transformers ``Wav2Vec2BertModel`` numerics; key names in :mod:`.hf`)::

    wavs ─ StackedFbank ─▶ feats (B, T, 160) ─ feature_projection.layer_norm ─▶ y (B, T, 160)
         (frontend="conv": SubsampledFbank, the paper's 2-layer conv subsampling ─▶ feats (B, T, D) at 25 Hz)
         ─ feature_projection.projection ─ dropout ─▶ x (B, T, D) ─ [mask_emb on masked frames]
         ─ encoder (N + M conformer layers) ─▶ hidden_states [h_0 = x, h_1, ..., h_{N+M}]

Pretraining (Chung et al. 2021; Wav2Vec2ConformerForPreTraining for the contrastive part)::

    y ─ dropout_features ─ quantizer (G × V Gumbel codebooks) ─▶ q, code ids (B, T, G)
    contrastive: cos(final_proj(h_N), project_q(q)) / logit_temp vs K in-utterance distractors
                 + diversity (G·V − perplexity) / (G·V) × masked frames
    MLM:         mlm_proj(h_{N+M}) → (G, V) logits, cross-entropy against the code ids of masked frames

Padding never changes an utterance's upstream outputs: the fbank statistics use valid frames
only, attention never reads padded keys, and the causal depthwise convolution is fed zeros past
each end (:mod:`speechssl.nn.conformer`).
"""
from __future__ import annotations

from typing import Sequence, TypedDict

import torch
from torch import nn

from speechssl.nn.conformer import ConformerEncoder
from speechssl.nn.contrastive import contrastive_loss, sample_negatives
from speechssl.nn.conv_subsampling import SubsampledFbank
from speechssl.nn.fbank_stack import StackedFbank
from speechssl.nn.lengths import pad_waveforms, padding_mask
from speechssl.nn.masking import compute_mask_indices
from speechssl.nn.quantizer import GumbelVectorQuantizer
from speechssl.upstream.w2v_bert.config import W2vBertConfig

__all__ = ["W2vBertModel", "W2vBertPretrainModel", "W2vBertPretrainOutput", "FeatureProjection"]


class FeatureProjection(nn.Module):
    """``LayerNorm(160) → Linear(160, D) → Dropout`` (transformers ``Wav2Vec2BertFeatureProjection``)."""

    def __init__(self, input_dim: int, dim: int, *, eps: float = 1e-5, dropout: float = 0.0) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(input_dim, eps=eps)
        self.projection = nn.Linear(input_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, 160)`` → projected ``(B, T, D)`` and the normalised features ``(B, T, 160)``."""
        y = self.layer_norm(feats)
        return self.dropout(self.projection(y)), y


class W2vBertModel(nn.Module):
    """The w2v-BERT upstream: stacked fbank → projection → conformer (the upstream contract).

    Attributes:
        method: ``"w2v_bert"``.
        config: the :class:`W2vBertConfig`.
        hidden_sizes: ``[D] * (N + M + 1)``.
        downsample_rate: 320 samples per frame (for ``stack=2``).
    """

    method = "w2v_bert"

    def __init__(self, config: W2vBertConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        c = config
        self.frontend: StackedFbank | SubsampledFbank
        if c.frontend == "conv":
            self.frontend = SubsampledFbank(c.num_mel_bins, c.conv_channels or c.encoder_embed_dim,
                                            c.encoder_embed_dim, normalize=c.fbank_normalize)
        else:
            self.frontend = StackedFbank(c.num_mel_bins, c.stack, normalize=c.fbank_normalize)
        self.feature_projection = FeatureProjection(self.frontend.output_dim, c.encoder_embed_dim,
                                                    eps=c.layer_norm_eps, dropout=c.dropout_input)
        self.mask_emb = nn.Parameter(torch.empty(c.encoder_embed_dim).uniform_())
        self.encoder = ConformerEncoder(
            c.encoder_embed_dim, c.encoder_ffn_embed_dim, c.encoder_layers, c.encoder_attention_heads,
            depthwise_kernel_size=c.depthwise_kernel_size, position=c.position, conv_norm=c.conv_norm,
            dropout=c.dropout, attention_dropout=c.attention_dropout, activation_dropout=c.activation_dropout,
            activation_fn=c.activation_fn, layer_norm_eps=c.layer_norm_eps, layerdrop=c.encoder_layerdrop,
            rotary_base=c.rotary_base, encoder_layer_norm=False, conv_causal=c.conv_causal,
            left_max_distance=c.left_max_distance, right_max_distance=c.right_max_distance)

    @classmethod
    def from_config(cls, config: W2vBertConfig) -> "W2vBertModel":
        """A freshly initialised model."""
        return cls(config)

    @property
    def hidden_sizes(self) -> list[int]:
        return [self.config.encoder_embed_dim] * (self.config.encoder_layers + 1)

    @property
    def downsample_rate(self) -> int:
        return self.frontend.downsample_rate

    def forward_features(self, source: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, S)`` samples, ``(B,)`` lengths → stacked fbank ``(B, T, 160)`` and ``(B,)`` frames."""
        return self.frontend(source, lengths.to(source.device))

    def encode(self, x: torch.Tensor, frame_lengths: torch.Tensor, mask: torch.Tensor | None = None
               ) -> list[torch.Tensor]:
        """Projected frames ``(B, T, D)`` → hidden states ``[h_0 .. h_{N+M}]``; ``mask`` ``(B, T)`` frames get ``mask_emb``."""
        if mask is not None:
            x = torch.where(mask.unsqueeze(-1), self.mask_emb.to(x.dtype), x)
        return self.encoder(x, frame_lengths)

    def extract_features(self, source: torch.Tensor, lengths: torch.Tensor) -> dict[str, object]:
        """The upstream contract for a padded batch ``(B, S)`` with ``(B,)`` valid samples."""
        feats, frame_lengths = self.forward_features(source, lengths)
        x, _ = self.feature_projection(feats)
        hidden = self.encode(x, frame_lengths)
        return {"hidden_states": hidden, "last_hidden_state": hidden[-1], "lengths": frame_lengths}

    def forward(self, wavs: Sequence[torch.Tensor]) -> dict[str, object]:
        """Encode a list of waveforms (the upstream contract).

        Args:
            wavs: ``B`` float tensors ``(S_i,)`` at 16 kHz (shorter than 720 samples: 0 frames).

        Returns:
            ``hidden_states``: ``N + M + 1`` tensors ``(B, T, D)`` (the projected features, then each
            conformer layer's output); ``last_hidden_state``; ``lengths`` ``(B,)`` int64. Padded frames are 0.
        """
        x, lengths = pad_waveforms(wavs)
        return self.extract_features(x, lengths)


class W2vBertPretrainOutput(TypedDict):
    """What :meth:`W2vBertPretrainModel.forward` returns (sums over masked frames, float32).

    Keys:
        contrastive: summed contrastive cross-entropy; contrastive_correct: frames ranking their target first.
        diversity: ``(G·V − prob_perplexity) / (G·V) × num_masked`` (transformers' scaling).
        mlm: summed MLM cross-entropy over masked frames and codebooks; mlm_correct: (frame, group) ids right.
        features_pen: mean squared front-end feature over valid frames (no parameters precede it).
        num_masked: masked valid frames (int); prob_perplexity, code_perplexity: of the masked frames;
        codes_used: distinct (group, entry) codes chosen on masked frames; temperature: the Gumbel temperature.
        mask_indices: ``(B, T)`` bool; lengths: ``(B,)`` frames.
    """

    contrastive: torch.Tensor
    contrastive_correct: torch.Tensor
    diversity: torch.Tensor
    mlm: torch.Tensor
    mlm_correct: torch.Tensor
    features_pen: torch.Tensor
    num_masked: int
    prob_perplexity: torch.Tensor
    code_perplexity: torch.Tensor
    codes_used: int
    temperature: float
    mask_indices: torch.Tensor
    lengths: torch.Tensor


class W2vBertPretrainModel(nn.Module):
    """w2v-BERT with its heads: ``upstream``, ``quantizer``, ``project_q``, ``final_proj``, ``mlm_proj``.

    ``project_q`` and ``final_proj`` are transformers' ``project_q`` and ``project_hid``; the
    quantizer's parameters are fairseq-named (``vars`` = transformers ``codevectors``). The buffer
    ``num_updates`` holds the update count the Gumbel temperature is annealed to (checkpointed).
    """

    def __init__(self, config: W2vBertConfig) -> None:
        super().__init__()
        self.upstream = W2vBertModel(config)
        self.config = config
        c = config
        self.dropout_features = nn.Dropout(c.dropout_features)
        self.quantizer = GumbelVectorQuantizer(self.upstream.frontend.output_dim, c.latent_groups, c.latent_vars,
                                               c.latent_dim, temperature=c.latent_temp)
        self.project_q = nn.Linear(c.latent_dim, c.final_dim)
        self.final_proj = nn.Linear(c.encoder_embed_dim, c.final_dim)
        self.mlm_proj = nn.Linear(c.encoder_embed_dim, c.latent_groups * c.latent_vars)
        # the update count the Gumbel temperature anneals with, as a buffer so checkpoints carry it
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def set_num_updates(self, num_updates: int) -> None:
        """Anneal the quantizer temperature to update ``num_updates`` (``Task.on_update``)."""
        self.num_updates.fill_(int(num_updates))
        self.quantizer.set_num_updates(int(num_updates))

    def sample_mask(self, frame_lengths: torch.Tensor, T: int, generator: torch.Generator | None = None
                    ) -> torch.Tensor:
        """``(B, T)`` span mask (``mask_prob`` × ``mask_length``, at least ``mask_min_masks`` spans)."""
        c = self.config
        return compute_mask_indices((len(frame_lengths), T), frame_lengths.cpu(), c.mask_prob, c.mask_length,
                                    min_masks=c.mask_min_masks, generator=generator).to(frame_lengths.device)

    def contrastive_head(self, context: torch.Tensor, y: torch.Tensor, mask: torch.Tensor,
                         negatives: torch.Tensor | None = None, generator: torch.Generator | None = None):
        """Quantizer + contrastive + diversity terms (the part that matches ``Wav2Vec2ConformerForPreTraining``).

        Args:
            context: ``(B, T, D)`` the contrastive module's output ``h_N``.
            y: ``(B, T, 160)`` normalised features (quantizer input, before ``dropout_features``).
            mask: ``(B, T)`` bool masked (valid) frames.
            negatives: ``(B, T, K)`` distractor indices (None: :func:`~speechssl.nn.contrastive.sample_negatives`).
            generator: for the negatives and the Gumbel noise (None: torch's global one).

        Returns:
            ``(contrastive PredictionLoss, diversity sum, QuantizerOutput)``.
        """
        if self.quantizer.num_updates != int(self.num_updates):  # e.g. after a resume
            self.quantizer.set_num_updates(int(self.num_updates))
        q = self.quantizer(self.dropout_features(y), mask=mask, generator=generator)
        targets = self.project_q(q.quantized.to(self.project_q.weight.dtype))  # (B, T, final_dim)
        predicted = self.final_proj(context)  # (B, T, final_dim)
        if negatives is None:
            negatives = sample_negatives(mask, self.config.num_negatives, generator)
        con = contrastive_loss(predicted, targets, negatives, mask, self.config.logit_temp)
        diversity = q.diversity_loss * int(mask.sum())
        return con, diversity, q

    def mlm_loss(self, hidden: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of ``mlm_proj(hidden)`` against the code ids of the masked frames.

        Args:
            hidden: ``(B, T, D)`` the MLM module's output.
            codes: ``(B, T, G)`` int64 code ids (the quantizer's choices).
            mask: ``(B, T)`` bool masked frames.

        Returns:
            the cross-entropy summed over masked frames and the ``G`` codebooks (float32), and the
            number of (frame, codebook) ids predicted right.
        """
        V = self.config.latent_vars
        logits = self.mlm_proj(hidden[mask]).float().view(-1, V)  # (N·G, V)
        target = codes[mask].reshape(-1)  # (N·G,)
        loss = nn.functional.cross_entropy(logits, target, reduction="sum")
        with torch.no_grad():
            correct = (logits.argmax(-1) == target).sum()
        return loss, correct

    def forward(self, source: torch.Tensor, lengths: torch.Tensor, *, mask: bool | torch.Tensor = True,
                negatives: torch.Tensor | None = None, generator: torch.Generator | None = None
                ) -> W2vBertPretrainOutput:
        """Contrastive + MLM pretraining terms of a padded batch.

        Args:
            source: ``(B, S)`` 16 kHz samples, right-padded.
            lengths: ``(B,)`` valid samples.
            mask: True samples span masks; a ``(B, T)`` bool tensor fixes them.
            negatives: fixed ``(B, T, K)`` distractor indices (None: sampled).
            generator: CPU generator for masks, distractors and Gumbel noise (None: torch's global RNG).
        """
        up = self.upstream
        feats, frame_lengths = up.forward_features(source, lengths)
        B, T, _ = feats.shape
        valid = ~padding_mask(frame_lengths, T)  # (B, T)
        features_pen = (feats.float().pow(2) * valid.unsqueeze(-1)).sum() / (valid.sum().clamp(min=1) * feats.shape[-1])
        x, y = up.feature_projection(feats)
        if isinstance(mask, torch.Tensor):
            mask_indices = mask.to(device=x.device, dtype=torch.bool) & valid
        elif mask:
            mask_indices = self.sample_mask(frame_lengths, T, generator) & valid
        else:
            raise ValueError("w2v-BERT pretraining needs masked frames: pass mask=True or a (B, T) mask")
        hidden = up.encode(x, frame_lengths, mask_indices)
        N = self.config.contrastive_layers
        con, diversity, q = self.contrastive_head(hidden[N], y, mask_indices, negatives, generator)
        if self.config.mlm_layers > 0:
            mlm, mlm_correct = self.mlm_loss(hidden[-1], q.indices, mask_indices)
        else:
            mlm, mlm_correct = features_pen * 0.0, torch.zeros((), dtype=torch.long)
        with torch.no_grad():
            codes = q.indices[mask_indices]  # (N, G)
            offsets = torch.arange(self.config.latent_groups, device=codes.device) * self.config.latent_vars
            codes_used = int(torch.unique(codes + offsets).numel())
        return {"contrastive": con.loss, "contrastive_correct": con.correct, "diversity": diversity,
                "mlm": mlm, "mlm_correct": mlm_correct, "features_pen": features_pen, "num_masked": con.count,
                "prob_perplexity": q.prob_perplexity, "code_perplexity": q.code_perplexity,
                "codes_used": codes_used, "temperature": q.temperature, "mask_indices": mask_indices,
                "lengths": frame_lengths}
