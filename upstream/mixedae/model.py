"""MixedAE (Chen et al., CVPR 2023, "Mixed Autoencoder for Self-supervised Visual Representation
Learning"): the ViT upstream and the mixed-autoencoder pretraining model.

* :class:`MixedAEModel` — the upstream: ``images (B, C, H, W)`` → the image upstream contract
  (``[cls] + patches`` tokens per layer, ``lengths``, ``patch_grid``); no mixing, full attention.
* :class:`MixedAEPretrainModel` — MixedAE. A batch of ``B`` images is cut into
  ``G = ceil(B / r)`` groups of ``r`` consecutive images (the last group, if short, is filled
  with repeats of the batch's first images, which are never scored).

  1. **Mixing** (:func:`speechssl.nn.masked_image.mixing_sources`, :func:`~speechssl.nn.masked_image.mix_images`):
     per group, each of the ``N`` patch positions is given to one image of the group, ``N / r``
     each, drawn from the group's ``noise``; the mixed image takes every patch from its image
     (positions unchanged). Each image thus shows ``1 / r`` of its patches: with ``r = 4`` the
     encoder sees as many tokens as MAE's at mask ratio 0.75, in ``G = B / 4`` sequences.
  2. **Homologous attention**: the ViT encoder runs on the ``G`` mixed images with a class
     token; a patch attends only to the patches of the same source image (its homologous
     patches; :func:`~speechssl.nn.masked_image.group_attention_mask`), the class token attends
     to everything and no patch attends to it, so no patch's representation depends on another
     image's pixels.
  3. **Unmixing + reconstruction** (MAE's decoder): the encoded patches are projected to the
     decoder width and put back into ``r`` sequences per group
     (:func:`~speechssl.nn.masked_image.unmix_tokens`), the shared mask token at the positions
     the image did not give; the decoder adds its fixed 2-D sin-cos positions, runs its pre-LN
     layers and predicts every patch's ``p*p*C`` pixels. Scored: the patches each real image did
     not give (``(1 - 1/r) N`` per image), MAE's normalised-pixel MSE.
  4. **Homologous contrastive loss** (:func:`homologous_contrastive`): the encoder's patch tokens
     through a two-layer MLP head, L2-normalised; within each mixed image, every patch is an
     anchor, its homologous patches the positives, every other patch of that mixed image the
     negatives: ``-1/|P(i)| Σ_{j∈P(i)} log( exp(s_ij/τ) / Σ_{k≠i} exp(s_ik/τ) )`` with cosine
     similarity ``s``, averaged over the anchors (filler images' patches take no part).
     ``hc_level="image"`` instead pools per source image: each image's patches are split into
     two interleaved halves (:func:`source_halves`), each half's head outputs mean-pooled, and
     NT-Xent over the batch's halves (:func:`image_contrastive`): the positive of a half is the
     other half of its image, the negatives every half of every other image (those it was mixed
     with included).

**What the paper fixes and what was chosen here.** The paper's method section could not be
read here (the stored copies hold its abstract and introduction: mixing for MAE, homologous
recognition as the auxiliary pretext task "requiring each patch to recognize homologous
patches", homologous attention, segment embeddings, and a homologous contrastive loss beside
the reconstruction). Chosen, with the reasons:

* Homologous attention uses the *true* source of every patch (a mask) — the issue's
  formulation, and the exact version of what the paper's attention approximates (it samples,
  per query, the keys with the highest attention scores; that TopK form is not implemented).
* The contrastive loss is patch-level and within a mixed image (supervised-contrastive form
  above) by default: "each patch recognises its homologous patches" is a per-patch statement,
  and the negatives that matter for recognition are the heterologous patches it is mixed with;
  the pooled per-image form (``hc_level="image"``) is the alternative the issue sketched. The
  loss weight and temperature (:class:`~speechssl.upstream.mixedae.task.MixedAETaskConfig`,
  0.1 and 0.2) are choices, not the paper's values.
* The decoder sees only one image's tokens per sequence (no class token), so reconstruction
  cannot read the other images of the group.
* The class token is read by nothing in either loss (patches never attend to it and the decoder
  gets patch tokens only), so pretraining leaves it at its initial value; probe the patch mean
  (``image_probe``'s default ``pool=mean``), not ``pool=cls``.
* Not reproduced: segment embeddings (with the attention mask built from the true sources the
  encoder needs no source identity in its input, and the upstream without mixing has none).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from speechssl.nn.masked_image import (
    encode_with_attention_mask, group_attention_mask, mix_images, mixing_sources, pixel_targets, unmix_tokens,
)
from speechssl.nn.image_backbone import ImageUpstream, masked_image_vit
from speechssl.nn.transformer import TransformerEncoder
from speechssl.nn.vit import init_vit_weights, sincos_2d_table
from speechssl.upstream.mixedae.config import MixedAEConfig

__all__ = ["MixedAEModel", "MixedAEPretrainModel", "MixedAEOutput", "homologous_contrastive", "source_halves",
           "image_contrastive"]


class MixedAEModel(ImageUpstream):
    """The MixedAE encoder as an upstream (see the module docstring)."""

    method = "mixedae"
    encoder_attr = "vit"

    def __init__(self, config: MixedAEConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.vit = masked_image_vit(config)

    @classmethod
    def from_config(cls, config: MixedAEConfig) -> "MixedAEModel":
        return cls(config)

    def forward(self, images: torch.Tensor) -> dict[str, Any]:
        """``images (B, C, H, W)`` → ``{"hidden_states": [(B, 1 + N, D)] * (L + 1), "last_hidden_state",
        "lengths" (B,), "patch_grid"}``."""
        return self.vit(images)


def homologous_contrastive(z: torch.Tensor, source: torch.Tensor, valid: torch.Tensor,
                           temperature: float) -> tuple[torch.Tensor, int]:
    """Patch-level homologous contrastive loss within each mixed image.

    Args:
        z: ``(G, N, E)`` patch features (normalised here to unit length).
        source: ``(G, N)`` int64, the source image of each patch.
        valid: ``(G, N)`` bool, the patches that take part (False: filler images).
        temperature: ``τ`` > 0.

    Returns:
        ``(sum over anchors of -1/|P(i)| Σ_{j∈P(i)} log softmax_{k∈C(i)}(s_ik / τ)[j], anchors)``, float32:
        ``C(i)`` = the other valid patches of ``i``'s mixed image, ``P(i)`` = those of ``i``'s
        source; anchors are the valid patches with at least one positive.
    """
    if z.dim() != 3 or source.shape != z.shape[:2] or valid.shape != z.shape[:2]:
        raise ValueError(f"z (G, N, E), source and valid (G, N) do not match: {tuple(z.shape)}, "
                         f"{tuple(source.shape)}, {tuple(valid.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = F.normalize(z.float(), dim=-1)
    N = z.shape[1]
    sim = z @ z.transpose(1, 2) / temperature  # (G, N, N)
    eye = torch.eye(N, dtype=torch.bool, device=z.device)
    cand = valid[:, :, None] & valid[:, None, :] & ~eye  # (G, N, N)
    pos = cand & (source[:, :, None] == source[:, None, :])
    logits = sim.masked_fill(~cand, -1.0e9)  # finite: rows without candidates stay NaN-free (and unused)
    log_prob = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    npos = pos.sum(dim=-1)  # (G, N)
    anchors = valid & (npos > 0)
    per_anchor = -(log_prob * pos).sum(dim=-1) / npos.clamp(min=1)  # (G, N)
    return (per_anchor * anchors).sum(), int(anchors.sum())


def source_halves(source: torch.Tensor, r: int) -> torch.Tensor:
    """``source (G, N)`` → ``half (G, N)`` int64 in {0, 1}: the ``j``-th patch (row-major) of an image gets ``j % 2``."""
    own = F.one_hot(source, r)  # (G, N, r)
    rank = own.cumsum(dim=1).gather(2, source[..., None]).squeeze(-1) - 1  # (G, N): j of each patch in its image
    return rank % 2


def image_contrastive(a: torch.Tensor, b: torch.Tensor, temperature: float) -> tuple[torch.Tensor, int]:
    """NT-Xent between two pooled halves of ``R`` images: ``a, b (R, E)`` → ``(Σ over the 2R halves of
    -log softmax_{k≠i}(s_ik / τ)[partner(i)], 2R)``, cosine similarity ``s``, float32."""
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"a and b must both be (R, E), got {tuple(a.shape)} and {tuple(b.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    R = a.shape[0]
    z = F.normalize(torch.cat([a, b]).float(), dim=-1)  # (2R, E)
    logits = (z @ z.t() / temperature).masked_fill(torch.eye(2 * R, dtype=torch.bool, device=z.device), -1.0e9)
    partner = torch.cat([torch.arange(R, 2 * R), torch.arange(R)]).to(z.device)
    return F.cross_entropy(logits, partner, reduction="sum"), 2 * R


@dataclass
class MixedAEOutput:
    """One MixedAE forward.

    ``pred``/``target`` ``(G*r, N, p*p*C)`` per (padded) source image; ``mask (G*r, N)`` bool, True on
    the scored patches (not given by the image, real images only); ``source (G, N)``; ``real (G*r,)``
    bool (False: filler); ``hc_sum`` float32 scalar and ``hc_anchors`` of :func:`homologous_contrastive`
    (anchor patches) or :func:`image_contrastive` (image halves).
    """

    pred: torch.Tensor
    target: torch.Tensor
    mask: torch.Tensor
    source: torch.Tensor
    real: torch.Tensor
    hc_sum: torch.Tensor
    hc_anchors: int


class MixedAEPretrainModel(nn.Module):
    """MixedAE pretraining model: :class:`MixedAEModel` (as ``upstream``) + the pixel decoder + the contrastive head.

    Args:
        config: encoder, decoder and head sizes.
        mix: ``r``, images mixed into one (the paper: 4, i.e. each image shows 25% of its patches).
        norm_pix_loss: normalise each target patch (MAE's best setting).
        hc_temperature: ``τ`` of the homologous contrastive loss.
        hc_level: ``"patch"`` (:func:`homologous_contrastive`) or ``"image"`` (pooled halves,
            :func:`image_contrastive`; needs ``N >= 2 * mix``).
    """

    def __init__(self, config: MixedAEConfig, mix: int = 4, norm_pix_loss: bool = True,
                 hc_temperature: float = 0.2, hc_level: str = "patch") -> None:
        super().__init__()
        self.upstream = MixedAEModel(config)
        n = self.upstream.vit.num_patches
        if not 2 <= mix <= n:
            raise ValueError(f"mix must be in 2..{n} (patches per image), got {mix}")
        if hc_temperature <= 0:
            raise ValueError(f"hc_temperature must be > 0, got {hc_temperature}")
        if hc_level not in ("patch", "image"):
            raise ValueError(f"hc_level must be 'patch' or 'image', got {hc_level!r}")
        if hc_level == "image" and n < 2 * mix:
            raise ValueError(f"hc_level='image' needs at least 2 patches per image: {n} patches, mix {mix}")
        self.mix, self.norm_pix_loss, self.hc_temperature, self.hc_level = mix, norm_pix_loss, hc_temperature, hc_level
        c = config
        self.decoder_embed = nn.Linear(c.dim, c.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(c.decoder_dim))
        table = sincos_2d_table(self.upstream.patch_grid, c.decoder_dim, order="wh").unsqueeze(0)  # (1, N, Dd)
        self.register_buffer("decoder_pos_embed", table, persistent=False)
        self.decoder = TransformerEncoder(c.decoder_dim, c.decoder_ffn_dim, c.decoder_layers, c.decoder_heads,
                                          dropout=c.dropout, attention_dropout=c.attention_dropout,
                                          activation_dropout=0.0, layer_norm_first=True,
                                          layer_norm_eps=c.layer_norm_eps, position="none")
        self.decoder_pred = nn.Linear(c.decoder_dim, c.patch * c.patch * c.channels)
        self.hc_head = nn.Sequential(nn.Linear(c.dim, c.dim), nn.GELU(), nn.Linear(c.dim, c.hc_dim))
        for module in (self.decoder_embed, self.decoder, self.decoder_pred, self.hc_head):
            init_vit_weights(module)
        nn.init.normal_(self.mask_token, std=0.02)

    @property
    def num_patches(self) -> int:
        return self.upstream.vit.num_patches

    def forward(self, images: torch.Tensor, noise: torch.Tensor) -> MixedAEOutput:
        """``images (B, C, H, W)``, ``noise (B, N)`` (group ``g`` mixes by the noise of its first image) → :class:`MixedAEOutput`."""
        vit = self.upstream.vit
        vit.check_images(images)
        B, r, N = images.shape[0], self.mix, self.num_patches
        if noise.shape != (B, N):
            raise ValueError(f"expected noise ({B}, {N}), got {tuple(noise.shape)}")
        G = math.ceil(B / r)
        rows = torch.arange(G * r, device=images.device)
        real = rows < B  # (G*r,)
        images, noise = images[rows % B], noise[rows % B]  # a short last group: repeats, never scored
        source = mixing_sources(noise[::r], r)  # (G, N)
        mixed = mix_images(images, source, r, self.upstream.config.patch)  # (G, C, H, W)
        prefix = vit.prefix_tokens
        allowed = group_attention_mask(source, prefix)  # (G, 1 + N, 1 + N)
        latent = encode_with_attention_mask(vit, vit.with_prefix(vit.embed(mixed)), allowed)[-1]  # (G, 1 + N, D)
        patches = latent[:, prefix:]  # (G, N, D)
        y = unmix_tokens(self.decoder_embed(patches), source, r, self.mask_token)  # (G*r, N, Dd)
        h = self.decoder(y + self.decoder_pos_embed.to(y.dtype))[-1]
        pred = self.decoder_pred(h)  # (G*r, N, p*p*C)
        target = pixel_targets(images, self.upstream.config.patch, self.norm_pix_loss)
        own = (source[:, None, :] == torch.arange(r, device=source.device)[None, :, None]).reshape(G * r, N)
        mask = ~own & real[:, None]
        feats = self.hc_head(patches)  # (G, N, E)
        if self.hc_level == "patch":
            valid = real.reshape(G, r).gather(1, source)  # (G, N): patch from a real image
            hc_sum, anchors = homologous_contrastive(feats, source, valid, self.hc_temperature)
        else:
            cell = F.one_hot(source * 2 + source_halves(source, r), 2 * r).to(feats.dtype)  # (G, N, 2r)
            pooled = torch.einsum("gnc,gne->gce", cell, feats) / cell.sum(dim=1)[..., None]  # (G, 2r, E)
            pooled = pooled.reshape(G * r, 2, -1)[real]  # (B, 2, E): the two halves of each real image
            hc_sum, anchors = image_contrastive(pooled[:, 0], pooled[:, 1], self.hc_temperature)
        return MixedAEOutput(pred, target, mask, source, real, hc_sum, anchors)
