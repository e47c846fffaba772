"""speechssl.fingerprint: content digests and the one resume rule (issue 23 item 1)."""
from __future__ import annotations

import logging

import torch
from torch import nn

from speechssl.downstream.upstreams import upstream_hash
from speechssl.fingerprint import changed_fields, file_sha256, json_digest, model_sha256, same_inputs


def test_model_digest_follows_the_weights_not_the_object() -> None:
    torch.manual_seed(0)
    a = nn.Linear(3, 2)
    b = nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert model_sha256(a) == model_sha256(b) == upstream_hash(a)  # one definition
    with torch.no_grad():
        b.weight[0, 0] += 1e-6
    assert model_sha256(a) != model_sha256(b)
    c = nn.Linear(3, 2).double()
    c.load_state_dict({k: v.double() for k, v in a.state_dict().items()})
    assert model_sha256(c) != model_sha256(a)  # dtype counts


def test_file_and_json_digests(tmp_path) -> None:
    p = tmp_path / "x"
    p.write_bytes(b"abc")
    assert file_sha256(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert json_digest({"a": 1, "b": [2]}) == json_digest({"b": [2], "a": 1})
    assert len(json_digest({}, 16)) == 16


def test_same_inputs_logs_what_changed(caplog) -> None:
    old = {"source": {"model_sha256": "a", "layer": 1}, "rows": [0, 3]}
    new = {"source": {"model_sha256": "b", "layer": 1}, "rows": [0, 3], "extra": 1}
    assert changed_fields(old, new) == ["extra", "source.model_sha256"]
    with caplog.at_level(logging.WARNING, logger="speechssl.fingerprint"):
        assert same_inputs(old, old, "x.npy")
        assert not caplog.text
        assert not same_inputs(old, new, "x.npy", action="redoing it")
        assert not same_inputs(None, new, "y.npy")
    lines = caplog.text.strip().splitlines()
    assert len(lines) == 2
    assert "x.npy was made from other inputs (changed: extra, source.model_sha256); redoing it" in lines[0]
    assert "y.npy records no fingerprint" in lines[1]
