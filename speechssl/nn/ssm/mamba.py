"""Mamba mixer and residual block, one-directional (Mamba) or bidirectional (Vision Mamba / SSAMBA).

:class:`MambaMixer` is Mamba's selective-SSM layer (Gu & Dao, 2023)::

    x, z = in_proj(h).chunk(2)                      # (B, L, E) each, E = expand * D
    x = silu(causal_depthwise_conv(x))
    dt, B, C = x_proj(x).split([R, N, N])
    y = selective_scan(x, dt_proj.weight @ dt, -exp(A_log), B, C, D, z,
                       delta_bias=dt_proj.bias, delta_softplus=True)
    out = out_proj(y)

With ``bidirectional=True`` it is Vision Mamba's "v2" bidirectional mixer, the one SSAMBA uses:
``in_proj`` and ``out_proj`` are shared, a second set of SSM parameters (``conv1d_b``, ``x_proj_b``,
``dt_proj_b``, ``A_b_log``, ``D_b``) scans the time-reversed sequence, and the two outputs are
added (and halved, Vim's ``if_devide_out``) before ``out_proj``.

Padding: every operation is causal in its scan direction, so padded frames at the end of a
sequence never reach valid frames of the forward pass. The backward pass reverses each sequence
*within its own length* (``lengths``), so that its padding also stays at the end. Outputs at
padded positions are garbage; callers mask them.

Parameter names and initialisation follow mamba-ssm's ``Mamba`` module (``A_log = log(1..N)``,
``D = 1``, ``dt_proj.bias = softplus^-1(dt)`` with ``dt`` log-uniform in ``[dt_min, dt_max]``),
so weights convert from mamba-ssm, Vim and transformers' ``MambaMixer`` by name.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.utils.checkpoint
from torch import nn
from torch.nn import functional as F

from speechssl.nn.ssm.scan import ScanImpl, selective_scan
from speechssl.nn.ssm.lean import LeanMixerCore
from speechssl.nn.ssm.scan_native import native_unavailable_reason

__all__ = ["MambaMixer", "MambaBlock", "DropPath", "reverse_padded", "causal_depthwise_conv"]


def causal_depthwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Causal depthwise 1-D convolution on time-major input.

    Equals ``nn.Conv1d(E, E, K, groups=E, padding=K-1)`` on ``x.transpose(1, 2)`` truncated to
    ``L`` steps, computed as ``K`` shifted multiply-adds so that no layout change is needed.

    Args:
        x: ``(B, L, E)``.
        weight: ``(E, 1, K)`` (``nn.Conv1d`` layout).
        bias: ``(E,)`` or None.

    Returns:
        ``(B, L, E)``: ``out[t] = bias + sum_k weight[:, 0, k] * x[t + k - K + 1]`` (zeros before 0).
    """
    K = weight.shape[-1]
    L = x.shape[1]
    w = weight[:, 0, :]                                 # (E, K)
    xp = F.pad(x, (0, 0, K - 1, 0))                     # (B, L + K - 1, E)
    out = xp[:, K - 1:] * w[:, K - 1]
    for k in range(K - 1):
        out = out.addcmul(xp[:, k:k + L], w[:, k])
    return out if bias is None else out + bias


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Reverse each sequence in time within its own length; padded steps stay where they are.

    Args:
        x: ``(B, L, ...)``.
        lengths: ``(B,)`` valid steps, or None (reverse everything).

    Returns:
        ``y`` with ``y[b, t] = x[b, len_b - 1 - t]`` for ``t < len_b`` and ``x[b, t]`` otherwise.
        Applying it twice gives ``x`` back.
    """
    if lengths is None:
        return x.flip(1)
    L = x.shape[1]
    steps = torch.arange(L, device=x.device)
    lengths = lengths.to(x.device).clamp(max=L).unsqueeze(1)
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)          # (B, L)
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


class DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch per sample while training (scaled by 1/keep)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _init_dt_proj(dt_proj: nn.Linear, dt_rank: int, dt_min: float, dt_max: float, dt_init: str,
                  dt_scale: float, dt_init_floor: float) -> None:
    std = dt_rank ** -0.5 * dt_scale
    if dt_init == "constant":
        nn.init.constant_(dt_proj.weight, std)
    elif dt_init == "random":
        nn.init.uniform_(dt_proj.weight, -std, std)
    else:
        raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}")
    # softplus(bias) log-uniform in [dt_min, dt_max]
    dt = torch.exp(torch.rand(dt_proj.out_features) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=dt_init_floor)
    with torch.no_grad():
        dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))   # inverse of softplus


class MambaMixer(nn.Module):
    """Mamba's selective-SSM mixer, optionally bidirectional (see module docstring).

    Args:
        d_model: input/output width ``D``.
        d_state: SSM state size ``N``.
        d_conv: causal convolution width.
        expand: inner width ``E = expand * D``.
        dt_rank: rank ``R`` of the step-size projection; ``"auto"`` = ``ceil(D / 16)``.
        dt_min, dt_max, dt_init, dt_scale, dt_init_floor: step-size initialisation (mamba-ssm's).
        conv_bias: bias in the convolution.
        bias: biases in ``in_proj``/``out_proj``.
        bidirectional: add a reversed scan with its own SSM parameters (Vim "v2").
        divide_out: halve the sum of the two directions (Vim ``if_devide_out``).
        scan_impl: implementation of :func:`~speechssl.nn.ssm.selective_scan`.
        recompute: while training on CPU with the native scan, run the core through
            :class:`~speechssl.nn.ssm.lean.LeanMixerCore`: it keeps only ``in_proj``'s output and
            recomputes the rest in backward, a chunk of channels at a time. Identical forward
            values, gradients equal to float rounding, about 0.4x the peak memory, and faster
            (fewer full-width temporaries to allocate and fill).
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | Literal["auto"] = "auto", dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init: str = "random", dt_scale: float = 1.0, dt_init_floor: float = 1e-4,
                 conv_bias: bool = True, bias: bool = False, bidirectional: bool = False,
                 divide_out: bool = True, scan_impl: ScanImpl = "auto", recompute: bool = True) -> None:
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.bidirectional = bidirectional
        self.divide_out = divide_out
        self.scan_impl = scan_impl
        self.recompute = recompute
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        suffixes = ("", "_b") if bidirectional else ("",)
        for s in suffixes:
            conv = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1,
                             bias=conv_bias)
            x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
            dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
            _init_dt_proj(dt_proj, self.dt_rank, dt_min, dt_max, dt_init, dt_scale, dt_init_floor)
            A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)   # S4D-real
            setattr(self, f"conv1d{s}", conv)
            setattr(self, f"x_proj{s}", x_proj)
            setattr(self, f"dt_proj{s}", dt_proj)
            a_name = "A_log" if s == "" else "A_b_log"   # Vim's names
            setattr(self, a_name, nn.Parameter(torch.log(A)))
            setattr(self, f"D{s}", nn.Parameter(torch.ones(self.d_inner)))
            getattr(self, a_name)._no_weight_decay = True
            getattr(self, f"D{s}")._no_weight_decay = True
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def _scan_inputs(self, x: torch.Tensor, direction: str
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One direction's conv and projections: ``(B, L, E)`` → ``u, dt`` ``(B, L, E)``, ``B, C`` ``(B, L, N)``."""
        conv = getattr(self, f"conv1d{direction}")
        x_proj = getattr(self, f"x_proj{direction}")
        dt_proj = getattr(self, f"dt_proj{direction}")
        u = F.silu(causal_depthwise_conv(x, conv.weight, conv.bias))              # (B, L, E)
        dt, B, C = torch.split(x_proj(u), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        return u, F.linear(dt, dt_proj.weight), B, C                              # dt bias goes to the scan

    def _core_params(self, direction: str | None = None) -> list[nn.Parameter]:
        """The parameters between ``in_proj`` and ``out_proj`` of one scan direction (``""`` or
        ``"_b"``), or of both (None): what :class:`~speechssl.nn.ssm.lean.LeanMixerCore` differentiates."""
        directions = ("", "_b") if direction is None and self.bidirectional else (direction or "",)
        params = dict(self.named_parameters())
        names = [n for s in directions for n in (f"conv1d{s}.weight", f"conv1d{s}.bias", f"x_proj{s}.weight",
                                                    f"dt_proj{s}.weight", f"dt_proj{s}.bias",
                                                    "A_log" if s == "" else "A_b_log", f"D{s}")]
        return [params[n] for n in names if n in params]

    def _scan_operands(self, xz: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """``in_proj``'s output ``(B, L, 2E)`` → the scan's ``(u, delta, A, B, C, D, z, delta_bias)``.

        ``u``, ``delta``, ``z``: ``(B, E', L)`` with ``E' = 2E`` when bidirectional (both directions in
        ONE scan: the backward direction's inputs reversed in time within each length, its ``B``/``C``
        the second group of a grouped ``(B, 2, N, L)``), else ``E``.
        """
        x, z = xz.chunk(2, dim=-1)                                                # (B, L, E) each
        u, dt, B, C = self._scan_inputs(x, "")
        A = -torch.exp(self.A_log.float())
        D, bias = self.D.float(), self.dt_proj.bias.float()
        if self.bidirectional:
            u_b, dt_b, B_b, C_b = self._scan_inputs(reverse_padded(x, lengths), "_b")
            u, dt = torch.cat([u, u_b], -1), torch.cat([dt, dt_b], -1)            # (B, L, 2E)
            z = torch.cat([z, reverse_padded(z, lengths)], -1)
            B, C = torch.stack([B, B_b], 2), torch.stack([C, C_b], 2)             # (B, L, 2, N)
            A = torch.cat([A, -torch.exp(self.A_b_log.float())])                  # (2E, N)
            D, bias = torch.cat([D, self.D_b.float()]), torch.cat([bias, self.dt_proj_b.bias.float()])
            B, C = B.permute(0, 2, 3, 1), C.permute(0, 2, 3, 1)                   # (B, 2, N, L) views
        else:
            B, C = B.transpose(1, 2), C.transpose(1, 2)                           # (B, N, L) views
        return u.transpose(1, 2), dt.transpose(1, 2), A, B, C, D, z.transpose(1, 2), bias

    def _combine(self, y: torch.Tensor, lengths: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """Scan output ``(B, E', L)`` → ``out_proj``'s input ``(B, L, E)`` (directions summed, halved)."""
        y = y.transpose(1, 2).to(dtype)                                           # (B, L, E')
        if self.bidirectional:
            y_f, y_b = y.chunk(2, dim=-1)
            y = y_f + reverse_padded(y_b, lengths)
            if self.divide_out:
                y = y / 2
        return y

    def _recomputes(self, xz: torch.Tensor) -> bool:
        """Whether this pass keeps only ``in_proj``'s output and recomputes the rest in backward."""
        return (self.recompute and torch.is_grad_enabled() and xz.device.type == "cpu"
                and self.scan_impl in ("auto", "native") and not torch.is_autocast_enabled("cpu")
                and (xz.requires_grad or any(p.requires_grad for p in self._core_params()))
                and native_unavailable_reason() is None)

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Mix along time.

        Args:
            hidden: ``(B, L, D)``.
            lengths: ``(B,)`` valid steps (only the bidirectional mixer needs them; None = all valid).

        Returns:
            ``(B, L, D)``.
        """
        xz = self.in_proj(hidden)                                                 # (B, L, 2E)
        if self._recomputes(xz):
            y = LeanMixerCore.apply(lengths, self.dt_rank, self.divide_out, xz, *self._core_params())
        else:
            u, dt, A, B, C, D, z, bias = self._scan_operands(xz, lengths)
            y = self._combine(selective_scan(u, dt, A, B, C, D, z, delta_bias=bias, delta_softplus=True,
                                             impl=self.scan_impl), lengths, hidden.dtype)
        return self.out_proj(y)


class MambaBlock(nn.Module):
    """Pre-norm residual block ``h + drop_path(mixer(norm(h)))`` (mamba-ssm's / Vim's ``Block``).

    Args:
        d_model: width ``D``.
        norm: ``"rms"`` (RMSNorm, mamba's default) or ``"layer"`` (LayerNorm).
        norm_eps: epsilon of the norm.
        drop_path: stochastic-depth probability of the mixer branch.
        checkpoint: while training, keep only the block's input and recompute the norm and
            mixer in the backward pass (activation checkpointing: far less memory, one more
            forward of the mixer).
        **mixer_kwargs: passed to :class:`MambaMixer` (``d_state``, ``bidirectional``, ...).
    """

    def __init__(self, d_model: int, norm: Literal["rms", "layer"] = "rms", norm_eps: float = 1e-5,
                 drop_path: float = 0.0, checkpoint: bool = False, **mixer_kwargs) -> None:
        super().__init__()
        self.checkpoint = checkpoint
        if norm == "rms":
            self.norm: nn.Module = nn.RMSNorm(d_model, eps=norm_eps)
        elif norm == "layer":
            self.norm = nn.LayerNorm(d_model, eps=norm_eps)
        else:
            raise ValueError(f"norm must be 'rms' or 'layer', got {norm!r}")
        self.mixer = MambaMixer(d_model, **mixer_kwargs)
        self.drop_path = DropPath(drop_path)

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, L, D)`` → ``(B, L, D)``; ``lengths`` ``(B,)`` as in :meth:`MambaMixer.forward`."""
        if self.checkpoint and self.training and torch.is_grad_enabled():
            mixed = torch.utils.checkpoint.checkpoint(self._mix, hidden, lengths, use_reentrant=False)
        else:
            mixed = self._mix(hidden, lengths)
        return hidden + self.drop_path(mixed)

    def _mix(self, hidden: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        return self.mixer(self.norm(hidden), lengths)
