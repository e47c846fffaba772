"""MAE (He et al., 2022): the ViT upstream and the masked-autoencoder pretraining model.

* :class:`MAEModel` — the upstream: ``images (B, C, H, W)`` → the image upstream contract
  (``[cls] + patches`` tokens per layer, ``lengths``, ``patch_grid``); no masking.
* :class:`MAEPretrainModel` — MAE: per image, the ``int(N * (1 - mask_ratio))`` patches of
  lowest ``noise`` are kept (:func:`speechssl.nn.token_masking.random_masking`), the encoder
  runs on them and the class token only; the decoder embeds that, puts a shared mask token
  at every removed patch, adds its own fixed 2-D sin-cos positions, runs its pre-LN layers
  and predicts each patch's ``p * p * C`` pixels. The target is the patch's pixels,
  normalised per patch (mean 0, unbiased variance 1, +1e-6) with ``norm_pix_loss``; the
  loss (in the task) is the per-patch mean squared error summed over the removed patches.

Weight names map to ``transformers.ViTMAEForPreTraining`` through :mod:`.hf`'s key table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from speechssl.nn.masked_image import pixel_targets  # shared with the other masked-image methods
from speechssl.nn.token_masking import keep_count, random_masking, restore_tokens
from speechssl.nn.image_backbone import ImageUpstream, masked_image_vit
from speechssl.nn.transformer import TransformerEncoder
from speechssl.nn.vit import init_vit_weights, sincos_2d_table
from speechssl.upstream.mae.config import MAEConfig

__all__ = ["MAEModel", "MAEPretrainModel", "MAEOutput", "pixel_targets"]


class MAEModel(ImageUpstream):
    """The MAE encoder as an upstream (see the module docstring)."""

    method = "mae"
    encoder_attr = "vit"

    def __init__(self, config: MAEConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.vit = masked_image_vit(config)

    @classmethod
    def from_config(cls, config: MAEConfig) -> "MAEModel":
        return cls(config)

    def forward(self, images: torch.Tensor) -> dict[str, Any]:
        """``images (B, C, H, W)`` → ``{"hidden_states": [(B, 1 + N, D)] * (L + 1), "last_hidden_state",
        "lengths" (B,), "patch_grid"}``."""
        return self.vit(images)


@dataclass
class MAEOutput:
    """``pred``/``target`` ``(B, N, p*p*C)``, ``mask (B, N)`` bool (True = removed, scored), ``ids_restore (B, N)``."""

    pred: torch.Tensor
    target: torch.Tensor
    mask: torch.Tensor
    ids_restore: torch.Tensor


class MAEPretrainModel(nn.Module):
    """MAE pretraining model: :class:`MAEModel` (as ``upstream``) + the pixel decoder.

    Args:
        config: encoder and decoder sizes.
        mask_ratio: fraction of each image's patches removed (MAE: 0.75).
        norm_pix_loss: normalise each target patch (MAE's best setting).
    """

    def __init__(self, config: MAEConfig, mask_ratio: float = 0.75, norm_pix_loss: bool = True) -> None:
        super().__init__()
        self.upstream = MAEModel(config)
        self.keep = keep_count(self.upstream.vit.num_patches, mask_ratio)
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss
        c = config
        self.decoder_embed = nn.Linear(c.dim, c.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_dim))
        table = sincos_2d_table(self.upstream.patch_grid, c.decoder_dim, order="wh").unsqueeze(0)  # (1, N, Dd)
        self.register_buffer("decoder_pos_embed", table, persistent=False)
        self.decoder = TransformerEncoder(c.decoder_dim, c.decoder_ffn_dim, c.decoder_layers, c.decoder_heads,
                                          dropout=c.dropout, attention_dropout=c.attention_dropout,
                                          activation_dropout=0.0, layer_norm_first=True,
                                          layer_norm_eps=c.layer_norm_eps, position="none")
        self.decoder_pred = nn.Linear(c.decoder_dim, c.patch * c.patch * c.channels)
        for module in (self.decoder_embed, self.decoder, self.decoder_pred):
            init_vit_weights(module)
        nn.init.normal_(self.mask_token, std=0.02)

    @property
    def num_patches(self) -> int:
        return self.upstream.vit.num_patches

    def forward(self, images: torch.Tensor, noise: torch.Tensor) -> MAEOutput:
        """``images (B, C, H, W)``, ``noise (B, N)`` (which patches stay: the lowest) → :class:`MAEOutput`."""
        vit = self.upstream.vit
        tokens = vit.embed(images)  # (B, N, D)
        kept, mask, ids_restore = random_masking(tokens, noise, self.keep)  # (B, K, D)
        latent = vit.encode(vit.with_prefix(kept))[-1]  # (B, 1 + K, D)
        y = self.decoder_embed(latent)  # (B, 1 + K, Dd)
        prefix = vit.prefix_tokens
        body = restore_tokens(y[:, prefix:], self.mask_token, ids_restore)  # (B, N, Dd)
        body = body + self.decoder_pos_embed.to(body.dtype)
        h = self.decoder(torch.cat([y[:, :prefix], body], dim=1))[-1]  # (B, 1 + N, Dd); cls position is 0
        pred = self.decoder_pred(h[:, prefix:])  # (B, N, p*p*C)
        target = pixel_targets(images, self.upstream.config.patch, self.norm_pix_loss)
        return MAEOutput(pred, target, mask, ids_restore)
