"""Gaussian diffusion pieces: beta schedules, the forward process ``q(x_t | x_0)`` and timestep embeddings.

DDPM notation (Ho et al., 2020) with integer steps ``t = 0 .. T-1`` (index ``t`` is the
``(t+1)``-th noising step, as in the ``guided-diffusion`` / DiT code):

* :func:`beta_schedule` — ``β_t``, float64 ``(T,)``:

  * ``"linear"`` (Ho et al.): ``β_t = linspace(s·1e-4, s·0.02, T)[t]`` with ``s = 1000 / T``
    (so every ``T`` spans the same total noise as ``T = 1000``);
  * ``"cosine"`` (Nichol & Dhariwal, 2021): ``ᾱ(u) = cos²(((u + 0.008) / 1.008)·π/2)``,
    ``β_t = min(1 - ᾱ((t+1)/T) / ᾱ(t/T), 0.999)``.

* :class:`NoiseSchedule` — ``ᾱ_t = Π_{s≤t} (1 - β_s)`` and :meth:`~NoiseSchedule.q_sample`:
  ``x_t = sqrt(ᾱ_t)·x_0 + sqrt(1 - ᾱ_t)·ε``. The coefficients are computed in float64 and
  kept as float32 non-persistent buffers (they follow ``.to(device)``, never a checkpoint).
* :func:`timestep_embedding` — sinusoidal features of integer (or real) steps, ``(B,)`` →
  ``(B, D)``: with ``h = D / 2``, ``ω_k = exp(-ln(P)·k / (h - 1))``, ``k = 0 .. h-1``,
  ``[sin(t·ω) | cos(t·ω)]`` (``P = 10000``; the DDPM / tensor2tensor layout, ``h - 1`` in the
  denominator so the last frequency is exactly ``1 / P``).
* :class:`TimestepEmbedding` — that sinusoid through ``Linear(D, H) → SiLU → Linear(H, D_out)``
  (the DDPM / DiT conditioning MLP).

Every tensor takes its device from its inputs; nothing here draws random numbers (``ε`` and
``t`` come from the caller's explicit generators).
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["SCHEDULES", "beta_schedule", "NoiseSchedule", "timestep_embedding", "TimestepEmbedding"]

SCHEDULES = ("linear", "cosine")


def _cosine_alpha_bar(u: torch.Tensor) -> torch.Tensor:
    return torch.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2


def beta_schedule(name: str, timesteps: int, *, max_beta: float = 0.999) -> torch.Tensor:
    """``β_t`` of schedule ``name`` (``"linear"`` or ``"cosine"``; formulas: module docstring), float64 ``(T,)``."""
    if name not in SCHEDULES:
        raise ValueError(f"beta schedule must be one of {SCHEDULES}, got {name!r}")
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    if not 0.0 < max_beta < 1.0:
        raise ValueError(f"max_beta must be in (0, 1), got {max_beta}")
    if name == "linear":
        scale = 1000.0 / timesteps
        betas = torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)
        if float(betas[-1]) >= 1.0:
            raise ValueError(f"a linear schedule with {timesteps} steps has beta_T = {float(betas[-1]):.3f} >= 1; "
                             "use at least 21 steps")
        return betas
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps  # (T + 1,)
    abar = _cosine_alpha_bar(steps)
    return (1.0 - abar[1:] / abar[:-1]).clamp(max=max_beta)  # (T,)


class NoiseSchedule(nn.Module):
    """The diffusion forward process of a beta schedule.

    Args:
        name: ``"linear"`` or ``"cosine"`` (:func:`beta_schedule`).
        timesteps: ``T``.

    Attributes:
        betas, alphas_cumprod: float64 ``(T,)`` tensors (plain attributes, CPU).
        sqrt_alphas_cumprod, sqrt_one_minus_alphas_cumprod: float32 ``(T,)`` non-persistent buffers.
    """

    def __init__(self, name: str, timesteps: int) -> None:
        super().__init__()
        self.name, self.timesteps = name, int(timesteps)
        self.betas = beta_schedule(name, timesteps)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)  # (T,) float64
        self.register_buffer("sqrt_alphas_cumprod", self.alphas_cumprod.sqrt().float(), persistent=False)
        self.register_buffer("sqrt_one_minus_alphas_cumprod", (1.0 - self.alphas_cumprod).sqrt().float(),
                             persistent=False)

    def _check_t(self, t: torch.Tensor, batch: int) -> None:
        if t.dim() != 1 or t.shape[0] != batch or t.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"t must be an integer (B,) = ({batch},) tensor, got {t.dtype} {tuple(t.shape)}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.timesteps):
            raise ValueError(f"t must be in [0, {self.timesteps}), got values in [{int(t.min())}, {int(t.max())}]")

    def coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sqrt(ᾱ_t), sqrt(1 - ᾱ_t))``, each float32 ``(B,)`` on ``t``'s device, for integer ``t (B,)``."""
        self._check_t(t, t.shape[0] if t.dim() == 1 else 0)
        index = t.to(self.sqrt_alphas_cumprod.device).long()
        return (self.sqrt_alphas_cumprod[index].to(t.device),
                self.sqrt_one_minus_alphas_cumprod[index].to(t.device))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``x_t = sqrt(ᾱ_t)·x_0 + sqrt(1 - ᾱ_t)·ε``.

        Args:
            x0: ``(B, ...)`` clean data (e.g. ``(B, C, H, W)`` pixels in ``[-1, 1]``).
            t: ``(B,)`` integer steps in ``[0, T)``.
            noise: ``ε``, the shape of ``x0``.

        Returns:
            ``x_t``, the shape and dtype of ``x0``.
        """
        if noise.shape != x0.shape:
            raise ValueError(f"noise {tuple(noise.shape)} must have the shape of x0 {tuple(x0.shape)}")
        self._check_t(t, x0.shape[0])
        a, s = self.coefficients(t.to(x0.device))
        view = (-1,) + (1,) * (x0.dim() - 1)
        return a.to(x0.dtype).view(view) * x0 + s.to(x0.dtype).view(view) * noise

    def extra_repr(self) -> str:
        return f"name={self.name!r}, timesteps={self.timesteps}"


def timestep_embedding(t: torch.Tensor, dim: int, *, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features ``(B, dim)`` float32 of steps ``t (B,)`` (formula: module docstring; ``dim`` even, >= 4)."""
    if dim % 2 or dim < 4:
        raise ValueError(f"timestep_embedding needs an even dim >= 4, got {dim}")
    if t.dim() != 1:
        raise ValueError(f"t must be (B,), got {tuple(t.shape)}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - 1))
    args = t.float()[:, None] * freqs[None, :]  # (B, h)
    return torch.cat([args.sin(), args.cos()], dim=1)  # (B, D)


class TimestepEmbedding(nn.Module):
    """``t (B,)`` → ``(B, out_dim)``: :func:`timestep_embedding` of width ``freq_dim`` → Linear → SiLU → Linear.

    Args:
        freq_dim: width of the sinusoid (even, >= 4).
        hidden_dim: width of the hidden layer.
        out_dim: output width.
    """

    def __init__(self, freq_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        if freq_dim % 2 or freq_dim < 4:
            raise ValueError(f"freq_dim must be even and >= 4, got {freq_dim}")
        self.freq_dim = freq_dim
        self.fc1 = nn.Linear(freq_dim, hidden_dim)
        self.act = nn.SiLU()
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """``t (B,)`` integer or float steps → ``(B, out_dim)`` in the weights' dtype."""
        emb = timestep_embedding(t, self.freq_dim).to(self.fc1.weight.dtype)
        return self.fc2(self.act(self.fc1(emb)))
