"""speechssl.safe_io and the finite-weight rules (issue 23 items 5 and 6), unit level.

The CLI-level cases per verb are in test_bad_inputs.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from speechssl.safe_io import BadFileError, NonFiniteError, check_finite, describe_file, load_json, load_npy, loads_yaml


def test_yaml_duplicate_keys_are_refused_at_every_depth() -> None:
    with pytest.raises(BadFileError, match=r"^f\.yaml:4: duplicate key 'b' \(first on line 2\)"):
        loads_yaml("a:\n  b: 1\n  c: 2\n  b: 3\n", "f.yaml")
    with pytest.raises(BadFileError, match=r"duplicate key 'x'"):
        loads_yaml("a: {x: 1, y: 2, x: 3}\n", "f.yaml")
    with pytest.raises(BadFileError, match=r"^f\.yaml:2: duplicate key 1"):
        loads_yaml("1: a\n1: b\n", "f.yaml")


def test_yaml_merge_keys_and_plain_documents_still_load() -> None:
    # an explicit key overriding a merged one is YAML's intended use, not a duplicate
    assert loads_yaml("base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  x: 3\n") == {"base": {"x": 1, "y": 2},
                                                                          "m": {"x": 3, "y": 2}}
    assert loads_yaml("a: [1, 2]\nb: {c: true}\n") == {"a": [1, 2], "b": {"c": True}}
    assert loads_yaml("") is None


def test_yaml_syntax_error_is_one_line_with_line_and_column() -> None:
    with pytest.raises(BadFileError) as exc:
        loads_yaml("a: 1\nb: [1,\n", "f.yaml")
    assert "\n" not in str(exc.value) and str(exc.value).startswith("f.yaml:3:1: not valid YAML")


def test_json_errors_name_line_and_column(tmp_path: Path) -> None:
    p = tmp_path / "c.json"
    p.write_text('{"a": 1,\n "b": }\n')
    with pytest.raises(BadFileError, match=r"c\.json:2:7: not valid JSON \(Expecting value\); expected a thing"):
        load_json(p, "a thing")
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(BadFileError, match=r"c\.json: not UTF-8 text: found .*binary data"):
        load_json(p)
    p.write_text(json.dumps({"ok": [1, 2]}))
    assert load_json(p) == {"ok": [1, 2]}


@pytest.mark.parametrize("defect, message", [
    ("truncated", r"truncated: its header says shape \(10, 4\) float32 \(288 bytes with the header\), the file has 200"),
    ("longer", r"longer than its header says"),
    ("text", r"not a \.npy file: found a text file starting 'hello'"),
    ("object", r"holds Python objects \(dtype object\)"),
    ("ndim", r"found an array of shape \(10, 4\); expected 3 dimensions"),
])
def test_npy_defects(tmp_path: Path, defect: str, message: str) -> None:
    p = tmp_path / "a.npy"
    np.save(p, np.zeros((10, 4), np.float32))
    kwargs = {}
    if defect == "truncated":
        p.write_bytes(p.read_bytes()[:200])
    elif defect == "longer":
        p.write_bytes(p.read_bytes() + b"\0" * 8)
    elif defect == "text":
        p.write_text("hello\n")
    elif defect == "object":
        np.save(p, np.array([None, {}], dtype=object), allow_pickle=True)
    else:
        kwargs["ndim"] = 3
    with pytest.raises(BadFileError, match=message) as exc:
        load_npy(p, **kwargs)
    assert str(exc.value).startswith(str(p)) and "\n" not in str(exc.value)


def test_npy_good_files_load_memory_mapped_and_in_memory(tmp_path: Path) -> None:
    p = tmp_path / "a.npy"
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(p, x)
    assert isinstance(load_npy(p), np.memmap) and np.array_equal(load_npy(p), x)
    assert np.array_equal(load_npy(p, mmap_mode=None), x)
    np.save(p, np.zeros((0, 4), np.float32))
    assert load_npy(p).shape == (0, 4)


def test_check_finite_names_the_first_bad_value() -> None:
    x = np.zeros((5, 3), np.float32)
    x[3, 2], x[4, 0] = np.inf, np.nan
    with pytest.raises(NonFiniteError, match=r"^src: frame 13 \(utt 3\), column 2 is inf \(2 non-finite values in "
                                             r"frames 10\.\.14\); expected finite values$"):
        check_finite(x, "src", row_names=lambda i: f"utt {i}", what="frame", offset=10)
    check_finite(np.ones(3), "src")
    check_finite(np.arange(3), "src")  # integers cannot be NaN
    with pytest.raises(NonFiniteError, match="row 0 is nan"):
        check_finite(torch.tensor([float("nan")]), "src")


def test_describe_file(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("101 hello\nmore\n")
    (tmp_path / "e").write_bytes(b"")
    (tmp_path / "b").write_bytes(bytes(range(200, 216)))
    assert describe_file(tmp_path / "t") == "a text file starting '101 hello'"
    assert describe_file(tmp_path / "e") == "an empty file"
    assert describe_file(tmp_path / "b").startswith("16 bytes of binary data starting c8 c9")


def test_a_training_checkpoint_with_nan_weights_is_never_written(tmp_path: Path) -> None:
    from speechssl.train.checkpoint import NonFiniteWeightsError, load_checkpoint, save_checkpoint

    good = {"model": {"w": torch.ones(3)}, "num_updates": 4}
    save_checkpoint(good, tmp_path / "checkpoint_last.pt")
    bad = {"model": {"w": torch.tensor([1.0, float("nan"), float("inf")])}, "num_updates": 5}
    with pytest.raises(NonFiniteWeightsError, match=r"checkpoint_last\.pt: refusing to save: model tensor 'w' "
                                                     r"\(float32, shape \(3,\)\) holds 1 NaN and 1 infinite of its 3 "
                                                     r"values at update 5"):
        save_checkpoint(bad, tmp_path / "checkpoint_last.pt")
    assert load_checkpoint(tmp_path / "checkpoint_last.pt")["num_updates"] == 4  # the previous one is kept


def test_model_dir_and_hf_writers_refuse_nan_weights_and_readers_flag_them(tmp_path: Path, caplog) -> None:
    from speechssl._hub.modeldir import HubError, WeightsRecord, nonfinite_tensors, write_model_dir
    from speechssl._hub.sources import read_record

    state = {"a": torch.zeros(2), "b": torch.tensor([float("nan"), 1.0]), "c": torch.arange(3)}
    assert nonfinite_tensors(state) == [("b", 1, 0)]
    with pytest.raises(HubError, match=r"out: refusing to write: tensor 'b' \(float32, shape \(2,\)\) holds 1 NaN"):
        write_model_dir(tmp_path / "out", WeightsRecord("hubert", {}, state))
    assert not (tmp_path / "out").exists()
    # a Trainer-layout checkpoint with a NaN weight: read (and shown by hub info), flagged
    from speechssl.atomic import atomic_torch_save

    ckpt = tmp_path / "checkpoint_3.pt"
    atomic_torch_save({"model": {"up.b": state["b"]}, "upstream": {"method": "hubert", "config": {},
                                                                   "prefix": "up"}}, ckpt)
    record = read_record(ckpt)
    assert record.source["nonfinite"].startswith("tensor 'b' (float32, shape (2,)) holds 1 NaN")
