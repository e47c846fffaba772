"""MixedAE model configuration and size presets.

The encoder is a ViT (:class:`speechssl.nn.vit.VisionTransformer`), the decoder MAE's
lightweight pre-LN transformer, the homologous-contrastive head a two-layer MLP on the encoder's
patch tokens. The mixing group size, the loss weight and the temperature belong to the
pretraining objective (:class:`~speechssl.upstream.mixedae.task.MixedAETaskConfig`).
"""
from __future__ import annotations

from dataclasses import dataclass

from speechssl.nn.image_backbone import validate_masked_image

__all__ = ["MixedAEConfig", "tiny", "small", "PRESETS"]


@dataclass
class MixedAEConfig:
    """ViT encoder + MAE decoder + homologous-contrastive head sizes."""

    image_size: int = 32  # H = W in pixels, a multiple of patch
    channels: int = 3  # C
    patch: int = 4  # patch side in pixels
    dim: int = 64  # encoder width D
    ffn_dim: int = 128  # encoder feed-forward width
    layers: int = 2  # encoder layers L
    heads: int = 2  # encoder attention heads
    decoder_dim: int = 32  # decoder width
    decoder_ffn_dim: int = 64  # decoder feed-forward width
    decoder_layers: int = 1  # decoder layers
    decoder_heads: int = 2  # decoder attention heads
    hc_dim: int = 64  # output width of the homologous-contrastive projection head (hidden width = dim)
    layer_norm_eps: float = 1e-6  # every LayerNorm
    dropout: float = 0.0  # dropout after attention / feed-forward blocks
    attention_dropout: float = 0.0  # dropout on attention probabilities

    def validate(self) -> None:
        """Raise ValueError naming the first field that cannot work."""
        validate_masked_image(self, ("decoder_dim", "decoder_ffn_dim", "decoder_layers", "decoder_heads", "hc_dim"),
                              (("dim", "heads"), ("decoder_dim", "decoder_heads")))


def tiny() -> MixedAEConfig:
    """32 x 32 images, 4 x 4 patches (64 tokens), 2 x 64-wide encoder layers, 1 decoder layer: CPU seconds."""
    return MixedAEConfig()


def small() -> MixedAEConfig:
    """64 x 64 images (the ``small`` image corpus), 8 x 8 patches (64 tokens), 4 x 128-wide encoder layers,
    2 x 64-wide decoder layers."""
    return MixedAEConfig(image_size=64, channels=3, patch=8, dim=128, ffn_dim=256, layers=4, heads=4, decoder_dim=64,
                         decoder_ffn_dim=128, decoder_layers=2, decoder_heads=2, hc_dim=128)


PRESETS = {"tiny": tiny, "small": small}
