"""selective_scan: every implementation against the sequential reference, outputs and gradients."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest
import torch

from speechssl.nn.ssm import scan as scan_mod
from speechssl.nn.ssm import selective_scan

from .tolerance import KERNEL_SLACK, assert_close


@dataclass(frozen=True)
class Case:
    batch: int = 2
    dim: int = 6
    length: int = 7
    dstate: int = 3
    b_form: str = "var"    # "var" (B, N, L) | "group2" (B, 2, N, L) | "fixed" (D, N)
    c_form: str = "var"
    use_D: bool = True
    use_z: bool = True
    use_bias: bool = True
    softplus: bool = True
    chunk: int = 3

    def __str__(self) -> str:
        return (f"L{self.length}-T{self.chunk}-B{self.b_form}-C{self.c_form}"
                f"{'-D' if self.use_D else ''}{'-z' if self.use_z else ''}"
                f"{'-bias' if self.use_bias else ''}{'-sp' if self.softplus else ''}")


CASES = [
    Case(),
    Case(length=1, chunk=4),
    Case(length=16, chunk=16),
    Case(length=17, chunk=16),
    Case(length=10, chunk=1),
    Case(use_D=False, use_z=False, use_bias=False, softplus=False),
    Case(use_z=False, softplus=False),
    Case(b_form="group2", c_form="group2"),
    Case(b_form="group2", c_form="var", dim=4),
    Case(b_form="fixed", c_form="var"),
    Case(b_form="var", c_form="fixed"),
    Case(b_form="fixed", c_form="fixed", length=5),
    Case(batch=1, dim=1, dstate=1, length=9, chunk=4),
]


def _bc(form: str, case: Case, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    if form == "fixed":
        shape = (case.dim, case.dstate)
    elif form == "group2":
        shape = (case.batch, 2, case.dstate, case.length)
    else:
        shape = (case.batch, case.dstate, case.length)
    return torch.randn(*shape, generator=gen, dtype=dtype)


def make_inputs(case: Case, dtype: torch.dtype = torch.float64, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    b, d, n, l = case.batch, case.dim, case.dstate, case.length
    inputs = {
        "u": torch.randn(b, d, l, generator=gen, dtype=dtype),
        # small positive steps without softplus; softplus inputs around softplus^-1(0.05)
        "delta": (torch.rand(b, d, l, generator=gen, dtype=dtype) * 0.5 if not case.softplus
                  else torch.randn(b, d, l, generator=gen, dtype=dtype) - 2.0),
        "A": -torch.rand(d, n, generator=gen, dtype=dtype) * 3 - 0.1,
        "B": _bc(case.b_form, case, gen, dtype),
        "C": _bc(case.c_form, case, gen, dtype),
    }
    if case.use_D:
        inputs["D"] = torch.randn(d, generator=gen, dtype=dtype)
    if case.use_z:
        inputs["z"] = torch.randn(b, d, l, generator=gen, dtype=dtype)
    if case.use_bias:
        inputs["delta_bias"] = torch.randn(d, generator=gen, dtype=dtype) * 0.3
    return inputs


def run(impl: str, inputs: dict[str, torch.Tensor], case: Case, last: bool = False):
    return selective_scan(**inputs, delta_softplus=case.softplus, return_last_state=last, impl=impl,
                          chunk_size=case.chunk)


def outputs_and_grads(impl: str, inputs: dict[str, torch.Tensor], case: Case):
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    out, last = run(impl, leaves, case, last=True)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype).to(out.device)
    (out * weights).sum().backward()
    return out, last, {k: v.grad for k, v in leaves.items()}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_chunked_matches_reference_float32(case: Case) -> None:
    inputs = make_inputs(case, torch.float32)
    out_r, last_r, grads_r = outputs_and_grads("ref", inputs, case)
    out_c, last_c, grads_c = outputs_and_grads("chunked", inputs, case)
    assert out_c.dtype == torch.float32 and out_c.shape == (case.batch, case.dim, case.length)
    assert last_c.shape == (case.batch, case.dim, case.dstate)
    assert_close(out_c, out_r, torch.float32, "out")
    assert_close(last_c, last_r, torch.float32, "last_state")
    assert grads_c.keys() == grads_r.keys()
    for name in grads_r:
        assert grads_c[name].shape == inputs[name].shape, name
        assert_close(grads_c[name], grads_r[name], torch.float32, f"d{name}")


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[3], CASES[7], CASES[8], CASES[9], CASES[10]], ids=str)
def test_chunked_gradcheck_float64(case: Case) -> None:
    case = Case(**{**case.__dict__, "length": min(case.length, 9), "chunk": min(case.chunk, 4)})
    inputs = make_inputs(case, torch.float64)
    names = list(inputs)

    def fn(*tensors):
        return run("chunked", dict(zip(names, tensors)), case)

    leaves = tuple(inputs[k].clone().requires_grad_() for k in names)
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_reference_gradcheck_float64() -> None:
    case = Case(length=5, b_form="group2")
    inputs = make_inputs(case)
    names = list(inputs)
    leaves = tuple(inputs[k].clone().requires_grad_() for k in names)
    assert torch.autograd.gradcheck(lambda *t: run("ref", dict(zip(names, t)), case), leaves)


def test_float64_parity_is_tight() -> None:
    case = Case(length=40, chunk=16, dim=8, dstate=4)
    inputs = make_inputs(case)
    out_r, last_r, grads_r = outputs_and_grads("ref", inputs, case)
    out_c, last_c, grads_c = outputs_and_grads("chunked", inputs, case)
    assert_close(out_c, out_r, torch.float64, "out")
    assert_close(last_c, last_r, torch.float64, "last")
    for name in grads_r:
        assert_close(grads_c[name], grads_r[name], torch.float64, f"d{name}")


@pytest.mark.parametrize("chunk", [1, 5, 8, 64])
def test_chunk_size_does_not_change_the_result(chunk: int) -> None:
    case = Case(length=23, chunk=chunk)
    inputs = make_inputs(case)
    expected = run("chunked", inputs, Case(length=23, chunk=23))
    assert_close(run("chunked", inputs, case), expected, torch.float64)


def test_long_sequence_large_steps_float32() -> None:
    """Large dt * |A| (strong decay) over many steps: no overflow/underflow, still matches."""
    case = Case(length=300, chunk=16, dim=4, dstate=4)
    inputs = make_inputs(case, torch.float32)
    inputs["delta"] = inputs["delta"] + 4.0       # softplus(~2) ~ 2 per step, times |A| up to 3
    assert_close(run("chunked", inputs, case), run("ref", inputs, case), torch.float32)


def test_bfloat16_inputs_keep_their_dtype() -> None:
    case = Case(length=12)
    inputs = make_inputs(case, torch.float32)
    bf = {k: v.to(torch.bfloat16) for k, v in inputs.items()}
    out = run("chunked", bf, case)
    assert out.dtype == torch.bfloat16
    assert_close(out, run("ref", bf, case), torch.bfloat16)


def test_time_major_views_give_the_same_result() -> None:
    """(B, D, L) inputs that are views of (B, L, D) memory (what a Mamba block passes)."""
    case = Case(length=11)
    inputs = make_inputs(case)
    views = dict(inputs)
    for k in ("u", "delta", "z"):
        views[k] = inputs[k].transpose(1, 2).contiguous().transpose(1, 2)
    assert not views["u"].is_contiguous()
    assert_close(run("chunked", views, case), run("ref", inputs, case), torch.float64)


def _saved_numel(impl: str, case: Case) -> int:
    inputs = make_inputs(case, torch.float32)
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run(impl, leaves, case)
    return sum(saved)


def test_backward_memory_is_linear_in_length() -> None:
    """Autograd keeps O(B·D·L) numbers, never the B·D·L·N states (the reference keeps several)."""
    case = Case(batch=2, dim=32, dstate=32, length=256, chunk=16)
    sizes = [_saved_numel("chunked", Case(**{**case.__dict__, "length": n})) for n in (64, 128, 256)]
    assert sizes[2] - sizes[1] == 2 * (sizes[1] - sizes[0])   # affine in L (parameters are the constant)
    bdln = case.batch * case.dim * case.length * case.dstate
    assert sizes[2] < bdln / 2   # inputs, B, C, gate and chunk-start states: ~11 B·D·L here
    assert _saved_numel("ref", case) >= 2 * bdln


def test_no_grad_needed_keeps_no_states() -> None:
    case = Case(length=20)
    inputs = make_inputs(case)
    out = run("chunked", inputs, case)
    assert out.grad_fn is None


@pytest.mark.parametrize("bad, message", [
    ({"u": torch.zeros(2, 6)}, "u: expected"),
    ({"delta": torch.zeros(2, 6, 8)}, "delta"),
    ({"A": torch.zeros(5, 3)}, "A: expected"),
    ({"B": torch.zeros(2, 4, 7)}, "B: expected"),
    ({"C": torch.zeros(2, 4, 3, 7)}, "groups do not divide"),
    ({"D": torch.zeros(5)}, "D: expected"),
    ({"z": torch.zeros(2, 6, 6)}, "z: expected"),
    ({"delta_bias": torch.zeros(6, 1)}, "delta_bias"),
    ({"u": torch.zeros(2, 6, 0), "delta": torch.zeros(2, 6, 0)}, "length L is 0"),
])
def test_bad_shapes_raise_clear_errors(bad: dict, message: str) -> None:
    inputs = {**make_inputs(Case()), **bad}
    with pytest.raises(ValueError, match=message):
        selective_scan(**inputs)


def test_unknown_impl_and_chunk_size_raise() -> None:
    inputs = make_inputs(Case())
    with pytest.raises(ValueError, match="impl"):
        selective_scan(**inputs, impl="triton")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_size"):
        selective_scan(**inputs, chunk_size=0)


def test_fused_without_cuda_raises_with_install_hint() -> None:
    inputs = make_inputs(Case(), torch.float32)
    with pytest.raises(RuntimeError, match="mamba-ssm|CUDA"):
        selective_scan(**inputs, impl="fused")


def test_auto_logs_its_choice_once(caplog: pytest.LogCaptureFixture) -> None:
    scan_mod._log_choice.cache_clear()
    inputs = make_inputs(Case(), torch.float32)
    with caplog.at_level(logging.INFO, logger="speechssl.nn.ssm.scan"):
        a = selective_scan(**inputs, delta_softplus=True)
        selective_scan(**inputs, delta_softplus=True)
    records = [r for r in caplog.records if "impl='auto'" in r.getMessage()]
    expected = "native" if scan_mod.native_unavailable_reason() is None else "chunked"
    assert len(records) == 1 and f"'{expected}'" in records[0].getMessage()
    torch.testing.assert_close(a, selective_scan(**inputs, delta_softplus=True, impl=expected))


# ---------------------------------------------------------------------------- GPU (skipped without CUDA)

@pytest.mark.gpu
@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[7], CASES[9]], ids=str)
def test_chunked_on_cuda_matches_cpu_reference(case: Case) -> None:
    inputs = make_inputs(case, torch.float32)
    out_r, last_r, grads_r = outputs_and_grads("ref", inputs, case)
    cuda = {k: v.cuda() for k, v in inputs.items()}
    out_c, last_c, grads_c = outputs_and_grads("chunked", cuda, case)
    assert out_c.device.type == "cuda"
    assert_close(out_c, out_r, torch.float32, "out")
    assert_close(last_c, last_r, torch.float32, "last")
    for name in grads_r:
        assert_close(grads_c[name], grads_r[name], torch.float32, f"d{name}")


@pytest.mark.gpu
@pytest.mark.parametrize("case", [Case(length=64, chunk=16, dim=8, dstate=16), Case(b_form="group2", c_form="group2")],
                         ids=str)
def test_fused_matches_reference(case: Case) -> None:
    pytest.importorskip("mamba_ssm")
    inputs = make_inputs(case, torch.float32)
    out_r, last_r, grads_r = outputs_and_grads("ref", inputs, case)
    cuda = {k: v.cuda() for k, v in inputs.items()}
    out_f, last_f, grads_f = outputs_and_grads("fused", cuda, case)
    assert_close(out_f, out_r, torch.float32, "out", slack=KERNEL_SLACK)
    assert_close(last_f, last_r, torch.float32, "last", slack=KERNEL_SLACK)
    for name in grads_r:
        assert_close(grads_f[name], grads_r[name], torch.float32, f"d{name}", slack=KERNEL_SLACK)


def test_auto_chunk_size_targets_a_cache_sized_buffer() -> None:
    from speechssl.nn.ssm import auto_chunk_size

    assert auto_chunk_size(8, 384, 16) == 16          # the benchmark shape: 16 steps x 3 MiB
    assert auto_chunk_size(1, 768, 16) == 64
    assert auto_chunk_size(64, 4096, 16) == 16         # never below 16 steps
    assert auto_chunk_size(1, 4, 2) == 256             # never above 256 steps


@pytest.mark.parametrize("layout", ["contiguous", "time_major"])
def test_inputs_are_never_modified(layout: str) -> None:
    """Chunk slices of (B, D, L) inputs can be views (B=1, or L=1); in-place work must not reach them."""
    case = Case(batch=1, length=9, chunk=4)
    inputs = make_inputs(case)
    if layout == "time_major":
        for k in ("u", "delta", "z"):
            inputs[k] = inputs[k].transpose(1, 2).contiguous().transpose(1, 2)
    before = {k: v.clone() for k, v in inputs.items()}
    outputs_and_grads("chunked", inputs, case)
    leaves = {k: v.requires_grad_() for k, v in inputs.items()}
    run("chunked", leaves, case).sum().backward()
    for k, v in inputs.items():
        assert torch.equal(v.detach(), before[k]), k


@pytest.mark.parametrize("case", [Case(length=23, chunk=3), Case(length=23, chunk=3, b_form="group2", c_form="fixed"),
                                  Case(length=20, chunk=4, use_z=False, use_bias=False)], ids=str)
def test_several_blocks_match_the_reference(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inputs are made time-major in blocks of chunks; force blocks of 2 chunks (and a remainder)."""
    from speechssl.nn.ssm import scan_chunked

    monkeypatch.setattr(scan_chunked, "_BLOCK_NUMEL", 2 * case.batch * case.dim * case.chunk)
    assert scan_chunked._block_steps(case.batch, case.dim, case.chunk) == 2 * case.chunk
    inputs = make_inputs(case)
    out_r, last_r, grads_r = outputs_and_grads("ref", inputs, case)
    out_c, last_c, grads_c = outputs_and_grads("chunked", inputs, case)
    assert_close(out_c, out_r, torch.float64, "out")
    assert_close(last_c, last_r, torch.float64, "last")
    for name in grads_r:
        assert_close(grads_c[name], grads_r[name], torch.float64, f"d{name}")
