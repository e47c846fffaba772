"""Native CPU selective scan: a small C++ kernel, compiled on first use, called through ctypes.

Why a kernel: the chunked torch path touches each of the ``B·D·L·N`` state elements in several
separate vectorised operations (exp, recurrence, contraction), each a trip through memory, plus
Python overhead per step; a loop that keeps a block of 8 channels' states in registers does one
pass, with a vectorisable polynomial ``exp``. The kernel (``csrc/selective_scan_cpu.cpp``) is
plain C++17 with no torch or Python headers, so it builds in a few seconds with the system
compiler (``$CXX``, else ``c++``/``g++``/``clang++``) and needs nothing installed.

Build cache: ``<SPEECHSSL_HOME>/kernels/selective_scan_cpu-<key>.so`` (see
:func:`speechssl.cache_dir.speechssl_home`), where the key hashes the source, the compiler and its
version, the flags and the CPU's feature flags (the build uses ``-march=native``). Builds are
written to a temporary file and renamed, so concurrent processes never load a half-written
library. When no compiler works, :func:`native_available` is False, the reason is logged once,
and ``selective_scan(impl="auto")`` uses the chunked torch path.

Parallelism: the ``B·D`` channels are cut into blocks of 8 (never straddling a group of ``B``/``C``),
grouped into work units of up to 8 neighbouring blocks (scanned together, tile by tile, so that
time-major inputs are read a cache line at a time), and ``torch.get_num_threads()`` Python
threads each run a contiguous range of units (ctypes releases the GIL during the call). Memory:
the forward pass allocates only its output; the backward pass recomputes one unit's states at a
time into a per-thread buffer of ``64·L·N`` numbers plus per-thread ``dB``/``dC`` accumulators,
so its extra memory is linear in ``L`` and independent of ``D``. Results do not depend on the
thread count beyond the order of the final per-thread sums.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import math
import os
import platform
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

__all__ = ["selective_scan_native", "native_available", "native_unavailable_reason", "native_operands",
           "native_scan_forward", "native_scan_backward"]

logger = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_name("csrc") / "selective_scan_cpu.cpp"
_FLAGS = ["-O3", "-std=c++17", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared", "-Wno-psabi"]
# Tried in order: the best code for this CPU, then portable code (compilers without -march=native).
_ARCH_FLAGS = (["-march=native"], [])
# Below this many state updates (B·D·L·N) one thread runs the whole scan: starting threads costs
# more than it saves.
_PARALLEL_MIN_WORK = 1 << 18


class _Args(ctypes.Structure):
    _fields_ = ([(name, ctypes.c_int64) for name in (
        "batch", "dim", "length", "dstate", "groups_b", "groups_c", "groups",
        "softplus", "has_z", "has_D", "has_bias", "span")]
        + [(name, ctypes.c_void_p) for name in (
            "u", "delta", "z", "A", "Bm", "Cm", "Dv", "bias", "out", "last", "dout", "du", "ddelta", "dz")]
        + [(name, ctypes.c_int64 * 3) for name in (
            "s_u", "s_delta", "s_z", "s_out", "s_dout", "s_du", "s_ddelta", "s_dz")]
        + [(name, ctypes.c_int64 * 4) for name in ("s_B", "s_C")])


class _Work(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in ("dA", "dD", "dbias", "dB", "dC", "hist", "dth", "xh")]


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_features() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build(cxx: str, out_dir: Path) -> tuple[ctypes.CDLL | None, str]:
    """Compile (or reuse) the kernel; returns the library or None and why."""
    source = _SOURCE.read_bytes()
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as err:
        return None, f"{cxx} --version failed: {err}"
    errors = []
    for arch in _ARCH_FLAGS:
        flags = _FLAGS + arch
        key = hashlib.sha256(b"\0".join([source, cxx.encode(), version.encode(), " ".join(flags).encode(),
                                         _cpu_features().encode()])).hexdigest()[:16]
        target = out_dir / f"selective_scan_cpu-{key}.so"
        if not target.exists():
            try:
                out_dir.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=out_dir)
                os.close(fd)
            except OSError as err:
                return None, f"cannot write the kernel cache {out_dir}: {err}"
            start = time.perf_counter()
            try:
                proc = subprocess.run([cxx, *flags, "-o", tmp, str(_SOURCE)], capture_output=True, text=True,
                                      timeout=300)
                if proc.returncode != 0:
                    errors.append(f"{' '.join(arch) or 'portable'}: {proc.stderr.strip()[-500:]}")
                    continue
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            logger.info("selective_scan: compiled the CPU kernel in %.1f s -> %s", time.perf_counter() - start, target)
        try:
            lib = ctypes.CDLL(str(target))
        except OSError as err:
            errors.append(f"loading {target}: {err}")
            continue
        for name in ("ssc_forward_f32", "ssc_forward_f64"):
            getattr(lib, name).argtypes = [ctypes.POINTER(_Args), ctypes.c_int64, ctypes.c_int64]
        for name in ("ssc_backward_f32", "ssc_backward_f64"):
            getattr(lib, name).argtypes = [ctypes.POINTER(_Args), ctypes.c_int64, ctypes.c_int64,
                                           ctypes.POINTER(_Work)]
        lib.ssc_units.argtypes = [ctypes.POINTER(_Args)]
        lib.ssc_units.restype = ctypes.c_int64
        lib.ssc_lanes.restype = ctypes.c_int64
        return lib, "ok"
    return None, "compiling csrc/selective_scan_cpu.cpp failed: " + " | ".join(errors)


@functools.lru_cache(maxsize=None)
def _library() -> tuple[ctypes.CDLL | None, str]:
    from speechssl.cache_dir import cache_subdir

    cxx = _compiler()
    if cxx is None:
        lib, why = None, "no C++ compiler found (set $CXX or install g++/clang++)"
    else:
        lib, why = _build(cxx, cache_subdir("kernels"))
    if lib is None:
        logger.warning("selective_scan: the native CPU kernel is unavailable (%s); using the chunked torch path", why)
    return lib, why


def native_available() -> bool:
    """True when the CPU kernel is built (compiling it on the first call, a few seconds)."""
    return _library()[0] is not None


def native_unavailable_reason() -> str | None:
    """Why :func:`native_available` is False (None when it is True)."""
    lib, why = _library()
    return None if lib is not None else why


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _strides(t: torch.Tensor | None, n: int = 3) -> ctypes.Array:
    return (ctypes.c_int64 * n)(*(t.stride() if t is not None else (0,) * n))


def _threads(work: int, threads: int | None = None) -> int:
    return max(1, min(threads or torch.get_num_threads(), work // _PARALLEL_MIN_WORK))


def _span(batch: int, groups: int, dim: int, lanes: int, threads: int) -> int:
    """Blocks per work unit: as many as possible (up to 8) while leaving >= 2 units per thread."""
    blocks = -(-(dim // groups) // lanes)
    for span in (8, 4, 2):
        if batch * groups * -(-blocks // span) >= 2 * threads:
            return span
    return 1


def _split(n_units: int, threads: int) -> list[tuple[int, int]]:
    threads = max(1, min(threads, n_units))
    edges = [round(i * n_units / threads) for i in range(threads + 1)]
    return [(edges[i], edges[i + 1]) for i in range(threads)]


def _run(calls: list) -> None:
    """Run the zero-argument ``calls`` (one per block range), each on its own thread when several."""
    if len(calls) == 1:
        calls[0]()
        return
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        for f in [pool.submit(call) for call in calls]:
            f.result()


def _launch(u, delta, z, A, Bt, Ct, D, delta_bias, softplus: bool, lanes: int, threads: int | None = None,
            **tensors: torch.Tensor | None) -> tuple[_Args, list[tuple[int, int]], int]:
    """Kernel arguments for the inputs plus ``tensors`` (outputs, gradients), and the work split.

    Returns the arguments, one range of work units per thread, and the blocks per unit (span).
    """
    bsz, dim, length = u.shape
    N = A.shape[1]
    gb, gc = Bt.shape[1], Ct.shape[1]
    groups = math.lcm(gb, gc)
    threads = _threads(bsz * dim * length * N, threads)
    span = _span(bsz, groups, dim, lanes, threads)
    args = _Args(batch=bsz, dim=dim, length=length, dstate=N, groups_b=gb, groups_c=gc, groups=groups, span=span,
                 softplus=int(softplus), has_z=int(z is not None), has_D=int(D is not None),
                 has_bias=int(delta_bias is not None),
                 u=_ptr(u), delta=_ptr(delta), z=_ptr(z), A=_ptr(A), Bm=_ptr(Bt), Cm=_ptr(Ct), Dv=_ptr(D),
                 bias=_ptr(delta_bias), s_u=_strides(u), s_delta=_strides(delta), s_z=_strides(z),
                 s_B=_strides(Bt, 4), s_C=_strides(Ct, 4))
    for name, t in tensors.items():
        setattr(args, name, _ptr(t))
        if hasattr(_Args, f"s_{name}"):        # strided (batch, dim, length) tensors; `last` is contiguous
            setattr(args, f"s_{name}", _strides(t))
    lib = _library()[0]
    return args, _split(lib.ssc_units(ctypes.byref(args)), threads), span


def native_scan_forward(u: torch.Tensor, delta: torch.Tensor, z: torch.Tensor | None, A: torch.Tensor,
                        Bt: torch.Tensor, Ct: torch.Tensor, D: torch.Tensor | None, delta_bias: torch.Tensor | None,
                        softplus: bool, threads: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel's forward pass on operands from :func:`native_operands` (no autograd).

    ``threads``: kernel threads (default ``torch.get_num_threads()``).

    Returns ``out`` ``(B, D, L)`` (a view of time-major ``(B, L, D)`` memory) and the last state
    ``(B, D, N)``.
    """
    lib = _library()[0]
    bsz, dim, length = u.shape
    # new_empty, not zeros: a parallel torch fill right before the kernel leaves torch's
    # OpenMP workers spinning on the cores the kernel's threads need.
    out = u.new_empty(bsz, length, dim).transpose(1, 2)
    last = u.new_empty(bsz, dim, A.shape[1])
    args, ranges, _ = _launch(u, delta, z, A, Bt, Ct, D, delta_bias, softplus, lib.ssc_lanes(), threads,
                              out=out, last=last)
    fn = lib.ssc_forward_f64 if u.dtype == torch.float64 else lib.ssc_forward_f32
    _run([functools.partial(fn, ctypes.byref(args), j0, j1) for j0, j1 in ranges])
    return out, last


