"""LeanMixerCore: the same forward and gradients as autograd through the plain mixer, far less kept."""
from __future__ import annotations

import pytest
import torch

from speechssl.nn.ssm.mamba import MambaBlock, MambaMixer
from speechssl.nn.ssm.scan_native import native_available

pytestmark = pytest.mark.skipif(not native_available(), reason="the native scan kernel does not build here")


def _run(m: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor | None, lean: bool):
    for mod in m.modules():
        if isinstance(mod, MambaMixer):
            mod.recompute = lean
    m.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(True)
    y = m(x, lengths)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
    (y * g).sum().backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    return y.detach(), x.grad.clone(), grads


@pytest.fixture
def one_torch_thread():
    """MKL adapts how many threads a GEMM uses to the machine's load, and a product split over
    other threads rounds differently; one thread makes "the same operations" bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


@pytest.mark.parametrize("bidirectional,width,conv_bias,lengths", [
    (True, 96, True, [150, 97, 12]),     # padded rows, 3 channel chunks of the 192-wide inner dim
    (True, 40, False, None),             # no conv bias, one partial chunk
    (False, 40, True, None),             # Mamba (one direction)
])
def test_lean_core_matches_autograd(bidirectional, width, conv_bias, lengths, one_torch_thread):
    torch.manual_seed(0)
    m = MambaMixer(width, d_state=8, bidirectional=bidirectional, conv_bias=conv_bias)
    x = torch.randn(3, 150, width)
    L = None if lengths is None else torch.tensor(lengths)
    y0, dx0, g0 = _run(m, x, L, lean=False)
    y1, dx1, g1 = _run(m, x, L, lean=True)
    assert torch.equal(y0, y1)                              # forward: the same operations
    assert _rel(dx1, dx0) < 1e-5
    assert g0.keys() == g1.keys()
    for name in g0:
        assert _rel(g1[name], g0[name]) < 1e-5, name


def test_lean_core_float64_tight():
    torch.manual_seed(0)
    m = MambaMixer(24, d_state=4, bidirectional=True).double()
    x = torch.randn(2, 40, 24, dtype=torch.float64)
    L = torch.tensor([40, 23])
    y0, dx0, g0 = _run(m, x, L, lean=False)
    y1, dx1, g1 = _run(m, x, L, lean=True)
    # float64 GEMMs on a slice of dt_proj's rows round differently from the full product
    # (float32 ones agree bit for bit: the first test), so the forward agrees to rounding here
    assert _rel(y1, y0) < 1e-14
    assert _rel(dx1, dx0) < 1e-12
    for name in g0:
        # the mixer casts A_log, D and the dt bias with .float(): autograd differentiates
        # those casts in float32, the lean core keeps float64
        tol = 1e-6 if name.split(".")[0] in ("A_log", "A_b_log", "D", "D_b", "dt_proj", "dt_proj_b") else 1e-12
        assert _rel(g1[name], g0[name]) < tol, name


def test_lean_core_frozen_parameters_get_no_gradient():
    torch.manual_seed(0)
    m = MambaMixer(32, d_state=8, bidirectional=True)
    m.x_proj_b.weight.requires_grad_(False)
    m.A_log.requires_grad_(False)
    _, dx, grads = _run(m, torch.randn(2, 30, 32), None, lean=True)
    assert "x_proj_b.weight" not in grads and "A_log" not in grads
    _, dx0, grads0 = _run(m, torch.randn(2, 30, 32), None, lean=False)
    assert grads.keys() == grads0.keys()


def _saved_bytes(block: MambaBlock, x: torch.Tensor) -> int:
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        block(x).sum().backward()
    return sum(storages.values())


def test_lean_core_keeps_a_fraction_of_the_activations():
    torch.manual_seed(0)
    block = MambaBlock(64, d_state=16, bidirectional=True)
    x = torch.randn(1, 2048, 64, requires_grad=True)
    block.mixer.recompute = False
    plain = _saved_bytes(block, x)
    block.mixer.recompute = True
    lean = _saved_bytes(block, x)
    per_token_width = lean / (4 * 2048 * 64)          # float32 numbers kept per token, in units of D
    # the lean core keeps xz (4D), the norm's input and output (2D), out_proj's input (2D),
    # both directions' xp (72 numbers: 1.1D) and the weights: about 10.5 D-wide numbers per
    # token, against about 30 through autograd.
    assert lean < plain / 2.5
    assert per_token_width < 11


def test_lean_core_threads_split_chunks_reproducibly():
    """Two workers over the channel chunks: the same forward, gradients equal to rounding and
    identical from run to run."""
    torch.manual_seed(0)
    m = MambaMixer(96, d_state=8, bidirectional=True)
    x = torch.randn(2, 120, 96)
    L = torch.tensor([120, 77])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        y1, dx1, g1 = _run(m, x, L, lean=True)
        torch.set_num_threads(2)
        y2, dx2, g2 = _run(m, x, L, lean=True)
        y3, dx3, g3 = _run(m, x, L, lean=True)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(y1, y2)
    assert _rel(dx2, dx1) < 1e-5
    for name in g1:
        assert _rel(g2[name], g1[name]) < 1e-5, name
        assert torch.equal(g2[name], g3[name]), name
    assert torch.equal(dx2, dx3)
    y0, dx0, g0 = _run(m, x, L, lean=False)                 # and both agree with autograd
    assert _rel(dx2, dx0) < 1e-5
