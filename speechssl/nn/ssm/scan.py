"""``selective_scan``: one entry point for every implementation of Mamba's selective scan.

Implementations (``impl=``):

* ``"ref"``: :func:`~speechssl.nn.ssm.scan_ref.selective_scan_ref`, a sequential loop (the spec;
  slow, ``B·D·L·N`` memory; for tests).
* ``"chunked"``: :func:`~speechssl.nn.ssm.scan_chunked.selective_scan_chunked`, pure torch, runs
  on any device, memory linear in ``L`` for training.
* ``"native"``: :func:`~speechssl.nn.ssm.scan_native.selective_scan_native`, a C++ kernel built
  on first use with the system compiler; CPU inputs with input-dependent ``B`` and ``C``.
* ``"fused"``: mamba-ssm's CUDA kernel ``selective_scan_fn`` (``pip install mamba-ssm``), CUDA inputs only.
* ``"auto"``: on CUDA, ``"fused"`` when ``mamba_ssm`` imports; on CPU, ``"native"`` when the
  kernel builds and ``B``, ``C`` are input-dependent (Mamba's case); ``"chunked"`` otherwise.
  The choice is logged once per (device type, choice, reason).
"""
from __future__ import annotations

import functools
import importlib
import logging
from typing import Callable, Literal

import torch

from speechssl.nn.ssm.scan_chunked import selective_scan_chunked
from speechssl.nn.ssm.scan_native import native_unavailable_reason, selective_scan_native
from speechssl.nn.ssm.scan_ref import selective_scan_ref

__all__ = ["selective_scan", "fused_available", "ScanImpl"]

logger = logging.getLogger(__name__)

ScanImpl = Literal["auto", "ref", "chunked", "native", "fused"]
_IMPLS = ("auto", "ref", "chunked", "native", "fused")
_FUSED_HINT = ("install mamba-ssm on a machine with CUDA and a matching torch build: "
               "`pip install mamba-ssm causal-conv1d --no-build-isolation`")


@functools.lru_cache(maxsize=None)
def _fused_fn() -> Callable | None:
    """mamba-ssm's ``selective_scan_fn``, or None when it cannot be imported."""
    try:
        module = importlib.import_module("mamba_ssm.ops.selective_scan_interface")
    except Exception:  # ImportError, or a CUDA extension built for another torch (OSError, ...)
        return None
    return getattr(module, "selective_scan_fn", None)


def fused_available() -> bool:
    """True when mamba-ssm's fused kernel can be imported (it still needs CUDA inputs)."""
    return _fused_fn() is not None


@functools.lru_cache(maxsize=None)
def _log_choice(device_type: str, choice: str, reason: str) -> None:
    logger.info("selective_scan(impl='auto') on %s uses %r (%s)", device_type, choice, reason)


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(map(str, t.shape)) + ")"


def _check_bc(name: str, M: torch.Tensor, batch: int, dim: int, dstate: int, length: int) -> None:
    if M.dim() == 2:
        if tuple(M.shape) != (dim, dstate):
            raise ValueError(f"{name}: time-invariant form must be (D, N) = ({dim}, {dstate}), got {_shape(M)}")
        return
    if M.dim() == 3:
        if tuple(M.shape) != (batch, dstate, length):
            raise ValueError(f"{name}: expected (B, N, L) = ({batch}, {dstate}, {length}), got {_shape(M)}")
        return
    if M.dim() == 4:
        groups = M.shape[1]
        if M.shape[0] != batch or M.shape[2] != dstate or M.shape[3] != length:
            raise ValueError(f"{name}: expected grouped (B, G, N, L) = ({batch}, G, {dstate}, {length}), "
                             f"got {_shape(M)}")
        if groups < 1 or dim % groups != 0:
            raise ValueError(f"{name}: {groups} groups do not divide D={dim} channels; use a G that divides D")
        return
    raise ValueError(f"{name}: expected (D, N), (B, N, L) or (B, G, N, L), got {M.dim()}-D tensor {_shape(M)}")


def _validate(u, delta, A, B, C, D, z, delta_bias) -> None:
    if u.dim() != 3:
        raise ValueError(f"u: expected (B, D, L), got {u.dim()}-D tensor {_shape(u)}")
    batch, dim, length = u.shape
    if length == 0:
        raise ValueError("u: sequence length L is 0; the selective scan needs at least one step")
    if delta.shape != u.shape:
        raise ValueError(f"delta: expected the shape of u {_shape(u)}, got {_shape(delta)}")
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"A: expected (D, N) with D={dim}, got {_shape(A)}")
    if A.is_complex():
        raise ValueError("A: complex state matrices are not supported; use a real (D, N) tensor")
    dstate = A.shape[1]
    _check_bc("B", B, batch, dim, dstate, length)
    _check_bc("C", C, batch, dim, dstate, length)
    if D is not None and tuple(D.shape) != (dim,):
        raise ValueError(f"D: expected ({dim},), got {_shape(D)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z: expected the shape of u {_shape(u)}, got {_shape(z)}")
    if delta_bias is not None and tuple(delta_bias.shape) != (dim,):
        raise ValueError(f"delta_bias: expected ({dim},), got {_shape(delta_bias)}")
    devices = {t.device for t in (u, delta, A, B, C, D, z, delta_bias) if t is not None}
    if len(devices) > 1:
        raise ValueError(f"all tensors must be on one device, got {sorted(map(str, devices))}")


