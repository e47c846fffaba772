"""Masked-image pieces shared by image methods: pixel targets, patch-wise image mixing, and
self-attention restricted to groups of patches.

* :func:`pixel_targets` — MAE's reconstruction targets ``(B, N, p*p*C)``: each patch's pixels,
  optionally normalised per patch (mean 0, unbiased variance 1, ``+1e-6``: ``norm_pix_loss``).
* Patch-wise mixing (MixedAE, Chen et al., 2023): a batch of ``G * r`` images is cut into ``G``
  groups of ``r`` consecutive images; ``source (G, N)`` (int64 in ``[0, r)``) names, for every
  patch position ``n`` of group ``g``, the image of the group that patch ``n`` of the mixed
  image comes from. :func:`mixing_sources` draws a balanced ``source`` from uniform noise (each
  image gives ``N / r`` patches, ±1 when ``r`` does not divide ``N``), :func:`mix_tokens` /
  :func:`mix_images` build the mixed tokens / pixels, :func:`unmix_tokens` puts the mixed
  tokens back in ``r`` sequences, a ``fill`` token at the positions taken by the other images.
  Patch positions never move, so a mixed image's patch ``n`` keeps the position embedding of
  position ``n``; a patch-wise linear embedding commutes with mixing
  (``embed(mix_images(x)) == mix_tokens(embed(x))``).
* :func:`group_attention_mask` — ``(G, P + N, P + N)`` bool, True where query ``i`` may attend
  key ``j``: a patch attends only to patches of its own group label (its *homologous* patches);
  the ``P`` prefix tokens (a class token) attend to everything and no patch attends to them, so
  no information passes between groups through them.
* :func:`encode_with_attention_mask` — the layers of a
  :class:`~speechssl.nn.vit.VisionTransformer` under such a mask (``-inf`` score bias on the
  forbidden pairs); with an all-True mask it equals ``vit.encode`` exactly.
"""
from __future__ import annotations

import torch

from speechssl.nn.vit import VisionTransformer, patchify, unpatchify

__all__ = ["pixel_targets", "mixing_sources", "mix_tokens", "mix_images", "unmix_tokens", "group_attention_mask",
           "attention_bias", "encode_with_attention_mask"]


def pixel_targets(images: torch.Tensor, patch: int, normalize: bool) -> torch.Tensor:
    """MAE's targets ``(B, N, p*p*C)``: the patches' pixels, per patch ``(x - mean) / sqrt(var + 1e-6)`` if ``normalize``."""
    target = patchify(images.float(), patch)  # (B, N, P)
    if normalize:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)  # unbiased, as MAE
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    return target


def mixing_sources(noise: torch.Tensor, r: int) -> torch.Tensor:
    """Balanced patch-to-image assignment of each group: ``noise (G, N)`` float → ``source (G, N)`` int64.

    The patch positions sorted by ``noise`` are dealt to images ``0, 1, .., r-1, 0, 1, ..`` in
    turn, so image ``k`` gets ``ceil((N - k) / r)`` patches (``N / r`` each when ``r`` divides ``N``).
    """
    if noise.dim() != 2:
        raise ValueError(f"noise must be (G, N), got {tuple(noise.shape)}")
    G, N = noise.shape
    if not 1 <= r <= N:
        raise ValueError(f"the mixing group size r must be in 1..{N} (patches per image), got {r}")
    order = torch.argsort(noise, dim=1)  # (G, N) positions by increasing noise
    turn = (torch.arange(N, device=noise.device) % r).expand(G, N)
    return torch.empty_like(order).scatter_(1, order, turn)  # source[g, order[g, j]] = j % r


def _check_groups(x: torch.Tensor, source: torch.Tensor, r: int) -> int:
    if source.dim() != 2 or source.dtype != torch.long:
        raise ValueError(f"source must be an int64 (G, N) tensor, got {source.dtype} {tuple(source.shape)}")
    G, N = source.shape
    if x.shape[0] != G * r or x.shape[1] != N:
        raise ValueError(f"expected {G} groups of {r} sequences of {N} tokens, got {tuple(x.shape)}")
    return G


def mix_tokens(tokens: torch.Tensor, source: torch.Tensor, r: int) -> torch.Tensor:
    """``tokens (G*r, N, D)`` (group ``g`` = rows ``g*r .. g*r+r-1``) → mixed ``(G, N, D)``:
    ``out[g, n] = tokens[g*r + source[g, n], n]``."""
    G = _check_groups(tokens, source, r)
    N, D = tokens.shape[1], tokens.shape[2]
    grouped = tokens.reshape(G, r, N, D)
    index = source[:, None, :, None].expand(G, 1, N, D)
    return grouped.gather(1, index).squeeze(1)  # (G, N, D)


