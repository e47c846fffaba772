"""w2v-BERT model configuration and size presets.

One dataclass holds the upstream (front end + conformer) and the pretraining head (quantizer,
projections, negatives), as :class:`~speechssl.upstream.hubert.config.HubertConfig` does: a saved
model carries its whole config, and the head fields are simply unused by the upstream.

Layout (w2v-BERT 2.0, transformers ``Wav2Vec2BertModel``; Chung et al. 2021 for the objective)::

    wav ─ StackedFbank (80 mel × 2 = 160 dims, 50 Hz) ─ LayerNorm ─ Linear ─▶ x (B, T, D)
        ─ [mask: mask_emb on masked frames] ─ conformer layers 1..N (contrastive module)
        ─ conformer layers N+1..N+M (MLM module) ─▶ hidden states h_0 .. h_{N+M}

Presets: :func:`tiny` (CPU, minutes), :func:`base` (768 × 12), :func:`w2v_bert_600m` (the
600M reproduction: 1024 dims, FFN 4096, 16 heads, 8 + 16 layers; preset name ``"600m"``).
Defaults follow fairseq2's w2v-BERT 600M where a field corresponds (G=2 codebooks of 320
entries, 100 distractors, temperature annealing (2, 0.5, 0.999995), masks 0.65 × 10).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

__all__ = ["W2vBertConfig", "tiny", "base", "w2v_bert_600m", "PRESETS"]


@dataclass
class W2vBertConfig:
    """Architecture, masking and pretraining-head settings of a w2v-BERT model."""

    # --- front end -------------------------------------------------------------------
    num_mel_bins: int = 80  # Kaldi log-mel bins
    stack: int = 2  # fbank frames concatenated per model frame (2: 160 dims at 50 Hz)
    # "stack": stacked fbank (w2v-BERT 2.0, 50 Hz); "conv": the paper's 2-layer conv subsampling (25 Hz)
    frontend: Literal["stack", "conv"] = "stack"
    conv_channels: int = 0  # channels of the conv subsampling (0: encoder_embed_dim, as the Conformer's)
    fbank_normalize: bool = True  # per-utterance, per-bin mean/variance normalisation (SeamlessM4T)
    # --- conformer ---------------------------------------------------------------------
    encoder_embed_dim: int = 1024  # D
    encoder_ffn_embed_dim: int = 4096  # feed-forward inner width
    encoder_attention_heads: int = 16
    contrastive_layers: int = 8  # N: layers whose output feeds the contrastive loss
    mlm_layers: int = 16  # M: further layers whose output feeds the MLM loss
    depthwise_kernel_size: int = 31  # conformer convolution kernel (odd)
    conv_causal: bool = True  # left-only padding of the depthwise conv (w2v-BERT 2.0); False: centred
    conv_norm: Literal["layer_norm", "batch_norm"] = "layer_norm"  # norm after the depthwise conv
    position: Literal["relative_key", "rel_pos", "rotary", "none"] = "relative_key"  # attention positions
    left_max_distance: int = 64  # relative_key: clip j - i at -left (transformers left_max_position_embeddings)
    right_max_distance: int = 8  # relative_key: clip j - i at +right
    rotary_base: float = 10000.0  # rotary: frequency base
    activation_fn: str = "swish"  # feed-forward and conv-module activation
    layer_norm_eps: float = 1e-5
    dropout: float = 0.1  # on each sub-block's residual branch
    attention_dropout: float = 0.0  # on attention probabilities
    activation_dropout: float = 0.0  # after the feed-forward activation
    dropout_input: float = 0.1  # after the feature projection (transformers feat_proj_dropout)
    dropout_features: float = 0.0  # on the quantizer input
    encoder_layerdrop: float = 0.0  # probability of skipping a layer in training
    # --- masking -----------------------------------------------------------------------
    mask_prob: float = 0.65  # span-start probability (fairseq mask_prob)
    mask_length: int = 10  # span length in frames
    mask_min_masks: int = 2  # at least this many spans per utterance
    # --- pretraining head ----------------------------------------------------------------
    latent_groups: int = 2  # G quantizer codebooks
    latent_vars: int = 320  # V entries per codebook
    latent_dim: int = 768  # quantized vector size (transformers codevector_dim)
    final_dim: int = 768  # contrastive space (transformers proj_codevector_dim)
    latent_temp: tuple[float, float, float] = (2.0, 0.5, 0.999995)  # Gumbel (max, min, decay per update)
    logit_temp: float = 0.1  # contrastive cosine similarities are divided by this
    num_negatives: int = 100  # distractors per masked frame, from the same utterance's masked frames

    @property
    def encoder_layers(self) -> int:
        """``N + M``."""
        return self.contrastive_layers + self.mlm_layers

    @property
    def downsample_rate(self) -> int:
        """Samples per frame: the 160-sample fbank shift × ``stack``, or × 4 for the conv front end."""
        return 160 * (4 if self.frontend == "conv" else self.stack)

    def validate(self) -> None:
        """Raise ValueError naming the field when the settings cannot build a model."""
        if self.encoder_embed_dim % self.encoder_attention_heads:
            raise ValueError(f"encoder_embed_dim ({self.encoder_embed_dim}) must be divisible by "
                             f"encoder_attention_heads ({self.encoder_attention_heads})")
        if self.contrastive_layers < 1 or self.mlm_layers < 0:
            raise ValueError(f"need contrastive_layers >= 1 and mlm_layers >= 0, got {self.contrastive_layers}, "
                             f"{self.mlm_layers}")
        if self.frontend not in ("stack", "conv"):
            raise ValueError(f"frontend: unknown {self.frontend!r}; choose stack (stacked fbank) or conv "
                             "(2-layer conv subsampling)")
        if self.conv_channels < 0:
            raise ValueError(f"conv_channels must be >= 0 (0: encoder_embed_dim), got {self.conv_channels}")
        if self.depthwise_kernel_size % 2 == 0:
            raise ValueError(f"depthwise_kernel_size must be odd, got {self.depthwise_kernel_size}")
        if self.position not in ("relative_key", "rel_pos", "rotary", "none"):
            raise ValueError(f"position: unknown {self.position!r}; choose relative_key, rel_pos, rotary or none")
        if self.conv_norm not in ("layer_norm", "batch_norm"):
            raise ValueError(f"conv_norm: unknown {self.conv_norm!r}; choose layer_norm or batch_norm")
        if self.latent_dim % self.latent_groups:
            raise ValueError(f"latent_dim ({self.latent_dim}) must be divisible by latent_groups ({self.latent_groups})")
        if self.logit_temp <= 0:
            raise ValueError(f"logit_temp must be > 0, got {self.logit_temp}")
        if self.num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1, got {self.num_negatives}")
        if not 0.0 <= self.mask_prob <= 1.0 or self.mask_length < 1:
            raise ValueError(f"need 0 <= mask_prob <= 1 and mask_length >= 1, got {self.mask_prob}, {self.mask_length}")


def tiny() -> W2vBertConfig:
    """A ~0.9M-parameter w2v-BERT that pretrains on a laptop CPU in minutes (2 + 2 layers of width 96)."""
    return W2vBertConfig(
        encoder_embed_dim=96, encoder_ffn_embed_dim=384, encoder_attention_heads=4,
        contrastive_layers=2, mlm_layers=2, depthwise_kernel_size=15,
        left_max_distance=32, right_max_distance=8,
        latent_groups=2, latent_vars=32, latent_dim=64, final_dim=64,
        # ~1 s crops hold ~25 masked frames; 100 distractors would repeat each one four times
        num_negatives=20,
        # annealed over the few hundred updates of a tiny run (fairseq's 0.999995 needs ~280k)
        latent_temp=(2.0, 0.5, 0.995),
    )


def base() -> W2vBertConfig:
    """A Base-sized w2v-BERT: 768 dims, FFN 3072, 12 heads, 4 + 8 layers (~95M parameters)."""
    return W2vBertConfig(
        encoder_embed_dim=768, encoder_ffn_embed_dim=3072, encoder_attention_heads=12,
        contrastive_layers=4, mlm_layers=8, latent_dim=256, final_dim=256, encoder_layerdrop=0.05,
    )


def w2v_bert_600m() -> W2vBertConfig:
    """The 600M reproduction (fairseq2 ``w2vbert_600m``; Chung et al. 2021's 0.6B): 1024 × (8 + 16), FFN 4096, 16 heads."""
    return W2vBertConfig(
        encoder_embed_dim=1024, encoder_ffn_embed_dim=4096, encoder_attention_heads=16,
        contrastive_layers=8, mlm_layers=16, latent_dim=768, final_dim=768,
    )


PRESETS: dict[str, Callable[[], W2vBertConfig]] = {"tiny": tiny, "base": base, "600m": w2v_bert_600m}
