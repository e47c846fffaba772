"""MAE model configuration and size presets.

The encoder is a ViT (:class:`speechssl.nn.vit.VisionTransformer`); the decoder is the
lightweight pre-LN transformer MAE reconstructs pixels with. Field names map to
``transformers.ViTMAEConfig`` as noted per field. The masking ratio and the pixel
normalisation belong to the pretraining objective (:class:`~speechssl.upstream.mae.task.MAETaskConfig`).
"""
from __future__ import annotations

from dataclasses import dataclass

from speechssl.nn.image_backbone import validate_masked_image

__all__ = ["MAEConfig", "tiny", "base", "PRESETS"]


@dataclass
class MAEConfig:
    """ViT encoder + MAE decoder sizes."""

    image_size: int = 224  # H = W in pixels, a multiple of patch (HF image_size)
    channels: int = 3  # C (HF num_channels)
    patch: int = 16  # patch side in pixels (HF patch_size)
    dim: int = 768  # encoder width D (HF hidden_size)
    ffn_dim: int = 3072  # encoder feed-forward width (HF intermediate_size)
    layers: int = 12  # encoder layers L (HF num_hidden_layers)
    heads: int = 12  # encoder attention heads (HF num_attention_heads)
    decoder_dim: int = 512  # decoder width (HF decoder_hidden_size)
    decoder_ffn_dim: int = 2048  # decoder feed-forward width (HF decoder_intermediate_size)
    decoder_layers: int = 8  # decoder layers (HF decoder_num_hidden_layers)
    decoder_heads: int = 16  # decoder attention heads (HF decoder_num_attention_heads)
    layer_norm_eps: float = 1e-6  # every LayerNorm (MAE's code: 1e-6; HF's default 1e-12)
    dropout: float = 0.0  # dropout after attention / feed-forward blocks (HF hidden_dropout_prob)
    attention_dropout: float = 0.0  # dropout on attention probabilities (HF attention_probs_dropout_prob)

    def validate(self) -> None:
        """Raise ValueError naming the first field that cannot work."""
        validate_masked_image(self, ("decoder_dim", "decoder_ffn_dim", "decoder_layers", "decoder_heads"),
                              (("dim", "heads"), ("decoder_dim", "decoder_heads")))


def tiny() -> MAEConfig:
    """32 x 32 images, 4 x 4 patches (64 tokens), 2 x 64-wide encoder layers, 1 decoder layer: CPU seconds."""
    return MAEConfig(image_size=32, channels=3, patch=4, dim=64, ffn_dim=128, layers=2, heads=2, decoder_dim=32,
                     decoder_ffn_dim=64, decoder_layers=1, decoder_heads=2)


def base() -> MAEConfig:
    """ViT-B/16 at 224 px with MAE's 8 x 512 decoder (He et al., 2022)."""
    return MAEConfig()


PRESETS = {"tiny": tiny, "base": base}
