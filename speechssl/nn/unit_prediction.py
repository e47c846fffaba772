"""Masked prediction of frame units on the wav2vec 2.0 / HuBERT trunk (HuBERT's pretraining head).

Shared by the methods that predict k-means units from masked audio (HuBERT, HuBERTopic, ...):
:class:`UnitPredictionModel` holds the trunk under ``upstream.`` and adds the prediction head
with fairseq's parameter names, so a fairseq HuBERT state dict maps to it by renaming only::

    upstream.*           the trunk (:class:`~speechssl.nn.trunk.Wav2Vec2Trunk` subclass)
    final_proj.*         Linear(D, final_dim * n) (untied) or Linear(D, final_dim)
    label_embs_concat    (Σ_i K_i, final_dim), one embedding per class of each label set
    target_glu.*         optional Linear(final_dim, 2 final_dim) + GLU on the label embeddings

Each frame's final hidden state is projected and compared by cosine similarity with every class
embedding of each label set; logits are divided by ``logit_temp``
(:func:`speechssl.nn.losses.cosine_logits`). Frame ``t`` of the model reads label
``floor(t * label_rate * downsample_rate / sample_rate)``; frames without a label are padding.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar, Sequence, TypedDict

import torch
from torch import nn

from speechssl.nn.lengths import padding_mask
from speechssl.nn.losses import cosine_logits
from speechssl.nn.trunk import TrunkConfig, TrunkFeatures, Wav2Vec2Trunk

__all__ = ["UnitPredictionConfig", "UnitPredictionModel", "UnitPredictionOutput", "HUBERT_SIZES"]

#: HuBERT's model sizes as config fields, for the presets of every method with HuBERT's
#: architecture (HuBERT, HuBERTopic...): ``MyConfig(**HUBERT_SIZES["base"], my_field=...)``.
#:
#: * ``tiny``: the quickstart model (~2.0M parameters): Base's 7-layer conv geometry (400-sample
#:   receptive field, 320 stride, 50 Hz) with 64 channels (the conv stack dominates CPU time: 64
#:   channels train ~1.7x faster than 128) and 4 transformer layers of width 192; mask_prob 0.5
#:   rather than 0.8: with minutes of audio and a few hundred updates, 0.8 leaves too little
#:   context and the model only learns the label prior (measured on the tiny corpus).
#: * ``base``: HuBERT Base (12 x 768, ~94.7M), fairseq ``hubert_base_librispeech.yaml``.
#: * ``large``: HuBERT Large (24 x 1024, pre-LN, LayerNorm conv encoder with biases, normalised
#:   waveform; ~316M); ``conv_bias=True`` as in the released checkpoints (the YAML leaves it out).
HUBERT_SIZES: dict[str, dict[str, object]] = {
    "tiny": dict(conv_feature_layers=((64, 10, 5),) + ((64, 3, 2),) * 4 + ((64, 2, 2),) * 2,
                 encoder_layers=4, encoder_embed_dim=192, encoder_ffn_embed_dim=768, encoder_attention_heads=4,
                 conv_pos=32, conv_pos_groups=8, final_dim=64, dropout=0.1, attention_dropout=0.1,
                 dropout_input=0.1, dropout_features=0.1, feature_grad_mult=0.1, mask_prob=0.5,
                 untie_final_proj=True),
    "base": dict(extractor_mode="default", encoder_layers=12, encoder_embed_dim=768, encoder_ffn_embed_dim=3072,
                 encoder_attention_heads=12, final_dim=256, encoder_layerdrop=0.05, dropout_input=0.1,
                 dropout_features=0.1, dropout=0.1, attention_dropout=0.1, feature_grad_mult=0.1,
                 untie_final_proj=True, mask_prob=0.8),
    "large": dict(extractor_mode="layer_norm", conv_bias=True, normalize=True, layer_norm_first=True,
                  encoder_layers=24, encoder_embed_dim=1024, encoder_ffn_embed_dim=4096, encoder_attention_heads=16,
                  final_dim=768, encoder_layerdrop=0.0, dropout_input=0.0, dropout_features=0.0, dropout=0.0,
                  attention_dropout=0.0, feature_grad_mult=1.0, untie_final_proj=True, mask_prob=0.8),
}


@dataclass
class UnitPredictionConfig(TrunkConfig):
    """The trunk's settings plus HuBERT's prediction head (field names: fairseq ``HubertConfig``'s).

    :class:`UnitPredictionModel` reads only these six head fields from its config, so any config
    that has them (a subclass of this one, or a method's own config with the same fields) works.
    """

    # --- prediction head (pretraining only) ------------------------------------------
    final_dim: int = 0  # projection width for logits; <= 0 means encoder_embed_dim
    untie_final_proj: bool = False  # a separate projection per label set
    target_glu: bool = False  # a Linear + GLU applied to label embeddings
    logit_temp: float = 0.1  # cosine similarities are divided by this
    skip_masked: bool = False  # no loss on masked frames
    skip_nomask: bool = False  # no loss on unmasked frames

    def validate(self) -> None:
        """Raise ValueError naming the field when the settings cannot build a model."""
        super().validate()
        if self.logit_temp <= 0:
            raise ValueError(f"logit_temp must be > 0, got {self.logit_temp}")


class UnitPredictionOutput(TypedDict):
    """What :meth:`UnitPredictionModel.forward` returns (a dict, so DDP can find its tensors).

    Keys:
        logits_masked / logits_unmasked: per label set, ``(N, K_i)`` float32 cosine logits / temperature
            of the masked / unmasked valid frames (empty lists when skipped).
        targets_masked / targets_unmasked: per label set, ``(N,)`` int64 class ids.
        features_pen: scalar, mean squared conv feature over valid frames.
        mask_indices: ``(B, T)`` bool.
        lengths: ``(B,)`` label-aligned valid frames.
    """

    logits_masked: list[torch.Tensor]
    targets_masked: list[torch.Tensor]
    logits_unmasked: list[torch.Tensor]
    targets_unmasked: list[torch.Tensor]
    features_pen: torch.Tensor
    mask_indices: torch.Tensor
    lengths: torch.Tensor


class UnitPredictionModel(nn.Module):
    """A trunk with the masked unit-prediction head: ``upstream`` + ``final_proj`` + ``label_embs_concat``.

    Subclasses set :attr:`upstream_cls` (their upstream, a :class:`Wav2Vec2Trunk` subclass built
    as ``upstream_cls(config)``) and may add heads of their own; :meth:`forward_units` gives them
    the encoder output beside the unit predictions.

    Args:
        config: the model config: the trunk's fields plus the head fields of
            :class:`UnitPredictionConfig` (``final_dim``, ``untie_final_proj``, ``target_glu``,
            ``logit_temp``, ``skip_masked``, ``skip_nomask``).
        num_classes: classes ``K_i`` of each label set (dictionary sizes).
        label_rates: frame rate (Hz) of each label set, e.g. 100 for MFCC k-means labels, 50 for
            HuBERT-feature labels.
        sample_rate: audio sample rate.

    Raises:
        ValueError: no label sets, a rate per set missing, or a non-positive size or rate.
    """

    upstream_cls: ClassVar[type[Wav2Vec2Trunk]] = Wav2Vec2Trunk

    def __init__(self, config: TrunkConfig, num_classes: Sequence[int], label_rates: Sequence[float],
                 sample_rate: int = 16000) -> None:
        super().__init__()
        if len(num_classes) == 0:
            raise ValueError("num_classes is empty: give the dictionary size of each label set")
        if len(label_rates) != len(num_classes):
            raise ValueError(f"got {len(label_rates)} label rates for {len(num_classes)} label sets")
        if min(num_classes) < 1 or min(label_rates) <= 0:
            raise ValueError(f"num_classes and label_rates must be positive, got {list(num_classes)}, "
                             f"{list(label_rates)}")
        # creation order (trunk, final_proj, target_glu, label_embs_concat) fixes the initial weights
        self.upstream = self.upstream_cls(config)
        self.config = config
        self.num_classes = [int(k) for k in num_classes]
        self.label_rates = [float(r) for r in label_rates]
        D = config.encoder_embed_dim
        final_dim = config.final_dim if config.final_dim > 0 else D
        n = len(self.num_classes)
        self.final_proj = nn.Linear(D, final_dim * n) if config.untie_final_proj else nn.Linear(D, final_dim)
        self.target_glu = (nn.Sequential(nn.Linear(final_dim, final_dim * 2), nn.GLU())
                           if config.target_glu else None)
        self.label_embs_concat = nn.Parameter(torch.empty(sum(self.num_classes), final_dim).uniform_())
        # label frames per model frame, exact: label_rate * downsample_rate / sample_rate
        self._ratios = [Fraction(r).limit_denominator(10_000) * config.downsample_rate / sample_rate
                        for r in self.label_rates]

    def _align_targets(self, targets: Sequence[torch.Tensor], target_lengths: Sequence[torch.Tensor],
                       T: int, frame_lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Pick the label of each model frame; frames whose label is missing become padding.

        Returns:
            per label set ``(B, T)`` class ids, and ``(B,)`` frames that have every label.
        """
        if len(targets) != len(self.num_classes) or len(target_lengths) != len(targets):
            raise ValueError(f"expected {len(self.num_classes)} target tensors and as many length tensors, "
                             f"got {len(targets)} and {len(target_lengths)}")
        device = frame_lengths.device
        lengths = frame_lengths
        steps = torch.arange(T, device=device)
        indices = []
        for tlen, ratio in zip(target_lengths, self._ratios):
            p, q = ratio.numerator, ratio.denominator
            # frame t reads label floor(t * p / q), which exists iff t < ceil(len * q / p)
            lengths = torch.minimum(lengths, torch.div(tlen.to(device) * q + p - 1, p, rounding_mode="floor"))
            indices.append(torch.div(steps * p, q, rounding_mode="floor"))
        valid = ~padding_mask(lengths, T)
        aligned = []
        for i, (tgt, idx) in enumerate(zip(targets, indices)):
            idx = idx.clamp(max=max(tgt.shape[1] - 1, 0)).unsqueeze(0).expand(tgt.shape[0], -1)
            a = tgt.gather(1, idx) if tgt.shape[1] else tgt.new_zeros(tgt.shape[0], T)
            a = a.masked_fill(~valid, 0)  # (B, T)
            if a.numel() and (int(a.min()) < 0 or int(a.max()) >= self.num_classes[i]):
                raise ValueError(f"label set {i}: class ids must be in [0, {self.num_classes[i]}), found "
                                 f"{int(a.min())}..{int(a.max())}; does the dictionary match the labels?")
            aligned.append(a)
        return aligned, lengths

    def _logits(self, x: torch.Tensor, i: int, embs: torch.Tensor) -> torch.Tensor:
        if self.target_glu is not None:
            embs = self.target_glu(embs)
        return cosine_logits(x, embs, self.config.logit_temp)  # (N, K_i) float32

    def _predict(self, x: torch.Tensor, sel: torch.Tensor, targets: list[torch.Tensor]
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        proj = self.final_proj(x[sel])  # (N, final_dim * n) or (N, final_dim)
        n = len(self.num_classes)
        projs = proj.chunk(n, dim=-1) if self.config.untie_final_proj else [proj] * n
        embs = self.label_embs_concat.split(self.num_classes, 0)
        logits = [self._logits(p, i, e) for i, (p, e) in enumerate(zip(projs, embs))]
        return logits, [t[sel] for t in targets]

    def forward_units(self, source: torch.Tensor, lengths: torch.Tensor, targets: Sequence[torch.Tensor],
                      target_lengths: Sequence[torch.Tensor], *, mask: bool | torch.Tensor = True,
                      generator: torch.Generator | None = None) -> tuple[UnitPredictionOutput, TrunkFeatures]:
        """Masked prediction of frame labels, and the encoder output it was computed from.

        Args: see :meth:`forward`.

        Returns:
            the :class:`UnitPredictionOutput` and the trunk's :class:`TrunkFeatures` (hidden states
            ``(B, T, D)`` of every layer, with ``lengths`` the label-aligned valid frames).
        """
        features, frame_lengths = self.upstream.forward_features(source, lengths)
        B, T, _ = features.shape
        aligned, frame_lengths = self._align_targets(targets, target_lengths, T, frame_lengths)
        valid = ~padding_mask(frame_lengths, T)  # (B, T)
        n_valid = valid.sum().clamp(min=1) * features.shape[-1]
        features_pen = (features.float().pow(2) * valid.unsqueeze(-1)).sum() / n_valid
        out = self.upstream.encode(features, frame_lengths, mask=mask, generator=generator)
        x = out.hidden_states[-1]  # (B, T, D)
        mask_indices = out.mask_indices if out.mask_indices is not None else torch.zeros_like(valid)
        result: UnitPredictionOutput = {
            "logits_masked": [], "targets_masked": [], "logits_unmasked": [], "targets_unmasked": [],
            "features_pen": features_pen, "mask_indices": mask_indices, "lengths": frame_lengths,
        }
        if not self.config.skip_masked:
            result["logits_masked"], result["targets_masked"] = self._predict(x, valid & mask_indices, aligned)
        if not self.config.skip_nomask:
            result["logits_unmasked"], result["targets_unmasked"] = self._predict(x, valid & ~mask_indices, aligned)
        return result, out

    def forward(self, source: torch.Tensor, lengths: torch.Tensor, targets: Sequence[torch.Tensor],
                target_lengths: Sequence[torch.Tensor], *, mask: bool | torch.Tensor = True,
                generator: torch.Generator | None = None) -> UnitPredictionOutput:
        """Masked prediction of frame labels.

        Args:
            source: ``(B, S)`` 16 kHz samples, right-padded.
            lengths: ``(B,)`` valid samples.
            targets: per label set, ``(B, T_i)`` int64 class ids at that set's label rate (padding any value).
            target_lengths: per label set, ``(B,)`` valid labels.
            mask: True samples a time mask; a ``(B, T)`` bool tensor fixes it; False disables masking.
            generator: CPU generator for the mask (None: torch's global RNG).
        """
        return self.forward_units(source, lengths, targets, target_lengths, mask=mask, generator=generator)[0]