def _run_fused(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
    fn = _fused_fn()
    if fn is None:
        raise RuntimeError(f"selective_scan(impl='fused'): mamba_ssm is not importable; {_FUSED_HINT}")
    if u.device.type != "cuda":
        raise RuntimeError(f"selective_scan(impl='fused') needs CUDA tensors, got {u.device}; "
                           "use impl='auto' or 'chunked' on other devices")
    # The kernel wants a float32 A, D and delta_bias (mamba's own modules pass .float()).
    return fn(u, delta, A.float(), B, C, None if D is None else D.float(), z,
              None if delta_bias is None else delta_bias.float(), delta_softplus, return_last_state)


def _native_problem(u: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> str | None:
    """Why the native kernel cannot run these inputs (None when it can)."""
    if u.device.type != "cpu":
        return f"it runs on CPU tensors, got {u.device}"
    if B.dim() == 2 or C.dim() == 2:
        return "it needs input-dependent B and C, got a time-invariant (D, N) matrix"
    return native_unavailable_reason()


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                   C: torch.Tensor, D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                   delta_bias: torch.Tensor | None = None, delta_softplus: bool = False,
                   return_last_state: bool = False, impl: ScanImpl = "auto",
                   chunk_size: int | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Mamba's selective scan (S6), with Mamba's argument names and shapes.

    For each batch item, channel ``d`` and state ``n``, with ``dt = softplus(delta + delta_bias)``
    (bias and softplus optional)::

        h[t] = exp(dt[t] A[d, n]) h[t-1] + dt[t] B[t, n] u[t],   h[0] = 0
        out[t] = (sum_n C[t, n] h[t] + D[d] u[t]) * silu(z[t])

    Args:
        u: ``(B, D, L)`` input sequence.
        delta: ``(B, D, L)`` step sizes.
        A: ``(D, N)`` real state matrix.
        B: input matrix, ``(B, N, L)``, grouped ``(B, G, N, L)`` (``G`` divides ``D``) or
            time-invariant ``(D, N)``.
        C: output matrix, same forms as ``B``.
        D: ``(D,)`` skip weights, optional.
        z: ``(B, D, L)`` gate, optional.
        delta_bias: ``(D,)`` added to ``delta``, optional.
        delta_softplus: apply softplus to ``delta`` (after the bias).
        return_last_state: also return the final state ``(B, D, N)`` (no gradient flows through it).
        impl: ``"auto"``, ``"ref"``, ``"chunked"``, ``"native"`` or ``"fused"`` (see module docstring).
        chunk_size: steps per chunk for ``"chunked"`` (default: ``auto_chunk_size(B, D, N)``);
            the other implementations ignore it.

    Returns:
        ``out`` of shape ``(B, D, L)`` in ``u.dtype`` (computed in float32, or float64 for float64
        inputs), or ``(out, last_state)``.

    Raises:
        ValueError: shapes do not match.
        RuntimeError: ``impl="fused"`` without mamba-ssm or without CUDA inputs; ``impl="native"``
            on inputs or a machine it cannot run (the message says which).
    """
    if impl not in _IMPLS:
        raise ValueError(f"impl: expected one of {list(_IMPLS)}, got {impl!r}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive int, got {chunk_size}")
    _validate(u, delta, A, B, C, D, z, delta_bias)
    if impl == "auto":
        if u.device.type == "cuda" and fused_available():
            impl = "fused"
            _log_choice("cuda", "fused", "mamba-ssm kernel")
        elif u.device.type == "cuda":
            impl = "chunked"
            _log_choice("cuda", "chunked", "mamba_ssm not importable")
        else:
            problem = _native_problem(u, B, C)
            impl = "native" if problem is None else "chunked"
            _log_choice(u.device.type, impl, "C++ kernel" if problem is None else f"native kernel unusable: {problem}")
    if impl == "native":
        problem = _native_problem(u, B, C)
        if problem is not None:
            raise RuntimeError(f"selective_scan(impl='native'): {problem}; use impl='auto' or 'chunked'")
        return selective_scan_native(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if impl == "fused":
        return _run_fused(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if impl == "ref":
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                                  chunk_size=chunk_size)
