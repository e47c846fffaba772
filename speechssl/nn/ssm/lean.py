"""The Mamba mixer's core with an explicit backward pass that keeps almost nothing.

The core is everything between ``in_proj`` and ``out_proj`` (see :mod:`speechssl.nn.ssm.mamba`)::

    per direction: x, z = xz.chunk(2)  (time-reversed within each length for the backward one)
                   a = causal_depthwise_conv(x);  u = silu(a)
                   xp = x_proj(u) = [dt_low | B | C];  dt = dt_proj.weight @ dt_low
                   y_dir = selective_scan(u, dt, -exp(A_log), B, C, D, z, dt_proj.bias, softplus)
    y = (y_fwd + reverse(y_bwd)) / 2

Autograd through that keeps ~20 inner-width ``(B, L, E)`` tensors per block for the backward
pass (``a``, ``u``, ``dt``, the reversed and concatenated copies, the gate...), which made a
bidirectional Mamba block hold about three times the memory of a fused-attention transformer
block of the same width. :class:`LeanMixerCore` saves only ``xz`` and the small ``xp``
(``R + 2N`` numbers per step and direction), and its backward walks the channels in chunks:
for each chunk it recomputes ``a``, ``u``, ``dt`` (a depthwise conv and a rank-``R``
product), runs the native scan kernel's backward on that chunk (the kernel recomputes the
states from its operands anyway), and accumulates the gradients. Every inner-width temporary
is a chunk wide; only ``du`` (one ``(B, L, E)``) waits for the second walk, because the
gradient reaching ``u`` through ``x_proj`` needs ``dB``, ``dC`` and ``d dt_low`` summed over all
channels first.

Parallelism: with ``torch.get_num_threads() = T > 1`` the chunks of each walk are split into
``T`` fixed groups run by ``T`` Python threads (torch ops and the kernel release the GIL), each
torch-single-threaded with a single-threaded kernel call: chunk-sized torch ops parallelise
poorly and leave OpenMP workers spinning between kernel calls, so threads over chunks beat
threads inside each op (at 8192 tokens, 2 threads: 1.1-1.4 s fwd+bwd against 5.4 s). Sums
over channels are added per group, so gradients depend on ``T`` only in float rounding and are
reproducible for a given ``T``.

CPU only (the native kernel). The forward values are those of the autograd path; gradients
agree with it to float rounding (the chunked products sum in another order).
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Sequence, TypeVar

import torch
from torch.nn import functional as F

from speechssl.nn.ssm.scan_native import native_operands, native_scan_backward, native_scan_forward

__all__ = ["DirectionParams", "LeanMixerCore", "CHUNK_CHANNELS"]

_T = TypeVar("_T")

#: Channels per chunk of the walks with one thread (halved per extra worker, at least 16): a
#: multiple of the kernel's 8/16 lanes. Narrower chunks hold fewer temporaries at once (at
#: 8192 tokens, width 192: 64 -> 32 channels cut the peak RSS of fwd+bwd from ~260 to ~227 MB
#: at the same speed).
CHUNK_CHANNELS = 32

#: One scan direction's parameters: conv weight ``(E, 1, K)``, conv bias ``(E,)`` or None,
#: x_proj weight ``(R + 2N, E)``, dt_proj weight ``(E, R)``, dt_proj bias ``(E,)``, A_log
#: ``(E, N)``, D ``(E,)``.
DirectionParams = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor,
                        torch.Tensor, torch.Tensor]


def _reverse(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Reverse ``(B, L, ...)`` in time within each length (padding stays); its own inverse."""
    L = x.shape[1]
    if lengths is None or bool((lengths >= L).all()):
        return x.flip(1)
    steps = torch.arange(L, device=x.device)
    lengths = lengths.to(x.device).clamp(max=L).unsqueeze(1)
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)
    return x.gather(1, index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x))


def _conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """Causal depthwise conv on ``(B, L, C)`` with ``w`` ``(C, K)`` (as :func:`~speechssl.nn.ssm.mamba.causal_depthwise_conv`)."""
    K, L = w.shape[-1], x.shape[1]
    xp = F.pad(x, (0, 0, K - 1, 0))
    out = xp[:, K - 1:] * w[:, K - 1]
    for k in range(K - 1):
        out = out.addcmul(xp[:, k:k + L], w[:, k])
    return out if b is None else out + b


