"""The native CPU kernel (``impl="native"``) against the sequential reference: outputs and gradients."""
from __future__ import annotations

import logging

import pytest
import torch

from speechssl.nn.ssm import scan as scan_mod
from speechssl.nn.ssm import scan_native, selective_scan

from .test_scan import CASES, Case, make_inputs, outputs_and_grads, run
from .tolerance import assert_close

pytestmark = pytest.mark.skipif(not scan_native.native_available(),
                                reason=f"native kernel unavailable: {scan_native.native_unavailable_reason()}")

VARIABLE = [c for c in CASES if "fixed" not in (c.b_form, c.c_form)]
# Blocks of 8 channels: D not a multiple of 8 (padding lanes), several blocks per group and per
# unit, and lengths that exercise full tiles (64 steps), 8-step transposes and their remainders.
WIDE = [
    Case(dim=21, length=33, dstate=5),
    Case(dim=24, length=40, b_form="group2", c_form="var"),
    Case(dim=48, length=130, dstate=4, b_form="group2", c_form="group2"),
    Case(batch=3, dim=16, length=70, use_z=False, softplus=False),
]


def _compare(case: Case, inputs: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
    out_r, last_r, grads_r = outputs_and_grads("ref", inputs, case)
    out_n, last_n, grads_n = outputs_and_grads("native", inputs, case)
    assert out_n.dtype == inputs["u"].dtype and out_n.shape == out_r.shape
    assert_close(out_n, out_r, dtype, "out")
    assert_close(last_n, last_r, dtype, "last_state")
    assert grads_n.keys() == grads_r.keys()
    for name in grads_r:
        assert grads_n[name].shape == inputs[name].shape, name
        assert_close(grads_n[name], grads_r[name], dtype, f"d{name}")


@pytest.mark.parametrize("case", VARIABLE + WIDE, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_native_matches_reference(case: Case, dtype: torch.dtype) -> None:
    _compare(case, make_inputs(case, dtype), dtype)


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[7], CASES[8], WIDE[0]], ids=str)
def test_native_gradcheck_float64(case: Case) -> None:
    case = Case(**{**case.__dict__, "length": min(case.length, 9)})
    inputs = make_inputs(case, torch.float64)
    names = list(inputs)
    leaves = tuple(inputs[k].clone().requires_grad_() for k in names)
    assert torch.autograd.gradcheck(lambda *t: run("native", dict(zip(names, t)), case), leaves,
                                    eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("layout", ["time_major", "strided"])
def test_native_reads_any_memory_layout(layout: str) -> None:
    """Time-major views (a Mamba block's layout) and non-unit-stride inputs give the same result."""
    case = Case(dim=16, length=45)
    inputs = make_inputs(case, torch.float32)
    views = dict(inputs)
    for k in ("u", "delta", "z"):
        if layout == "time_major":
            views[k] = inputs[k].transpose(1, 2).contiguous().transpose(1, 2)
        else:
            views[k] = torch.repeat_interleave(inputs[k], 2, dim=2)[:, :, ::2]
    for k in ("B", "C"):
        views[k] = inputs[k].transpose(1, 2).contiguous().transpose(1, 2)
    assert not views["u"].is_contiguous()
    _compare(case, views, torch.float32)


def test_native_strong_decay_and_long_sequence_float32() -> None:
    """Large dt * |A| (decays underflow towards the exp clamp) over many steps still matches."""
    case = Case(length=300, dim=12, dstate=4)
    inputs = make_inputs(case, torch.float32)
    inputs["delta"] = inputs["delta"] + 4.0
    inputs["A"] = inputs["A"] * 20.0            # dt * A down to ~ -400: exp underflows to ~0
    _compare(case, inputs, torch.float32)


def test_native_propagates_nan() -> None:
    case = Case(dim=9, length=20)
    inputs = make_inputs(case, torch.float32)
    inputs["delta"][1, 3, 7] = float("nan")
    out_r = run("ref", inputs, case)
    out_n = run("native", inputs, case)
    assert torch.equal(out_r.isnan(), out_n.isnan()) and out_n.isnan().any()
    keep = ~out_r.isnan()
    assert_close(out_n[keep], out_r[keep], torch.float32)


def test_native_thread_count_does_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks are split across threads and per-thread gradients summed: same numbers for 1 or 3 threads."""
    case = Case(batch=4, dim=32, length=300, dstate=16)
    inputs = make_inputs(case, torch.float64)
    monkeypatch.setattr(scan_native, "_PARALLEL_MIN_WORK", 1)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = outputs_and_grads("native", inputs, case)
        torch.set_num_threads(3)
        three = outputs_and_grads("native", inputs, case)
    finally:
        torch.set_num_threads(old)
    assert_close(three[0], one[0], torch.float64, "out")
    for name in one[2]:
        assert_close(three[2][name], one[2][name], torch.float64, f"d{name}")


def test_native_bfloat16_keeps_dtype() -> None:
    case = Case(length=12)
    bf = {k: v.to(torch.bfloat16) for k, v in make_inputs(case, torch.float32).items()}
    out = run("native", bf, case)
    assert out.dtype == torch.bfloat16
    assert_close(out, run("ref", bf, case), torch.bfloat16)


def test_native_saves_no_states_for_backward() -> None:
    """Autograd keeps the inputs only: O(B·D·L), never the B·D·L·N states."""
    from .test_scan import _saved_numel

    case = Case(batch=2, dim=32, dstate=32, length=256)
    sizes = [_saved_numel("native", Case(**{**case.__dict__, "length": n})) for n in (64, 128, 256)]
    assert sizes[2] - sizes[1] == 2 * (sizes[1] - sizes[0])
    assert sizes[2] < case.batch * case.dim * case.length * case.dstate / 4


def test_native_rejects_what_it_cannot_run() -> None:
    inputs = make_inputs(Case(b_form="fixed"), torch.float32)
    with pytest.raises(RuntimeError, match="time-invariant"):
        selective_scan(**inputs, impl="native")


def test_auto_uses_native_on_cpu_and_chunked_for_time_invariant_b(caplog: pytest.LogCaptureFixture) -> None:
    scan_mod._log_choice.cache_clear()
    with caplog.at_level(logging.INFO, logger="speechssl.nn.ssm.scan"):
        selective_scan(**make_inputs(Case(), torch.float32))
        selective_scan(**make_inputs(Case(b_form="fixed"), torch.float32))
    messages = [r.getMessage() for r in caplog.records if "impl='auto'" in r.getMessage()]
    assert any("'native'" in m for m in messages)
    assert any("'chunked'" in m and "time-invariant" in m for m in messages)


def test_build_failure_falls_back_to_chunked(monkeypatch: pytest.MonkeyPatch, tmp_path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """A compiler that fails: native_available is False with the compiler's reason, auto still works."""
    fake = tmp_path / "broken-cxx"
    fake.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then echo broken 1.0; exit 0; fi\n"
                    "echo 'error: this compiler is broken' >&2; exit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CXX", str(fake))
    monkeypatch.setenv("SPEECHSSL_HOME", str(tmp_path / "home"))
    scan_native._library.cache_clear()
    scan_mod._log_choice.cache_clear()
    try:
        with caplog.at_level(logging.INFO):
            assert not scan_native.native_available()
            reason = scan_native.native_unavailable_reason()
            inputs = make_inputs(Case(), torch.float32)
            out = run("auto", inputs, Case())
        assert "this compiler is broken" in reason
        assert any("unavailable" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
        assert_close(out, run("ref", inputs, Case()), torch.float32)
        with pytest.raises(RuntimeError, match="this compiler is broken"):
            selective_scan(**inputs, impl="native")
        assert not list((tmp_path / "home" / "kernels").glob("*.so"))   # nothing half-written left behind
        assert not list((tmp_path / "home" / "kernels").glob("*.tmp"))
    finally:
        scan_native._library.cache_clear()
        scan_mod._log_choice.cache_clear()


def test_build_is_cached_and_keyed(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A fresh cache directory gets one library; a second build reuses it without compiling."""
    monkeypatch.setenv("SPEECHSSL_HOME", str(tmp_path))
    scan_native._library.cache_clear()
    try:
        assert scan_native.native_available()
        built = list((tmp_path / "kernels").glob("selective_scan_cpu-*.so"))
        assert len(built) == 1
        stamp = built[0].stat().st_mtime_ns
        scan_native._library.cache_clear()
        assert scan_native.native_available()
        assert built[0].stat().st_mtime_ns == stamp
    finally:
        scan_native._library.cache_clear()
