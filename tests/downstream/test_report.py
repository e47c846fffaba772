"""Report rendering from result.json files: header with directions, best in bold, seeds, plots."""
from __future__ import annotations

import json

import pytest

from speechssl.downstream.report import collect_results, render_markdown, write_report


def _result(task, up, value, *, metric, higher, weights=None, seed=1, extra=None):
    return {"task": task, "metric": metric, "value": value, "higher_is_better": higher,
            "description": f"{task} description", "metrics": {metric: value, **(extra or {})},
            "upstream": {"name": up, "hash": "ab" * 32}, "featurizer": {"layer": None, "normalize": False},
            "layer_weights": weights, "seed": seed, "num_updates": 10}


@pytest.fixture()
def exp_root(tmp_path):
    rows = [
        _result("ks", "fbank", 0.50, metric="accuracy", higher=True, weights=[1.0]),
        _result("ks", "hubert", 0.80, metric="accuracy", higher=True, weights=[0.1, 0.2, 0.3, 0.4], seed=1),
        _result("ks", "hubert", 0.70, metric="accuracy", higher=True, weights=[0.4, 0.3, 0.2, 0.1], seed=2),
        _result("pr", "fbank", 0.40, metric="per", higher=False, weights=[1.0]),
        _result("pr", "hubert", 0.30, metric="per", higher=False, weights=[0.25] * 4),
        _result("qbe", "hubert", 0.123456, metric="mtwv", higher=True, weights=[0, 1, 0, 0], extra={"map": 0.5}),
    ]
    for i, r in enumerate(rows):
        d = tmp_path / f"run{i}"
        d.mkdir()
        (d / "result.json").write_text(json.dumps(r))
    return tmp_path


def test_markdown_table(exp_root):
    md = render_markdown(collect_results([exp_root]))
    assert "| upstream | pr PER (%) ↓ | ks accuracy (%) ↑ | qbe MTWV ↑ |" in md
    fbank = next(line for line in md.splitlines() if line.startswith("| `fbank`"))
    hubert = next(line for line in md.splitlines() if line.startswith("| `hubert`"))
    assert fbank == "| `fbank` | 40.00 | 50.00 | – |"
    # two seeds: mean ± sample std (runs); best per column in bold, lower PER is better
    assert hubert == "| `hubert` | **30.00** | **75.00 ± 7.07 (2)** | 0.1235 |"
    assert "- **pr** — pr description. Metric: PER (lower is better)" in md
    assert "| qbe | `hubert` | MAP 0.5000 |" in md


def test_ties_are_all_bold(tmp_path):
    for i, (up, value) in enumerate([("fbank", 0.0), ("hubert", 0.0), ("random", 0.5)]):
        d = tmp_path / f"run{i}"
        d.mkdir()
        (d / "result.json").write_text(json.dumps(_result("sd", up, value, metric="der", higher=False)))
    rows = {line.split(" | ")[0]: line for line in render_markdown(collect_results([tmp_path])).splitlines()
            if line.startswith("| `")}
    assert rows["| `fbank`"] == "| `fbank` | **0.00** |"
    assert rows["| `hubert`"] == "| `hubert` | **0.00** |"
    assert rows["| `random`"] == "| `random` | 50.00 |"


def test_write_report_files(exp_root, tmp_path):
    out = write_report([exp_root], tmp_path / "report")
    assert out.read_text().count("![") == 2
    assert (tmp_path / "report" / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "report" / "layer_weights.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((tmp_path / "report" / "report.json").read_text())
    ks = next(r for r in summary if r["task"] == "ks" and r["upstream"] == "hubert")
    assert ks["values"] == [0.8, 0.7] and ks["mean"] == pytest.approx(0.75)


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no result.json"):
        collect_results([tmp_path])
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "result.json").write_text(json.dumps({"task": "ks"}))
    with pytest.raises(ValueError, match="not a downstream result"):
        collect_results([tmp_path])