def _conv_backward(x: torch.Tensor, w: torch.Tensor, da: torch.Tensor, with_bias: bool
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Gradients of :func:`_conv`: ``dx`` ``(B, L, C)``, ``dw`` ``(C, K)``, ``db`` ``(C,)``."""
    K, L = w.shape[-1], x.shape[1]
    dap = F.pad(da, (0, 0, 0, K - 1))                    # out[t] uses x[t-K+1 .. t]
    dx = dap[:, :L] * w[:, K - 1]
    for k in range(K - 1):
        dx = dx.addcmul(dap[:, K - 1 - k:K - 1 - k + L], w[:, k])
    xp = F.pad(x, (0, 0, K - 1, 0))
    dw = torch.stack([(da * xp[:, k:k + L]).sum((0, 1)) for k in range(K)], dim=-1)
    return dx, dw, da.sum((0, 1)) if with_bias else None


def _silu_grad(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(a)
    return g * s * (1 + a * (1 - s))


@contextlib.contextmanager
def _single_threaded_torch() -> Iterator[int]:
    """Run torch single-threaded inside; yield the caller's thread count for the chunk workers.

    The walks alternate small torch ops and kernel calls many times. With several torch
    threads, every torch op leaves OpenMP workers spinning on the cores the next op needs
    (2-10x slower on a loaded machine), and chunk-sized ops parallelise poorly anyway; so the
    threads go to the chunks instead (:func:`_map_chunks`), each one torch-single-threaded.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield 1
        return
    torch.set_num_threads(1)
    try:
        yield threads
    finally:
        torch.set_num_threads(threads)


def _map_chunks(fn: Callable[[list[slice]], _T], chunks: list[slice], threads: int) -> list[_T]:
    """``fn`` over ``threads`` interleaved groups of channel chunks, one Python thread per group.

    Torch ops and the native kernel release the GIL, so the groups run on separate cores.
    Each worker runs torch single-threaded under ``no_grad`` (grad mode and the OpenMP thread
    count are per thread). The groups are fixed by ``threads``, so results are reproducible
    for a given thread count; ``fn`` must write only its chunks' channels of shared outputs and
    return whatever it accumulates across channels.
    """
    groups = [chunks[i::threads] for i in range(min(threads, len(chunks)))]
    if len(groups) <= 1:
        return [fn(chunks)]

    def run(group: list[slice]) -> _T:
        torch.set_num_threads(1)
        with torch.no_grad():
            return fn(group)

    with ThreadPoolExecutor(len(groups)) as pool:
        out = list(pool.map(run, groups))
    _trim_heaps()
    return out


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc
    except (OSError, AttributeError):
        return None


def _trim_heaps() -> None:
    """Hand the workers' freed chunk temporaries back to the system.

    glibc gives every thread its own heap (arena), and memory freed in a worker's arena is not
    reused by the main thread's allocations: without a trim each worker's high-water mark of
    chunk temporaries stays resident next to the main heap (+25% peak RSS at 8192 tokens,
    2 threads).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _chunks(E: int, threads: int) -> list[slice]:
    """Channel chunks of ``CHUNK_CHANNELS // threads`` (at least 16): the workers' chunks are in
    flight at once, so the temporaries alive together stay about one ``CHUNK_CHANNELS`` chunk's."""
    width = max(16, CHUNK_CHANNELS // max(threads, 1) // 16 * 16)
    return [slice(c, min(c + width, E)) for c in range(0, E, width)]


def _direction_forward(xz: torch.Tensor, p: DirectionParams, dt_rank: int, lengths: torch.Tensor | None,
                       reverse: bool, y: torch.Tensor, threads: int) -> torch.Tensor:
    """Add one direction's scan output to ``y`` ``(B, L, E)``; return its ``xp`` ``(B, L, R + 2N)``.

    Only ``u`` is built full width (``x_proj`` mixes all channels); the step sizes, the gate and
    the scan run a chunk of channels at a time.
    """
    w, b, w_xp, w_dt, dt_bias, A_log, D = p
    E = xz.shape[-1] // 2
    flip = (lambda t: _reverse(t, lengths)) if reverse else (lambda t: t)
    chunks = _chunks(E, threads)
    u = xz.new_empty(xz.shape[:2] + (E,))

    def conv_silu(group: list[slice]) -> None:
        for c in group:
            u[..., c] = F.silu(_conv(flip(xz[..., c]), w[c, 0, :], None if b is None else b[c]))

    _map_chunks(conv_silu, chunks, threads)
    xp = F.linear(u, w_xp)
    N = (xp.shape[-1] - dt_rank) // 2
    dt_low, Bm, Cm = torch.split(xp, [dt_rank, N, N], dim=-1)
    A = -torch.exp(A_log.float())

    def scan(group: list[slice]) -> None:
        for c in group:
            cz = slice(E + c.start, E + c.stop)
            ops = native_operands(u[..., c].transpose(1, 2), F.linear(dt_low, w_dt[c]).transpose(1, 2), A[c],
                                  Bm.transpose(1, 2), Cm.transpose(1, 2), D[c].float(),
                                  flip(xz[..., cz]).transpose(1, 2), dt_bias[c].float())
            out, _ = native_scan_forward(*ops, True, 1)                      # (B, Ec, L) view of (B, L, Ec)
            y[..., c] += flip(out.transpose(1, 2).to(y.dtype))

    _map_chunks(scan, chunks, threads)
    return xp


def _direction_backward(xz: torch.Tensor, xp: torch.Tensor, gy: torch.Tensor, p: DirectionParams, dt_rank: int,
                        lengths: torch.Tensor | None, reverse: bool, dxz: torch.Tensor, threads: int) -> list:
    """Add one direction's gradient to ``dxz`` ``(B, L, 2E)``; return the parameters' (as ``p``).

    ``reverse``: the time-reversed direction. Its inputs, and the gradients going back, are
    reversed a chunk at a time, so no full-width reversed copy exists.
    """
    w, b, w_xp, w_dt, dt_bias, A_log, D = p
    E = xz.shape[-1] // 2
    N = (xp.shape[-1] - dt_rank) // 2
    flip = (lambda t: _reverse(t, lengths)) if reverse else (lambda t: t)
    dt_low, Bm, Cm = torch.split(xp, [dt_rank, N, N], dim=-1)
    A = -torch.exp(A_log.float())
    Bt, Ct = Bm.transpose(1, 2), Cm.transpose(1, 2)                         # (B, N, L) views
    cdt = torch.float64 if xz.dtype == torch.float64 else torch.float32
    du_scan = xz.new_empty(xz.shape[:2] + (E,))
    dw_dt, d_bias = torch.empty_like(w_dt), torch.empty_like(dt_bias)
    dA_log, dD = torch.empty_like(A_log), torch.empty_like(D)
    chunks = _chunks(E, threads)

    def walk1(group: list[slice]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The scan's gradients of ``group``'s channels; returns its sums over channels."""
        d_dt_low = torch.zeros_like(dt_low)
        dB = xz.new_zeros(xz.shape[0], 1, N, xz.shape[1], dtype=cdt)        # the kernel's (B, G, N, L)
        dC = torch.zeros_like(dB)
        for c in group:
            cz = slice(E + c.start, E + c.stop)
            u_c = F.silu(_conv(flip(xz[..., c]), w[c, 0, :], None if b is None else b[c]))
            dt_c = F.linear(dt_low, w_dt[c])
            ops = native_operands(u_c.transpose(1, 2), dt_c.transpose(1, 2), A[c], Bt, Ct, D[c].float(),
                                  flip(xz[..., cz]).transpose(1, 2), dt_bias[c].float())
            g_u, g_dt, g_z, g_A, g_B, g_C, g_D, g_bias = native_scan_backward(
                *ops, True, flip(gy[..., c]).transpose(1, 2), 1)
            du_scan[..., c] = g_u.transpose(1, 2)
            dxz[..., cz] += flip(g_z.transpose(1, 2))
            dB += g_B
            dC += g_C
            g_dt = g_dt.transpose(1, 2).to(xz.dtype)                        # (B, L, Ec)
            d_dt_low += g_dt @ w_dt[c]
            dw_dt[c] = g_dt.flatten(0, 1).T @ dt_low.flatten(0, 1)
            d_bias[c] = g_bias.to(d_bias.dtype)
            dA_log[c] = (g_A * A[c]).to(dA_log.dtype)                      # A = -exp(A_log)
            dD[c] = g_D.to(dD.dtype)
        return d_dt_low, dB, dC

    parts = _map_chunks(walk1, chunks, threads)
    d_dt_low, dB, dC = (sum(t[1:], t[0]) for t in zip(*parts))
    d_xp = torch.cat([d_dt_low, dB[:, 0].transpose(1, 2).to(xz.dtype), dC[:, 0].transpose(1, 2).to(xz.dtype)], -1)
    dw_xp, dw = torch.empty_like(w_xp), torch.empty_like(w)
    db = torch.empty_like(b) if b is not None else None

    def walk2(group: list[slice]) -> None:
        """Through x_proj, SiLU and the conv, for ``group``'s channels."""
        for c in group:
            x_c = flip(xz[..., c])
            a_c = _conv(x_c, w[c, 0, :], None if b is None else b[c])
            dw_xp[:, c] = d_xp.flatten(0, 1).T @ F.silu(a_c).flatten(0, 1)
            g_u = du_scan[..., c] + d_xp @ w_xp[:, c]
            dx_c, dw[c, 0, :], g_b = _conv_backward(x_c, w[c, 0, :], _silu_grad(a_c, g_u), b is not None)
            dxz[..., c] += flip(dx_c)
            if db is not None:
                db[c] = g_b

    _map_chunks(walk2, chunks, threads)
    return [dw, db, dw_xp, dw_dt, d_bias, dA_log, dD]


class LeanMixerCore(torch.autograd.Function):
    """``xz`` ``(B, L, 2E)`` → ``out_proj``'s input ``(B, L, E)``, saving only ``xz`` and ``xp``.

    ``apply(lengths, dt_rank, divide_out, xz, *params)`` with ``params`` one
    :data:`DirectionParams` per direction (forward, then the time-reversed one), flattened.
    """

    @staticmethod
    def forward(ctx, lengths: torch.Tensor | None, dt_rank: int, divide_out: bool,  # type: ignore[override]
                xz: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        directions = _split_params(params)
        y = xz.new_zeros(xz.shape[:2] + (xz.shape[-1] // 2,))
        with _single_threaded_torch() as threads:
            saved = [_direction_forward(xz, d, dt_rank, lengths, i == 1, y, threads) for i, d in enumerate(directions)]
        if len(directions) == 2 and divide_out:
            y /= 2
        ctx.lengths, ctx.dt_rank, ctx.divide_out = lengths, dt_rank, divide_out
        ctx.save_for_backward(xz, *saved, *params)
        ctx.n_params = len(params)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy: torch.Tensor):  # type: ignore[override]
        xz, *rest = ctx.saved_tensors
        params = rest[len(rest) - ctx.n_params:]
        xps = rest[:len(rest) - ctx.n_params]
        directions = _split_params(params)
        if len(directions) == 2 and ctx.divide_out:
            gy = gy / 2
        dxz = torch.zeros_like(xz)
        grads = []
        with _single_threaded_torch() as threads:
            for i, direction in enumerate(directions):
                grads += _direction_backward(xz, xps[i], gy, direction, ctx.dt_rank, ctx.lengths, i == 1, dxz,
                                             threads)
        flat = [g for g, p in zip(grads, _flatten_with_none(directions)) if p is not None]
        return (None, None, None, dxz) + tuple(flat)


def _split_params(params: Sequence[torch.Tensor]) -> list[DirectionParams]:
    """Flat params (6 or 7 per direction: the conv bias is optional) → one tuple per direction."""
    per = 7 if len(params) in (7, 14) else 6
    groups = [tuple(params[i:i + per]) for i in range(0, len(params), per)]
    if per == 6:
        groups = [(g[0], None) + g[1:] for g in groups]
    return groups  # type: ignore[return-value]


def _flatten_with_none(directions: list[DirectionParams]) -> list[torch.Tensor | None]:
    return [t for d in directions for t in d]
