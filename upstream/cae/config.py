"""CAE model configuration and size presets.

The encoder is a ViT (:class:`speechssl.nn.vit.VisionTransformer`); the latent contextual
regressor (cross-attention layers whose queries are the masked patches) and the decoder
(self-attention layers over the masked patches only) have the encoder's width, heads and
feed-forward width, as in CAE (Chen et al., 2022). The masking and the loss weights belong to
the pretraining objective (:class:`~speechssl.upstream.cae.task.CAETaskConfig`).
"""
from __future__ import annotations

from dataclasses import dataclass

from speechssl.nn.image_backbone import validate_masked_image

__all__ = ["CAEConfig", "tiny", "small", "PRESETS"]


@dataclass
class CAEConfig:
    """ViT encoder + CAE regressor and decoder sizes."""

    image_size: int = 32  # H = W in pixels, a multiple of patch
    channels: int = 3  # C
    patch: int = 4  # patch side in pixels
    dim: int = 64  # width D of the encoder, regressor and decoder
    ffn_dim: int = 128  # feed-forward width of every layer (CAE: 4 x D)
    layers: int = 2  # encoder layers L
    heads: int = 2  # attention heads of every layer
    regressor_layers: int = 1  # cross-attention layers of the latent contextual regressor (CAE base: 4)
    decoder_layers: int = 1  # self-attention layers of the decoder over the masked patches (CAE base: 4)
    layer_norm_eps: float = 1e-6  # every LayerNorm
    dropout: float = 0.0  # dropout after attention / feed-forward blocks
    attention_dropout: float = 0.0  # dropout on attention probabilities

    def validate(self) -> None:
        """Raise ValueError naming the first field that cannot work."""
        validate_masked_image(self, ("regressor_layers", "decoder_layers"), (("dim", "heads"),))


def tiny() -> CAEConfig:
    """32 x 32 images, 4 x 4 patches (64 tokens), 2 x 64-wide encoder layers, 1 regressor + 1 decoder layer: CPU seconds."""
    return CAEConfig()


def small() -> CAEConfig:
    """64 x 64 images (the ``small`` image corpus), 8 x 8 patches (64 tokens), 4 x 128-wide encoder layers,
    2 regressor + 2 decoder layers."""
    return CAEConfig(image_size=64, channels=3, patch=8, dim=128, ffn_dim=256, layers=4, heads=4, regressor_layers=2,
                     decoder_layers=2)


PRESETS = {"tiny": tiny, "small": small}
