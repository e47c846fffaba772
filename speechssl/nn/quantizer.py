"""Gumbel-softmax product quantizer (wav2vec 2.0, Baevski et al. 2020; fairseq ``GumbelVectorQuantizer``).

Each frame ``x (D_in,)`` is projected to ``G × V`` logits (``weight_proj``); group ``g`` picks one of
its ``V`` codebook entries ``vars[g, v] (code_dim / G,)``, and the ``G`` picks are concatenated
into the quantized vector ``(code_dim,)``::

    x (B, T, D_in) ─ weight_proj ─▶ logits (B·T, G, V)
        training: one-hot of argmax(logits + gumbel noise) forward, softmax((logits + noise) / τ)
                  backward (straight-through hard Gumbel-softmax)
        eval:     one-hot of argmax(logits)
      ─ one-hot · codebook, concatenated over groups ─▶ quantized (B, T, code_dim)

The temperature ``τ`` anneals per optimizer update as in wav2vec 2.0:
``τ(n) = max(max_t · decay ** n, min_t)`` (fairseq ``latent_temp = (2, 0.5, 0.999995)``); a Task
calls :meth:`GumbelVectorQuantizer.set_num_updates` from its ``on_update`` hook.

Two perplexities are reported, each the sum over groups of ``exp(entropy)`` of a code distribution
averaged over frames (``mask`` selects the frames, e.g. the masked ones):

* ``prob_perplexity``: of the mean softmax (no noise) — differentiable; the diversity loss
  ``(G·V − prob_perplexity) / (G·V)`` pushes codebook usage towards uniform;
* ``code_perplexity``: of the argmax codes (no noise) — for logging codebook usage.

Entropies use ``xlogy`` (``0 · log 0 = 0``) like ``transformers``; fairseq writes
``p · log(p + 1e-7)``, which differs by < 1e-5 per group.

Parameter names follow fairseq (``vars``: ``(1, G·V, code_dim / G)``, ``weight_proj``), so a
fairseq ``quantizer.*`` state dict loads without renaming; ``transformers`` calls ``vars``
``codevectors``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["GumbelVectorQuantizer", "QuantizerOutput", "gumbel_softmax_hard", "perplexity"]


@dataclass
class QuantizerOutput:
    """What :meth:`GumbelVectorQuantizer.forward` returns.

    Attributes:
        quantized: ``(B, T, code_dim)`` quantized vectors (in training, gradients reach the logits
            through the straight-through estimator and the codebook directly).
        indices: ``(B, T, G)`` int64 chosen entry of each group (noisy argmax in training,
            argmax at eval); the targets of a discrete-unit objective.
        prob_perplexity: scalar float32, perplexity of the mean softmax over the selected frames,
            summed over groups, in ``[G, G·V]``.
        code_perplexity: scalar float32, the same for the argmax codes (no gradient).
        diversity_loss: scalar float32, ``(G·V − prob_perplexity) / (G·V)`` in ``[0, 1 − 1/V]``.
        temperature: the Gumbel-softmax temperature this forward used.
    """

    quantized: torch.Tensor
    indices: torch.Tensor
    prob_perplexity: torch.Tensor
    code_perplexity: torch.Tensor
    diversity_loss: torch.Tensor
    temperature: float


def gumbel_softmax_hard(logits: torch.Tensor, tau: float, generator: torch.Generator | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Straight-through hard Gumbel-softmax over the last dimension (``F.gumbel_softmax(hard=True)``).

    Draws exactly what ``torch.nn.functional.gumbel_softmax`` draws from the same generator state,
    so both agree bit for bit under the same seed.

    Args:
        logits: ``(N, V)`` unnormalised log-probabilities.
        tau: temperature (> 0).
        generator: source of the noise; a CPU generator also serves CUDA logits (the noise is drawn
            on the CPU and moved). None: torch's global generator for ``logits.device``.

    Returns:
        ``(N, V)`` one-hot forward values with the gradient of ``softmax((logits + g) / tau)``, and
        ``(N,)`` int64 chosen indices.
    """
    device = generator.device if generator is not None else logits.device
    noise = torch.empty(logits.shape, dtype=logits.dtype, device=device).exponential_(generator=generator)
    gumbels = -noise.log().to(logits.device)
    y_soft = ((logits + gumbels) / tau).softmax(-1)
    index = y_soft.max(-1, keepdim=True)[1]
    y_hard = torch.zeros_like(logits).scatter_(-1, index, 1.0)
    return y_hard - y_soft.detach() + y_soft, index.squeeze(-1)