def mix_images(images: torch.Tensor, source: torch.Tensor, r: int, patch: int) -> torch.Tensor:
    """Patch-wise mixed images: ``images (G*r, C, H, W)`` → ``(G, C, H, W)``, patch ``n`` of mixed
    image ``g`` copied from image ``g*r + source[g, n]`` (patches row-major, side ``patch``)."""
    B, C, H, W = images.shape
    mixed = mix_tokens(patchify(images, patch), source, r)  # (G, N, p*p*C)
    return unpatchify(mixed, patch, (H // patch, W // patch), C)


def unmix_tokens(mixed: torch.Tensor, source: torch.Tensor, r: int, fill: torch.Tensor) -> torch.Tensor:
    """``mixed (G, N, D)`` → ``(G*r, N, D)``: row ``g*r + k`` holds ``mixed[g, n]`` where
    ``source[g, n] == k`` and ``fill (D,)`` elsewhere (the patches image ``k`` did not give)."""
    if mixed.dim() != 3 or source.shape != mixed.shape[:2]:
        raise ValueError(f"mixed (G, N, D) and source (G, N) do not match: {tuple(mixed.shape)}, {tuple(source.shape)}")
    G, N, D = mixed.shape
    own = source[:, None, :] == torch.arange(r, device=source.device)[None, :, None]  # (G, r, N)
    out = torch.where(own[..., None], mixed[:, None], fill.to(mixed.dtype).reshape(1, 1, 1, D))  # (G, r, N, D)
    return out.reshape(G * r, N, D)


def group_attention_mask(groups: torch.Tensor, prefix: int = 0) -> torch.Tensor:
    """``groups (G, N)`` labels → ``(G, prefix + N, prefix + N)`` bool, True where query ``i`` may attend key ``j``.

    Patch ``i`` attends patch ``j`` iff ``groups[i] == groups[j]``; prefix tokens attend every
    token; patches never attend prefix tokens.
    """
    if groups.dim() != 2:
        raise ValueError(f"groups must be (G, N), got {tuple(groups.shape)}")
    G, N = groups.shape
    T = prefix + N
    allowed = torch.zeros(G, T, T, dtype=torch.bool, device=groups.device)
    allowed[:, :prefix, :] = True
    allowed[:, prefix:, prefix:] = groups[:, :, None] == groups[:, None, :]
    return allowed


def attention_bias(allowed: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``allowed (G, T, T)`` bool → additive score bias ``(G, 1, T, T)``: 0 where allowed, ``-inf`` elsewhere."""
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.tensor(float("-inf"), dtype=dtype, device=allowed.device)).unsqueeze(1)


def encode_with_attention_mask(vit: VisionTransformer, tokens: torch.Tensor, allowed: torch.Tensor) -> list[torch.Tensor]:
    """``vit``'s layers on ``tokens (G, T, D)`` with attention limited to ``allowed (G, T, T)`` (every row
    needs one True) → ``[h_0 .. h_L]``, each ``(G, T, D)``, ``h_L`` after the final LayerNorm (as
    :meth:`VisionTransformer.encode`; no layer drop)."""
    enc = vit.encoder
    if tokens.dim() != 3 or allowed.shape != (tokens.shape[0], tokens.shape[1], tokens.shape[1]):
        raise ValueError(f"tokens (G, T, D) {tuple(tokens.shape)} and allowed (G, T, T) {tuple(allowed.shape)} "
                         "do not match")
    if not bool(allowed.any(dim=-1).all()):
        raise ValueError("every query token must be allowed at least one key")
    if not enc.layer_norm_first or enc.positions:
        raise ValueError("encode_with_attention_mask needs a pre-LN encoder without its own positions (a ViT's)")
    bias = attention_bias(allowed, tokens.dtype)

    def score_bias(q: torch.Tensor) -> torch.Tensor:
        return bias

    x = enc.dropout(tokens)
    hidden = [x]
    for i, layer in enumerate(enc.layers):
        x = layer(x, None, score_bias)
        if i == len(enc.layers) - 1:
            x = enc.layer_norm(x)
        hidden.append(x)
    return hidden