def native_scan_backward(u: torch.Tensor, delta: torch.Tensor, z: torch.Tensor | None, A: torch.Tensor,
                         Bt: torch.Tensor, Ct: torch.Tensor, D: torch.Tensor | None,
                         delta_bias: torch.Tensor | None, softplus: bool, gout: torch.Tensor,
                         threads: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor,
                                    torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Gradients of ``sum(out * gout)`` for the operands of :func:`native_scan_forward`.

    The kernel recomputes the states from the operands, so no forward activations are needed:
    callers that can recompute the operands cheaply keep nothing of the scan between passes.

    Returns ``(du, ddelta, dz, dA, dBt, dCt, dD, dbias)`` (``None`` for absent optional operands).
    """
    lib = _library()[0]
    bsz, dim, length = u.shape
    N = A.shape[1]
    gout = gout.to(u.dtype)
    du, ddelta = torch.empty_like(u), torch.empty_like(delta)
    dz = torch.empty_like(z) if z is not None else None
    lanes = lib.ssc_lanes()
    args, ranges, span = _launch(u, delta, z, A, Bt, Ct, D, delta_bias, softplus, lanes, threads,
                                 dout=gout, du=du, ddelta=ddelta, dz=dz)
    fn = lib.ssc_backward_f64 if u.dtype == torch.float64 else lib.ssc_backward_f32
    bufs, calls = [], []
    for j0, j1 in ranges:
        # the kernel zeroes the accumulators (a torch fill here would leave OpenMP workers spinning)
        b = {"dA": u.new_empty(dim, N), "dD": u.new_empty(dim), "dbias": u.new_empty(dim),
             "dB": u.new_empty(Bt.shape[:3] + (length,)), "dC": u.new_empty(Ct.shape[:3] + (length,)),
             "hist": u.new_empty(span, length, N, lanes),
             "dth": u.new_empty(span, length, lanes), "xh": u.new_empty(span, length, lanes)}
        bufs.append(b)
        work = _Work(**{k: v.data_ptr() for k, v in b.items()})
        calls.append(functools.partial(fn, ctypes.byref(args), j0, j1, ctypes.byref(work)))
    _run(calls)
    total = {k: sum(b[k] for b in bufs) for k in ("dA", "dD", "dbias", "dB", "dC")}
    return (du, ddelta, dz, total["dA"], total["dB"], total["dC"],
            total["dD"] if D is not None else None, total["dbias"] if delta_bias is not None else None)


class _NativeScan(torch.autograd.Function):
    """Forward and backward of the whole scan in the C++ kernel (inputs already in the compute dtype)."""

    @staticmethod
    def forward(ctx, u, delta, z, A, Bt, Ct, D, delta_bias, softplus: bool):  # Bt, Ct: (B, G, N, L)  # type: ignore[override]
        out, last = native_scan_forward(u, delta, z, A, Bt, Ct, D, delta_bias, softplus)
        ctx.softplus = softplus
        ctx.save_for_backward(u, delta, z, A, Bt, Ct, D, delta_bias)
        ctx.mark_non_differentiable(last)
        return out, last

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gout, _glast):  # type: ignore[override]
        grads = native_scan_backward(*ctx.saved_tensors, ctx.softplus, gout)
        return tuple(g if need else None for g, need in zip(grads, ctx.needs_input_grad)) + (None,)


def native_operands(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                    D: torch.Tensor | None, z: torch.Tensor | None, delta_bias: torch.Tensor | None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor,
                               torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The kernel's operands ``(u, delta, z, A, Bt, Ct, D, delta_bias)`` in its compute dtype.

    float32 (float64 for float64 ``u``); ``B``/``C`` of shape ``(B, N, L)`` become ``(B, 1, N, L)``
    views. The conversions are autograd ops, so gradients reach the caller's tensors.
    """
    cdt = torch.float64 if u.dtype == torch.float64 else torch.float32
    B4 = (B.unsqueeze(1) if B.dim() == 3 else B).to(cdt)
    C4 = (C.unsqueeze(1) if C.dim() == 3 else C).to(cdt)
    return (u.to(cdt), delta.to(cdt), None if z is None else z.to(cdt), A.to(cdt).contiguous(), B4, C4,
            None if D is None else D.to(cdt).contiguous(),
            None if delta_bias is None else delta_bias.to(cdt).contiguous())


def selective_scan_native(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                          C: torch.Tensor, D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                          delta_bias: torch.Tensor | None = None, delta_softplus: bool = False,
                          return_last_state: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The CPU kernel (same arguments and results as ``selective_scan_ref``; inputs unchecked).

    ``B`` and ``C`` must be input-dependent (``(B, N, L)`` or grouped ``(B, G, N, L)``); CPU tensors.
    Computes in float32 (float64 for float64 inputs) and returns ``out`` ``(B, D, L)`` in ``u.dtype``
    as a view of time-major ``(B, L, D)`` memory. The last state carries no gradient.

    Raises:
        RuntimeError: the kernel could not be built (see :func:`native_unavailable_reason`).
    """
    reason = native_unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"selective_scan(impl='native'): {reason}")
    dtype_in = u.dtype
    # (B, N, L) enters as a (B, 1, N, L) view, an autograd op: its gradient comes back as (B, N, L).
    out, last = _NativeScan.apply(*native_operands(u, delta, A, B, C, D, z, delta_bias), bool(delta_softplus))
    out = out.to(dtype_in)
    return (out, last) if return_last_state else out