@pytest.mark.parametrize("field,value,what", [("hash", "cd" * 32, "weights"), ("layer", 3, "featurizer")])
def test_runs_of_one_cell_must_be_the_same_upstream(tmp_path, field, value, what):
    """Two seeds of one upstream are averaged; two different models under one name are refused."""
    seed2 = _result("ks", "hubert", 0.7, metric="accuracy", higher=True, seed=2)
    other = _result("ks", "hubert", 0.6, metric="accuracy", higher=True, seed=3)
    if field == "hash":
        other["upstream"]["hash"] = value
    else:
        other["featurizer"]["layer"] = value
    for i, r in enumerate([_result("ks", "hubert", 0.8, metric="accuracy", higher=True), seed2, other]):
        (tmp_path / f"run{i}").mkdir()
        (tmp_path / f"run{i}" / "result.json").write_text(json.dumps(r))
    assert len(collect_results([tmp_path / "run0", tmp_path / "run1"])) == 2
    with pytest.raises(ValueError, match=rf"run0 and .*run2 both report upstream 'hubert' on ks but with "
                                         rf"different {what}.*-u NAME"):
        collect_results([tmp_path])


def test_legend_says_what_each_test_score_rests_on(tmp_path):
    rows = [_result("ks", "fbank", 0.5, metric="accuracy", higher=True),
            _result("ks", "hubert", 0.75, metric="accuracy", higher=True),
            _result("asv", "fbank", 0.1, metric="eer", higher=False),
            _result("asv", "hubert", 0.2, metric="eer", higher=False),
            _result("pr", "fbank", 0.4, metric="per", higher=False)]
    rows[0]["scored"] = rows[1]["scored"] = {"count": 16, "unit": "utterances"}
    rows[2]["scored"] = {"count": 48, "unit": "trials"}
    rows[3]["scored"] = {"count": 100, "unit": "trials"}  # e.g. runs on two corpora
    for i, r in enumerate(rows):  # pr: a result written before the runner recorded it
        (tmp_path / f"run{i}").mkdir()
        (tmp_path / f"run{i}" / "result.json").write_text(json.dumps(r))
    legend = {line.split("**")[1]: line for line in render_markdown(collect_results([tmp_path])).splitlines()
              if line.startswith("- **")}
    # 16 items: each 100/16 = 6.25 points; 1.96 * sqrt(0.25 / 16) = 0.245
    assert legend["ks"].endswith("Test set: 16 utterances (one is 6.25 points; a 95 % interval around 50 % "
                                 "spans ±24.5 points).")
    assert legend["asv"].endswith("Test set: 48 to 100 trials.")
    assert "Test set" not in legend["pr"]


def test_runs_of_one_task_with_other_task_options_are_separate_columns(tmp_path):
    """image_probe on shape and on colour are two experiments, never averaged as seeds."""
    from speechssl.downstream.report import collect_results
    from speechssl.downstream.report_cells import table, tasks_of

    rows = []
    for factor, value in (("shape", 0.2), ("colour", 0.6)):
        for seed in (1, 2):
            r = _result("image_probe", "pixels", value + 0.01 * seed, metric="accuracy", higher=True, seed=seed)
            r["config"] = {"task": {"factor": factor, "subset": "scenes", "seed": seed}}
            rows.append(r)
    for i, r in enumerate(rows):
        (tmp_path / f"r{i}").mkdir()
        (tmp_path / f"r{i}" / "result.json").write_text(json.dumps(r))
    results = collect_results([tmp_path])
    assert tasks_of(results) == ["image_probe (factor=colour)", "image_probe (factor=shape)"]
    cells = table(results)["cells"]
    assert cells[("image_probe (factor=shape)", "pixels")] == pytest.approx([0.21, 0.22])
    assert cells[("image_probe (factor=colour)", "pixels")] == pytest.approx([0.61, 0.62])
