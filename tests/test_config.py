"""Tests of speechssl.config (typed dataclass configs) and speechssl.atomic (atomic writes)."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import pytest
import torch

from speechssl.atomic import atomic_open, atomic_torch_save, atomic_write_bytes, atomic_write_text
from speechssl.config import ConfigError, apply_overrides, from_dict, load_yaml, merge, save_yaml, to_dict


@dataclass
class Inner:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.98)
    name: Literal["adam", "adamw"] = "adamw"


@dataclass
class Outer:
    layers: int = 2
    inner: Inner = field(default_factory=Inner)
    conv: tuple[tuple[int, int, int], ...] = ((8, 10, 5), (8, 3, 2))
    labels: list[str] = field(default_factory=lambda: ["km"])
    rates: dict[str, float] = field(default_factory=dict)
    split: Optional[str] = "valid"
    ratio: Optional[tuple[float, float, float]] = None
    flag: bool = False
    extra: Any = None


@dataclass
class Required:
    data: str
    n: int = 1


# -- config ---------------------------------------------------------------------------------
def test_from_dict_converts_nested_types():
    cfg = from_dict(Outer, {"layers": 4.0, "inner": {"lr": "2e-4", "betas": [0.8, 0.9]},
                            "conv": [[16, 5, 2]], "rates": {"km": 50}, "split": None, "ratio": [0.1, 0.4, 0.5]})
    assert cfg.layers == 4 and isinstance(cfg.layers, int)
    assert cfg.inner == Inner(lr=2e-4, betas=(0.8, 0.9))
    assert cfg.conv == ((16, 5, 2),) and cfg.rates == {"km": 50.0} and cfg.split is None
    assert cfg.ratio == (0.1, 0.4, 0.5) and cfg.labels == ["km"]


def test_round_trip_through_dict_and_yaml(tmp_path):
    cfg = Outer(layers=3, inner=Inner(name="adam"), rates={"a": 1.5}, ratio=(0.2, 0.3, 0.5), flag=True)
    plain = to_dict(cfg)
    assert plain["conv"] == [[8, 10, 5], [8, 3, 2]] and plain["inner"]["betas"] == [0.9, 0.98]
    assert from_dict(Outer, plain) == cfg
    save_yaml(cfg, tmp_path / "c.yaml")
    assert load_yaml(Outer, tmp_path / "c.yaml") == cfg
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("data,message", [
    ({"layerz": 1}, r"unknown config key layerz; Outer has: conv, extra, flag, inner, labels, layers"),
    ({"inner": {"lrr": 1}}, r"unknown config key inner\.lrr; Inner has: betas, lr, name"),
    ({"layers": "four"}, r"layers: expected an int, got 'four'"),
    ({"layers": True}, r"layers: expected an int, got True"),
    ({"layers": 2.5}, r"layers: expected an int, got 2.5"),
    ({"flag": "yes"}, r"flag: expected a bool \(true/false\), got 'yes'"),
    ({"inner": {"name": "sgd"}}, r"inner\.name: expected one of \['adam', 'adamw'\], got 'sgd'"),
    ({"inner": {"betas": [0.9]}}, r"inner\.betas: expected 2 items, got 1"),
    ({"conv": [[1, 2, "x"]]}, r"conv\[0\]\[2\]: expected an int, got 'x'"),
    ({"inner": 3}, r"inner: expected a mapping for Inner, got 3"),
    ({"rates": {"km": "fast"}}, r"rates\.km: expected a float, got 'fast'"),
])
def test_errors_name_the_dotted_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data)


def test_required_fields_and_base():
    with pytest.raises(ConfigError, match="missing required config key data for Required"):
        from_dict(Required, {"n": 2})
    base = Outer(layers=7, inner=Inner(lr=0.5))
    merged = from_dict(Outer, {"inner": {"name": "adam"}}, base=base)
    assert merged.layers == 7 and merged.inner == Inner(lr=0.5, name="adam")
    assert merge(base, {"layers": 1}).layers == 1 and base.layers == 7  # a copy


def test_apply_overrides():
    cfg = apply_overrides(Outer(), ["inner.lr=2e-4", "layers=4", "labels=[km, phn]", "flag=true",
                                    "split=null", "inner.betas=[0.8,0.99]", "extra={a: 1}"])
    assert cfg.inner.lr == 2e-4 and cfg.layers == 4 and cfg.labels == ["km", "phn"] and cfg.flag is True
    assert cfg.split is None and cfg.inner.betas == (0.8, 0.99) and cfg.extra == {"a": 1}
    with pytest.raises(ConfigError, match=r"override 'inner\.lrr=1': unknown config key inner\.lrr"):
        apply_overrides(Outer(), ["inner.lrr=1"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides(Outer(), ["layers"])
    with pytest.raises(ConfigError, match=r"override 'layers=\[1\]': layers: expected an int"):
        apply_overrides(Outer(), ["layers=[1]"])


def test_override_of_a_string_field_with_a_numeric_looking_value():
    # YAML reads 2024 as an int and 1e-3 as a string; a str field must still take the text as typed
    cfg = apply_overrides(Required(data="x"), ["data=2024"])
    assert cfg.data == "2024"
    assert apply_overrides(Outer(), ["split=007"]).split == "007"
    assert apply_overrides(Outer(), ["split=true"]).split == "true"


def test_load_yaml_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read config"):
        load_yaml(Outer, tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("layers: [1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:2:1: not valid YAML"):
        load_yaml(Outer, tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: expected a mapping at the top level, got list"):
        load_yaml(Outer, tmp_path / "list.yaml")
    (tmp_path / "key.yaml").write_text("inner:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"key\.yaml: inner\.lr: expected a float, got 'fast'"):
        load_yaml(Outer, tmp_path / "key.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert load_yaml(Outer, tmp_path / "empty.yaml", base=Outer(layers=9)).layers == 9


# -- atomic writes --------------------------------------------------------------------------
def _temporaries(d):
    return [p for p in d.iterdir() if p.name.endswith(".tmp")]


def test_atomic_writes(tmp_path):
    atomic_write_text(tmp_path / "sub" / "a.txt", "héllo")
    assert (tmp_path / "sub" / "a.txt").read_text(encoding="utf-8") == "héllo"
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    atomic_torch_save({"w": torch.arange(3)}, tmp_path / "c.pt")
    assert torch.equal(torch.load(tmp_path / "c.pt", weights_only=True)["w"], torch.arange(3))
    assert not _temporaries(tmp_path) and not _temporaries(tmp_path / "sub")
    with pytest.raises(ValueError, match="modes 'w' and 'wb'"):
        with atomic_open(tmp_path / "x", "a"):
            pass


def test_crash_inside_atomic_open_leaves_the_old_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_open(target) as f:
            f.write("new, half written")
            raise RuntimeError("boom")
    assert target.read_text() == "old" and not _temporaries(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(tmp_path / "never.txt") as f:
            f.write("x")
            raise KeyboardInterrupt
    assert not (tmp_path / "never.txt").exists() and not _temporaries(tmp_path)


def test_failed_torch_save_leaves_the_old_checkpoint(tmp_path):
    atomic_torch_save({"v": 1}, tmp_path / "ck.pt")
    with pytest.raises(Exception):
        atomic_torch_save({"v": 2, "bad": lambda: 0}, tmp_path / "ck.pt")  # lambdas cannot be pickled
    assert torch.load(tmp_path / "ck.pt", weights_only=True) == {"v": 1} and not _temporaries(tmp_path)


def test_atomic_files_get_normal_permissions(tmp_path):
    # a plain open() creates files 0o666 & ~umask; the temporary file must not leave them 0o600
    with open(tmp_path / "plain.txt", "w") as f:
        f.write("x")
    atomic_write_text(tmp_path / "atomic.txt", "x")
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(tmp_path / "atomic.txt") == mode(tmp_path / "plain.txt")
