"""The wav2vec 2.0 / HuBERT trunk: conv waveform encoder + projection + transformer encoder.

HuBERT, wav2vec 2.0 and the methods built on them (HuBERTopic, LightHuBERT, SpeechT5's speech
encoder) share this upstream; each adds its own pretraining head on top. Data flow (fairseq
``HubertModel.forward`` / ``Wav2Vec2Model.forward``)::

    wav (B, S) ─[normalize]─ conv encoder ─▶ features (B, T, C) ─ LayerNorm ─ post_extract_proj
        ─ dropout_input ─ [mask: frames ← mask_emb] ─ transformer ─▶ hidden states (B, T, D) × (L + 1)

Parameter names equal fairseq's (``feature_extractor.conv_layers.0.0.weight``, ``layer_norm``,
``post_extract_proj``, ``mask_emb``, ``encoder.pos_conv.0.weight_g``, ``encoder.layers.0.self_attn.q_proj``
...), so fairseq and transformers checkpoints convert by renaming (:mod:`speechssl.convert`).

Padding never changes an utterance's outputs: GroupNorm statistics and waveform normalisation
use valid samples only, padded frames are zeroed before the position convolution, and attention
masks padded keys. Inputs shorter than the 400-sample receptive field yield zero frames
(``lengths == 0``), not an error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from speechssl.nn.activations import ActivationName
from speechssl.nn.conv_extractor import FAIRSEQ_CONV_LAYERS, ConvFeatureExtractor
from speechssl.nn.grad import grad_multiply
from speechssl.nn.lengths import pad_waveforms, padding_mask
from speechssl.nn.masking import MaskType, compute_mask_indices
from speechssl.nn.transformer import TransformerEncoder

__all__ = ["TrunkConfig", "Wav2Vec2Trunk", "TrunkFeatures", "normalize_waveform", "conv_features",
           "time_mask"]


@dataclass
class TrunkConfig:
    """Architecture and masking settings of the wav2vec 2.0 / HuBERT trunk (field names: fairseq's)."""

    # --- waveform encoder -------------------------------------------------------------
    # "default": GroupNorm in the first conv block; "layer_norm": LayerNorm in every block (Large).
    extractor_mode: Literal["default", "layer_norm"] = "default"
    # (channels, kernel, stride) of each conv layer; the product of strides is samples per frame.
    conv_feature_layers: tuple[tuple[int, int, int], ...] = FAIRSEQ_CONV_LAYERS
    # Bias in the conv layers.
    conv_bias: bool = False
    # Scale of the gradient reaching the conv encoder (0 freezes it; fairseq Base 0.1).
    feature_grad_mult: float = 1.0
    # Layer-normalise each waveform over its samples first (fairseq task.normalize; True for Large).
    normalize: bool = False

    # --- transformer --------------------------------------------------------------------
    encoder_layers: int = 12  # L, number of transformer layers
    encoder_embed_dim: int = 768  # D, transformer width
    encoder_ffn_embed_dim: int = 3072  # feed-forward inner width
    encoder_attention_heads: int = 12  # attention heads
    activation_fn: ActivationName = "gelu"  # feed-forward activation
    layer_norm_first: bool = False  # pre-LN (Large) instead of post-LN (Base)
    layer_norm_eps: float = 1e-5  # epsilon of the transformer LayerNorms
    conv_pos: int = 128  # width (frames) of the convolutional position embedding
    conv_pos_groups: int = 16  # groups of the convolutional position embedding
    # position modules of the transformer (speechssl.nn.transformer): conv, sinusoidal, relative
    # (SpeechT5's relative keys), any combination; ("conv",) is wav2vec 2.0 / HuBERT
    encoder_position: tuple[str, ...] = ("conv",)
    max_relative_distance: int = 160  # clamp of the "relative" position distances (frames)

    # --- dropout ------------------------------------------------------------------------
    dropout: float = 0.1  # on sub-block outputs and after the position embedding
    attention_dropout: float = 0.1  # on attention probabilities
    activation_dropout: float = 0.0  # after the feed-forward activation
    encoder_layerdrop: float = 0.0  # probability of skipping a layer in training
    dropout_input: float = 0.0  # on the projected conv features, before masking
    dropout_features: float = 0.0  # unused: fairseq computes dropped-out features HuBERT never reads; kept so fairseq configs load

    # --- time masking (pretraining) ---------------------------------------------------
    mask_prob: float = 0.8  # span-start probability per frame (fairseq Base/Large 0.8)
    mask_length: int = 10  # frames per span
    mask_selection: MaskType = "static"  # distribution of span lengths
    mask_other: float = 0.0  # second parameter of the uniform/normal span-length distribution
    mask_min_masks: int = 2  # at least this many spans per utterance (fairseq hard-codes 2)
    no_mask_overlap: bool = False  # place disjoint spans
    mask_min_space: int = 1  # gap between disjoint spans

    # --- channel masking (off for pretraining; fine-tuning uses it) -----------------------
    mask_channel_prob: float = 0.0  # span-start probability per channel
    mask_channel_length: int = 10  # channels per span
    mask_channel_selection: MaskType = "static"  # distribution of channel-span lengths
    mask_channel_other: float = 0.0  # its second parameter
    no_mask_channel_overlap: bool = False  # disjoint channel spans
    mask_channel_min_space: int = 1  # gap between disjoint channel spans

    @property
    def downsample_rate(self) -> int:
        """Samples per output frame (product of the conv strides)."""
        rate = 1
        for _, _, stride in self.conv_feature_layers:
            rate *= stride
        return rate

    def validate(self) -> None:
        """Raise ValueError naming the field when the settings cannot build a model."""
        if self.encoder_embed_dim % self.encoder_attention_heads:
            raise ValueError(f"encoder_embed_dim ({self.encoder_embed_dim}) must be divisible by "
                             f"encoder_attention_heads ({self.encoder_attention_heads})")
        if self.encoder_embed_dim % self.conv_pos_groups:
            raise ValueError(f"encoder_embed_dim ({self.encoder_embed_dim}) must be divisible by "
                             f"conv_pos_groups ({self.conv_pos_groups})")
        known = {"conv", "sinusoidal", "relative", "none"}
        if not self.encoder_position or not set(self.encoder_position) <= known:
            raise ValueError(f"encoder_position must name some of {', '.join(sorted(known))}, "
                             f"got {tuple(self.encoder_position)}")
        if self.max_relative_distance < 1:
            raise ValueError(f"max_relative_distance must be >= 1, got {self.max_relative_distance}")
        if self.encoder_layers < 1:
            raise ValueError(f"encoder_layers must be >= 1, got {self.encoder_layers}")
        if not self.conv_feature_layers:
            raise ValueError("conv_feature_layers is empty")
        for name in ("dropout", "attention_dropout", "activation_dropout", "dropout_input", "dropout_features",
                     "mask_prob", "mask_channel_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if not 0.0 <= self.encoder_layerdrop < 1.0:
            raise ValueError(f"encoder_layerdrop must be in [0, 1), got {self.encoder_layerdrop}")
        if self.feature_grad_mult < 0:
            raise ValueError(f"feature_grad_mult must be >= 0, got {self.feature_grad_mult}")


def normalize_waveform(x: torch.Tensor, lengths: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """Zero-mean, unit-variance each waveform over its valid samples (fairseq ``F.layer_norm(wav, wav.shape)``).

    Args:
        x: ``(B, S)`` samples.
        lengths: ``(B,)`` valid samples (None: all).

    Returns:
        ``(B, S)``; padded samples are 0.
    """
    xf = x.float()
    if lengths is None:
        return F.layer_norm(xf, xf.shape[-1:], eps=eps).to(x.dtype)
    valid = (~padding_mask(lengths, x.shape[1])).to(xf.dtype)
    count = valid.sum(1, keepdim=True).clamp(min=1.0)
    mean = (xf * valid).sum(1, keepdim=True) / count
    var = (((xf - mean) * valid) ** 2).sum(1, keepdim=True) / count
    return ((xf - mean) * torch.rsqrt(var + eps) * valid).to(x.dtype)


def conv_features(extractor: ConvFeatureExtractor, config: TrunkConfig, source: torch.Tensor,
                  lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Waveforms → conv features with the config's ``normalize`` and ``feature_grad_mult`` applied.

    Args:
        extractor: the conv waveform encoder.
        config: the trunk settings (``normalize``, ``feature_grad_mult``).
        source: ``(B, S)`` 16 kHz samples; lengths: ``(B,)`` valid samples (None: no padding).

    Returns:
        features ``(B, T, C)`` and frame lengths ``(B,)``.
    """
    if config.normalize:
        source = normalize_waveform(source, lengths)
    mult = config.feature_grad_mult
    if mult > 0:
        features, frame_lengths = extractor(source, lengths)
        return grad_multiply(features, mult), frame_lengths
    with torch.no_grad():
        return extractor(source, lengths)


def time_mask(config: TrunkConfig, mask: bool | torch.Tensor, lengths: torch.Tensor, shape: tuple[int, int],
              device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor | None:
    """The ``(B, T)`` bool frames to replace by ``mask_emb``, or None.

    Args:
        mask: False (none), True (sample with the config's masking settings) or a ``(B, T)`` bool
            mask to use (padded frames are dropped from it).
        lengths: ``(B,)`` valid frames; shape: ``(B, T)``; device: where the mask goes.
        generator: CPU generator of a sampled mask (None: torch's global RNG).
    """
    B, T = shape
    if isinstance(mask, torch.Tensor):
        if tuple(mask.shape) != (B, T) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor of shape ({B}, {T}), got {mask.dtype} "
                             f"{tuple(mask.shape)}")
        return mask & ~padding_mask(lengths, T)
    if not mask:
        return None
    c = config
    return compute_mask_indices(shape, lengths, c.mask_prob, c.mask_length, mask_type=c.mask_selection,
                                mask_other=c.mask_other, min_masks=c.mask_min_masks, no_overlap=c.no_mask_overlap,
                                min_space=c.mask_min_space, generator=generator).to(device)


@dataclass
class TrunkFeatures:
    """What :meth:`Wav2Vec2Trunk.extract_features` returns.

    Attributes:
        hidden_states: ``[h_0, ..., h_k]``, each ``(B, T, D)``, padded frames 0 (see
            :meth:`speechssl.nn.transformer.TransformerEncoder.forward` for the convention).
        lengths: ``(B,)`` valid frames.
        features: ``(B, T, C)`` conv features before LayerNorm/projection (for the feature penalty).
        mask_indices: ``(B, T)`` bool, frames replaced by ``mask_emb``; None without masking.
    """

    hidden_states: list[torch.Tensor]
    lengths: torch.Tensor
    features: torch.Tensor
    mask_indices: torch.Tensor | None


class Wav2Vec2Trunk(nn.Module):
    """Conv waveform encoder + projection + transformer, following the speechssl upstream contract.

    Methods subclass it and set :attr:`method`; their configs subclass :class:`TrunkConfig`.

    Attributes:
        config: the :class:`TrunkConfig` (subclass) it was built from.
        method: registry name of the method (set by the subclass).
        downsample_rate: samples per frame (320 for the fairseq conv stack).
        hidden_sizes: ``D`` of each of the ``L + 1`` hidden states.
    """

    method: str | None = None

    def __init__(self, config: TrunkConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        D = config.encoder_embed_dim
        self.feature_extractor = ConvFeatureExtractor(config.conv_feature_layers, config.extractor_mode,
                                                      config.conv_bias)
        C = self.feature_extractor.out_channels
        self.layer_norm = nn.LayerNorm(C)
        self.post_extract_proj = nn.Linear(C, D) if C != D else None
        self.dropout_input = nn.Dropout(config.dropout_input)
        self.mask_emb = nn.Parameter(torch.empty(D).uniform_())
        self.encoder = TransformerEncoder(
            D, config.encoder_ffn_embed_dim, config.encoder_layers, config.encoder_attention_heads,
            dropout=config.dropout, attention_dropout=config.attention_dropout,
            activation_dropout=config.activation_dropout, activation_fn=config.activation_fn,
            layer_norm_first=config.layer_norm_first, layer_norm_eps=config.layer_norm_eps,
            layerdrop=config.encoder_layerdrop, conv_pos=config.conv_pos, conv_pos_groups=config.conv_pos_groups,
            position=tuple(config.encoder_position), max_relative_distance=config.max_relative_distance)
        self.downsample_rate: int = config.downsample_rate
        self.hidden_sizes: list[int] = [D] * (config.encoder_layers + 1)

    @classmethod
    def from_config(cls, config: TrunkConfig) -> "Wav2Vec2Trunk":
        """A freshly initialised model."""
        return cls(config)

    @property
    def receptive_field(self) -> int:
        """Samples needed for one output frame."""
        return self.feature_extractor.receptive_field

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames produced from ``lengths`` samples, ``(B,)`` → ``(B,)``."""
        return self.feature_extractor.output_lengths(lengths)

    # --- stages ---------------------------------------------------------------------------

    def forward_features(self, source: torch.Tensor, lengths: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms → conv features (with ``normalize`` and ``feature_grad_mult`` applied).

        Args:
            source: ``(B, S)`` 16 kHz samples, at least :attr:`receptive_field` long.
            lengths: ``(B,)`` valid samples (None: no padding).

        Returns:
            features ``(B, T, C)`` and frame lengths ``(B,)``.
        """
        return conv_features(self.feature_extractor, self.config, source, lengths)

    def sample_mask(self, shape: tuple[int, int], lengths: torch.Tensor,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """Time mask ``(B, T)`` drawn with the config's masking settings (see :mod:`speechssl.nn.masking`)."""
        return time_mask(self.config, True, lengths, shape, lengths.device, generator)

    def _channel_mask(self, B: int, D: int, device: torch.device,
                      generator: torch.Generator | None) -> torch.Tensor | None:
        c = self.config
        if c.mask_channel_prob <= 0:
            return None
        return compute_mask_indices((B, D), None, c.mask_channel_prob, c.mask_channel_length,
                                    mask_type=c.mask_channel_selection, mask_other=c.mask_channel_other,
                                    no_overlap=c.no_mask_channel_overlap, min_space=c.mask_channel_min_space,
                                    generator=generator, device=device)

    def encode(self, features: torch.Tensor, lengths: torch.Tensor, *, mask: bool | torch.Tensor = False,
               output_layer: int | None = None, generator: torch.Generator | None = None) -> TrunkFeatures:
        """Conv features → hidden states.

        Args:
            features: ``(B, T, C)`` from :meth:`forward_features`.
            lengths: ``(B,)`` valid frames; frames past them are treated as padding.
            mask: False (none), True (sample a time mask and, if configured, a channel mask), or a
                ``(B, T)`` bool time mask to use.
            output_layer: run only the first ``output_layer`` transformer layers (1-based).
            generator: CPU generator for the sampled masks (None: torch's global RNG).
        """
        B, T, _ = features.shape
        x = self.layer_norm(features)
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        x = self.dropout_input(x)  # (B, T, D)
        mask_indices = time_mask(self.config, mask, lengths, (B, T), x.device, generator)
        if not isinstance(mask, torch.Tensor) and mask:  # sampled: the channel mask too, after the time mask
            channel = self._channel_mask(B, x.shape[-1], x.device, generator)
            if channel is not None:
                x = x.masked_fill(channel.unsqueeze(1), 0.0)
        if mask_indices is not None:
            x = torch.where(mask_indices.unsqueeze(-1), self.mask_emb.to(x.dtype), x)
        hidden = self.encoder(x, lengths, output_layer=output_layer)
        return TrunkFeatures(hidden_states=hidden, lengths=lengths, features=features, mask_indices=mask_indices)

    def extract_features(self, source: torch.Tensor, lengths: torch.Tensor | None = None, *,
                         mask: bool | torch.Tensor = False, output_layer: int | None = None,
                         generator: torch.Generator | None = None) -> TrunkFeatures:
        """Waveforms → hidden states (fairseq ``extract_features``).

        Args:
            source: ``(B, S)`` 16 kHz samples, right-padded, at least :attr:`receptive_field` long.
            lengths: ``(B,)`` valid samples (None: no padding).
            mask, output_layer, generator: see :meth:`encode`.
        """
        if source.dim() != 2:
            raise ValueError(f"expected waveforms (B, S), got shape {tuple(source.shape)}")
        features, frame_lengths = self.forward_features(source, lengths)
        return self.encode(features, frame_lengths, mask=mask, output_layer=output_layer, generator=generator)

    # --- upstream contract -------------------------------------------------------------------

    def forward(self, wavs: Sequence[torch.Tensor]) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Encode a list of waveforms (the upstream contract).

        Args:
            wavs: ``B`` float tensors ``(S_i,)`` at 16 kHz. Waveforms shorter than
                :attr:`receptive_field` (400 samples for the fairseq stack) give 0 frames.

        Returns:
            ``hidden_states``: ``L + 1`` tensors ``(B, T, D)`` (input of layer 1, then each layer's
            output; for pre-LN the last one is after the final LayerNorm); ``last_hidden_state``
            (``hidden_states[-1]``); ``lengths`` ``(B,)`` int64 valid frames. Padded frames are 0.
        """
        x, lengths = pad_waveforms(wavs)
        if x.shape[1] < self.receptive_field:
            D = self.config.encoder_embed_dim
            empty = x.new_zeros(x.shape[0], 0, D)
            hidden = [empty] * len(self.hidden_sizes)
            return {"hidden_states": hidden, "last_hidden_state": empty, "lengths": torch.zeros_like(lengths)}
        out = self.extract_features(x, lengths)
        return {"hidden_states": out.hidden_states, "last_hidden_state": out.hidden_states[-1],
                "lengths": out.lengths}