def perplexity(probs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over groups of ``exp(entropy)`` of the code distribution averaged over frames.

    Args:
        probs: ``(N, G, V)`` per-frame distributions (softmax or one-hot), float32.
        mask: ``(N,)`` bool, frames to average over (None: all). No selected frame gives ``G``.

    Returns:
        scalar, in ``[G, G·V]``.
    """
    if mask is None:
        marginal = probs.mean(dim=0)  # (G, V)
    else:
        m = mask.reshape(-1)[:, None, None].expand(probs.shape)
        marginal = torch.where(m, probs, torch.zeros_like(probs)).sum(dim=0) / mask.sum().clamp(min=1)
    return torch.exp(-torch.sum(torch.xlogy(marginal, marginal), dim=-1)).sum()


class GumbelVectorQuantizer(nn.Module):
    """Product quantizer with ``num_groups`` codebooks of ``num_vars`` entries each (see module doc).

    Args:
        input_dim: ``D_in`` of the frames to quantize (wav2vec 2.0: the conv feature dim, 512).
        num_groups: ``G`` (wav2vec 2.0: 2; fairseq ``latent_groups``).
        num_vars: ``V`` entries per group (wav2vec 2.0: 320; fairseq ``latent_vars``).
        code_dim: size of the quantized vector, divisible by ``G`` (wav2vec 2.0: 256 Base, 768 Large;
            fairseq ``latent_dim`` / ``final_dim``).
        temperature: ``(max_t, min_t, decay)``; ``τ(n) = max(max_t · decay ** n, min_t)``.
        combine_groups: share one codebook of ``V`` entries between the groups (fairseq option).

    Attributes:
        vars: ``(1, G·V, code_dim / G)`` codebook (``(1, V, code_dim / G)`` with ``combine_groups``),
            initialised uniform in ``[0, 1)`` like fairseq.
        weight_proj: ``Linear(D_in, G·V)``, initialised N(0, 1) weights and zero bias like fairseq.
        num_updates: the update count the temperature is at.
    """

    def __init__(self, input_dim: int, num_groups: int, num_vars: int, code_dim: int,
                 temperature: tuple[float, float, float] = (2.0, 0.5, 0.999995), combine_groups: bool = False) -> None:
        super().__init__()
        if min(input_dim, num_groups, num_vars, code_dim) < 1:
            raise ValueError(f"quantizer sizes must be positive, got input_dim={input_dim}, num_groups={num_groups}, "
                             f"num_vars={num_vars}, code_dim={code_dim}")
        if code_dim % num_groups:
            raise ValueError(f"code_dim ({code_dim}) must be divisible by num_groups ({num_groups})")
        if len(temperature) != 3:
            raise ValueError(f"temperature must be (max, min, decay), got {temperature!r}")
        max_t, min_t, decay = (float(t) for t in temperature)
        if not (0 < min_t <= max_t and 0 < decay <= 1):
            raise ValueError(f"temperature (max, min, decay) needs 0 < min <= max and 0 < decay <= 1, "
                             f"got {temperature!r}")
        self.input_dim, self.num_groups, self.num_vars, self.code_dim = input_dim, num_groups, num_vars, code_dim
        self.max_temp, self.min_temp, self.temp_decay = max_t, min_t, decay
        self.combine_groups = combine_groups
        self.num_updates = 0
        n_books = 1 if combine_groups else num_groups
        self.vars = nn.Parameter(torch.empty(1, n_books * num_vars, code_dim // num_groups).uniform_())
        self.weight_proj = nn.Linear(input_dim, num_groups * num_vars)
        nn.init.normal_(self.weight_proj.weight, mean=0.0, std=1.0)
        nn.init.zeros_(self.weight_proj.bias)

    @property
    def num_codes(self) -> int:
        """``G · V``, the normaliser of the diversity loss."""
        return self.num_groups * self.num_vars

    @property
    def temperature(self) -> float:
        """``max(max_t · decay ** num_updates, min_t)``."""
        return max(self.max_temp * self.temp_decay ** self.num_updates, self.min_temp)

    def set_num_updates(self, num_updates: int) -> None:
        """Anneal the temperature to update ``num_updates`` (call from ``Task.on_update``)."""
        if num_updates < 0:
            raise ValueError(f"num_updates must be >= 0, got {num_updates}")
        self.num_updates = int(num_updates)

    def codebook(self) -> torch.Tensor:
        """``(G, V, code_dim / G)`` the entries of each group."""
        vars_ = self.vars
        if self.combine_groups:
            vars_ = vars_.repeat(1, self.num_groups, 1)
        return vars_.view(self.num_groups, self.num_vars, -1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> QuantizerOutput:
        """Quantize frames.

        Args:
            x: ``(B, T, D_in)`` frames.
            mask: ``(B, T)`` bool, frames the perplexities average over (wav2vec 2.0 scores masked
                frames; ``transformers``' ``mask_time_indices``). None: all frames.
            generator: Gumbel noise source in training (None: torch's global generator).

        Returns:
            :class:`QuantizerOutput`.
        """
        if x.dim() != 3 or x.shape[-1] != self.input_dim:
            raise ValueError(f"expected frames (B, T, {self.input_dim}), got shape {tuple(x.shape)}")
        B, T, _ = x.shape
        if mask is not None and (tuple(mask.shape) != (B, T) or mask.dtype != torch.bool):
            raise ValueError(f"mask must be a bool tensor of shape ({B}, {T}), got {mask.dtype} {tuple(mask.shape)}")
        G, V = self.num_groups, self.num_vars
        logits = self.weight_proj(x).view(B * T * G, V)  # (B·T·G, V)
        frame_mask = None if mask is None else mask.reshape(B * T)
        soft = torch.softmax(logits.view(B * T, G, V).float(), dim=-1)  # (B·T, G, V)
        prob_ppl = perplexity(soft, frame_mask)
        with torch.no_grad():
            hard_idx = logits.argmax(dim=-1)  # (B·T·G,)
            hard = torch.zeros(B * T * G, V, dtype=torch.float32, device=x.device)
            hard.scatter_(-1, hard_idx.view(-1, 1), 1.0)
            code_ppl = perplexity(hard.view(B * T, G, V), frame_mask)
        book = self.codebook()  # (G, V, d)
        temperature = self.temperature
        if self.training:
            probs, idx = gumbel_softmax_hard(logits.float(), temperature, generator)
            probs = probs.type_as(logits).view(B * T, G, V)
            quantized = torch.einsum("ngv,gvd->ngd", probs, book.to(probs.dtype))  # (B·T, G, d)
        else:
            idx = hard_idx
            quantized = book[torch.arange(G, device=x.device).repeat(B * T), idx]  # (B·T·G, d)
        diversity = (self.num_codes - prob_ppl) / self.num_codes
        return QuantizerOutput(quantized=quantized.reshape(B, T, -1), indices=idx.view(B, T, G),
                               prob_perplexity=prob_ppl, code_perplexity=code_ppl, diversity_loss=diversity,
                               temperature=temperature)
