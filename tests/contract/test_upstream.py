"""The upstream contract, for every preset of every registered method (see speechssl/registry.py).

Every preset runs every check by default, except the hub round trip of presets other than the
method's :attr:`~speechssl.registry.Method.smallest_preset`: those are marked ``slow`` (``-m
slow``, see ``conftest.py``): writing, hashing, rebuilding and reading the base/large weights
takes about a minute on two cores, and the code path is the one the smallest preset takes.

Each ``(method, preset)`` is built once (a module-scoped fixture, so pytest runs that case's
tests together and frees the model before building the next) in eval mode from seed 0, and
run once on inputs of the method's ``input_kind`` (:mod:`tests.contract.inputs`). Models
over :data:`BIG_PARAMS` parameters get fewer, shorter inputs: what is checked is the same,
only the time is not.

Checks: the preset builds into the method's model with its config; the forward returns the
contract with consistent shapes (``hidden_sizes``, one batch and frame axis, ``lengths``
equal to what each item alone gives, audio frames ≈ samples / ``downsample_rate``); each item
alone gives the batched item's valid frames (padding / batch invariance, float32, eval); and
``hub.save`` → ``hub.load`` reproduces the weights, config and outputs bit for bit.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from speechssl import hub
from speechssl.config import to_dict
from speechssl.registry import Method, get_method
from tests.contract.conftest import method_presets
from tests.contract.inputs import input_sizes, is_variable_length, make_inputs, split_items

BIG_PARAMS = 20_000_000  # above this, short inputs (the checks are the same, the forward is cheaper)
TOL = 1e-5  # float32 item alone vs in a batch, relative to the layer's largest magnitude (summation order)


@dataclass
class Case:
    name: str
    preset: str
    method: Method
    config: Any
    model: torch.nn.Module
    inputs: Any
    out: dict[str, Any]


@pytest.fixture(scope="module", params=method_presets(), ids=lambda p: f"{p[0]}-{p[1]}")
def case(request: pytest.FixtureRequest) -> Case:
    name, preset = request.param
    method = get_method(name)
    config = method.preset(preset)
    with torch.random.fork_rng():  # initialisation draws from the global RNG; keep it to ourselves
        torch.manual_seed(0)
        model = method.build(config)
    model.eval()
    big = sum(p.numel() for p in model.parameters()) > BIG_PARAMS
    inputs = make_inputs(method.input_kind, model, torch.Generator().manual_seed(0), short=big)
    with torch.no_grad():
        out = model(inputs)
    return Case(name, preset, method, config, model, inputs, out)


def test_preset_builds(case: Case) -> None:
    model, method = case.model, case.method
    assert isinstance(model, method.model_cls), f"{case.name}: build gave {type(model).__name__}"
    assert dataclasses.is_dataclass(case.config) and isinstance(case.config, method.config_cls)
    assert getattr(model, "method", None) == case.name, f"{case.name}: model.method is {getattr(model, 'method', None)!r}"
    assert to_dict(model.config) == to_dict(case.config), f"{case.name}-{case.preset}: model.config is not the preset"
    sizes = list(model.hidden_sizes)
    assert sizes and all(isinstance(d, int) and d > 0 for d in sizes), f"hidden_sizes {sizes}"
    if method.modality == "audio":
        rate = model.downsample_rate
        assert isinstance(rate, int) and rate > 0, f"{case.name}: downsample_rate {rate!r} is not a positive int"


def test_forward_returns_the_contract(case: Case) -> None:
    out, model = case.out, case.model
    assert {"hidden_states", "last_hidden_state", "lengths"} <= set(out), sorted(out)
    states, lengths = out["hidden_states"], out["lengths"]
    n = len(case.inputs)
    assert isinstance(states, (list, tuple)) and len(states) == len(model.hidden_sizes), (
        f"{len(states)} hidden states for {len(model.hidden_sizes)} hidden_sizes")
    frames = states[0].shape[1]
    for i, (h, d) in enumerate(zip(states, model.hidden_sizes)):
        assert h.dim() == 3 and tuple(h.shape) == (n, frames, d), f"hidden_states[{i}] is {tuple(h.shape)}, want ({n}, {frames}, {d})"
        assert h.dtype == torch.float32 and bool(torch.isfinite(h).all()), f"hidden_states[{i}]: {h.dtype} or non-finite"
    assert torch.equal(out["last_hidden_state"], states[-1]), "last_hidden_state is not hidden_states[-1]"
    assert lengths.dtype == torch.int64 and tuple(lengths.shape) == (n,), f"lengths {lengths.dtype} {tuple(lengths.shape)}"
    assert int(lengths.max()) == frames and int(lengths.min()) > 0, f"lengths {lengths.tolist()} for {frames} frames"
    sizes = input_sizes(case.inputs)
    if is_variable_length(case.method.input_kind):
        order = sorted(range(n), key=lambda i: sizes[i])
        assert [int(lengths[i]) for i in order] == sorted(int(lengths[i]) for i in order), (
            f"lengths {lengths.tolist()} do not grow with the input sizes {sizes}")
    if case.method.modality == "audio":
        rate = case.model.downsample_rate
        for s, t in zip(sizes, lengths.tolist()):
            assert abs(t - s / rate) < 2, f"{s} samples gave {t} frames; downsample_rate {rate} implies ~{s / rate:.1f}"


def test_each_item_alone_gives_its_batched_frames(case: Case) -> None:
    """Padding (variable-length kinds) or batching (fixed-shape kinds) never changes an item's outputs."""
    kind = "padding" if is_variable_length(case.method.input_kind) else "batch"
    for i, item in enumerate(split_items(case.inputs)):
        with torch.no_grad():
            alone = case.model(item)
        t = int(case.out["lengths"][i])
        assert alone["lengths"].tolist() == [t], f"item {i}: alone {alone['lengths'].tolist()} frames, in the batch {t}"
        for layer, (a, b) in enumerate(zip(alone["hidden_states"], case.out["hidden_states"])):
            assert a.shape[1] == t, f"item {i} alone: hidden_states[{layer}] has {a.shape[1]} frames, lengths says {t}"
            scale = max(1.0, float(b.abs().max()))
            torch.testing.assert_close(a[0], b[i, :t], atol=TOL * scale, rtol=TOL,
                                       msg=lambda m: f"{kind} changed item {i}, hidden_states[{layer}]: {m}")


def test_hub_save_load_is_bit_exact(case: Case, tmp_path: Path) -> None:
    path = hub.save(case.model, tmp_path / "model")
    loaded = hub.load(path)
    assert type(loaded) is type(case.model) and not loaded.training
    assert to_dict(loaded.config) == to_dict(case.config)
    ref, got = case.model.state_dict(), loaded.state_dict()
    assert list(got) == list(ref), f"keys differ: {sorted(set(ref) ^ set(got))}"
    for key in ref:
        assert got[key].dtype == ref[key].dtype and torch.equal(got[key], ref[key]), f"{key} changed in save/load"
    with torch.no_grad():
        out = loaded(case.inputs)
    for layer, (a, b) in enumerate(zip(out["hidden_states"], case.out["hidden_states"])):
        assert torch.equal(a, b), f"hidden_states[{layer}] of the loaded model differ (max {float((a - b).abs().max())})"
    assert torch.equal(out["lengths"], case.out["lengths"])
