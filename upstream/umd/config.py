"""UMD model configuration and size presets.

The encoder is a ViT (:class:`speechssl.nn.vit.VisionTransformer`) whose tokens also get a
timestep embedding (:class:`speechssl.nn.diffusion.TimestepEmbedding`, sinusoid of width
``dim`` → ``2·dim`` → ``dim``, as UMD's ``TimeEmb`` + ``EmbeddingTrunk``); the decoder is
MAE's lightweight pre-LN transformer with its own timestep embedding, predicting both the
clean patch and the noise of every patch. The noise schedule, the two masking ratios and the
loss weights belong to the pretraining objective (:class:`~speechssl.upstream.umd.task.UMDTaskConfig`).
"""
from __future__ import annotations

from dataclasses import dataclass

from speechssl.nn.image_backbone import validate_masked_image

__all__ = ["UMDConfig", "tiny", "small", "PRESETS"]


@dataclass
class UMDConfig:
    """ViT encoder + diffusion decoder sizes."""

    image_size: int = 32  # H = W in pixels, a multiple of patch
    channels: int = 3  # C
    patch: int = 4  # patch side in pixels (UMD's pixel models: B/4 at 64 px)
    dim: int = 64  # encoder width D (also the width of the encoder's timestep sinusoid)
    ffn_dim: int = 128  # encoder feed-forward width
    layers: int = 2  # encoder layers L
    heads: int = 2  # encoder attention heads
    decoder_dim: int = 32  # decoder width (also the width of the decoder's timestep sinusoid)
    decoder_ffn_dim: int = 64  # decoder feed-forward width
    decoder_layers: int = 1  # decoder layers (UMD B: 4)
    decoder_heads: int = 2  # decoder attention heads
    layer_norm_eps: float = 1e-6  # every LayerNorm
    dropout: float = 0.0  # dropout after attention / feed-forward blocks
    attention_dropout: float = 0.0  # dropout on attention probabilities

    def validate(self) -> None:
        """Raise ValueError naming the first field that cannot work."""
        validate_masked_image(self, ("decoder_dim", "decoder_ffn_dim", "decoder_layers", "decoder_heads"),
                              (("dim", "heads"), ("decoder_dim", "decoder_heads")))


def tiny() -> UMDConfig:
    """32 x 32 images, 4 x 4 patches (64 tokens), 2 x 64-wide encoder layers, 1 decoder layer: CPU seconds."""
    return UMDConfig()


def small() -> UMDConfig:
    """64 x 64 images (the ``small`` image corpus), 8 x 8 patches (64 tokens), 4 x 128-wide encoder layers,
    2 x 64-wide decoder layers."""
    return UMDConfig(image_size=64, channels=3, patch=8, dim=128, ffn_dim=256, layers=4, heads=4, decoder_dim=64,
                     decoder_ffn_dim=128, decoder_layers=2, decoder_heads=2)


PRESETS = {"tiny": tiny, "small": small}
