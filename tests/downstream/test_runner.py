"""End-to-end smoke of the runner CLI (fbank baseline, a few updates) and the report."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from speechssl.cli import main
from speechssl.downstream.runner import split_overrides

_FAST = "trainer.max_updates=4,trainer.validate_every_updates=2,trainer.save_every_updates=2"


def _run(*args: str) -> int:
    return main(["-q", "downstream", *args])


def test_split_overrides_s3prl_style():
    assert split_overrides(["a.b=1,c=[1,2],d.e=x", "f=2"]) == ["a.b=1", "c=[1,2]", "d.e=x", "f=2"]
    assert split_overrides(["a=1,,b=2,3"]) == ["a=1", "b=2,3"]


@pytest.fixture(scope="module")
def runs(tiny_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    common = ["--data", str(tiny_corpus), "--cache-dir", str(root / "cache")]
    assert _run("-m", "train", "-u", "fbank", "-d", "ks", "--expdir", str(root / "ks"), "-o", _FAST, *common) == 0
    assert _run("-m", "train", "-u", "fbank", "-d", "pr", "--expdir", str(root / "pr"), "-o", _FAST,
                "-o", "trainer.max_tokens=40000", *common) == 0
    assert _run("-m", "train", "-u", "fbank", "-d", "qbe", "--expdir", str(root / "qbe"), *common) == 0
    return root, common


def test_results_record_what_was_run(runs, tiny_corpus):
    root, _ = runs
    r = json.loads((root / "ks" / "result.json").read_text())
    assert r["task"] == "ks" and r["metric"] == "accuracy" and r["higher_is_better"] is True
    assert 0.0 <= r["value"] <= 1.0 and r["split"] == "test" and r["seed"] == 1
    assert r["upstream"]["name"] == "fbank" and len(r["upstream"]["hash"]) == 64
    assert r["config"]["trainer"]["max_updates"] == 4 and r["speechssl_version"]
    assert r["checkpoint"].endswith("checkpoint_best.pt") and r["num_updates"] >= 2
    assert len(r["layer_weights"]) == 1 and "accuracy" in r["valid_metrics"]
    n_test = len((Path(tiny_corpus) / "keywords" / "test.tsv").read_text().splitlines()) - 1
    assert len((root / "ks" / "predictions_test.tsv").read_text().splitlines()) == n_test
    assert r["scored"] == {"count": n_test, "unit": "utterances"}
    pr = json.loads((root / "pr" / "result.json").read_text())
    assert pr["metric"] == "per" and pr["higher_is_better"] is False and pr["value"] > 0
    qbe = json.loads((root / "qbe" / "result.json").read_text())
    assert qbe["metric"] == "mtwv" and "map" in qbe["metrics"] and qbe["checkpoint"] is None
    # MTWV rests on the test half of the queries (one prediction per query and document)
    pairs = [line.split("\t") for line in (root / "qbe" / "predictions_test.tsv").read_text().splitlines()]
    assert qbe["scored"] == {"count": len({p[0] for p in pairs}), "unit": "queries"}
    assert qbe["scored"]["count"] == qbe["metrics"]["queries"] and len(pairs) > qbe["scored"]["count"]


def test_cache_is_shared_and_reused(runs):
    root, _ = runs
    caches = sorted(p.name.rsplit("-", 1)[0] for p in (root / "cache").glob("fbank-*/*") if p.is_dir())
    assert caches.count("read-train") == 1 and "keywords-train" in caches


def test_evaluate_reproduces_and_resume_is_guarded(runs):
    root, common = runs
    before = json.loads((root / "ks" / "result.json").read_text())["value"]
    assert _run("-m", "evaluate", "-e", str(root / "ks")) == 0
    assert json.loads((root / "ks" / "result.json").read_text())["value"] == before
    # an existing run is never silently overwritten or resumed
    assert _run("-m", "train", "-u", "fbank", "-d", "ks", "--expdir", str(root / "ks"), "-o", _FAST, *common) == 1
    # -a resumes: the run is already complete, so nothing more is trained
    assert _run("-m", "train", "-a", "-u", "fbank", "-d", "ks", "--expdir", str(root / "ks"), "-o", _FAST,
                *common) == 0
    # -e resumes with the saved config; an override extends the run by two updates
    assert _run("-m", "train", "-e", str(root / "ks"), "-o", "trainer.max_updates=6") == 0
    resumed = json.loads((root / "ks" / "result.json").read_text())
    assert resumed["config"]["trainer"]["max_updates"] == 6 and resumed["config"]["run"]["upstream"] == "fbank"
    assert (root / "ks" / "checkpoint_6.pt").is_file() or (root / "ks" / "checkpoint_last.pt").is_file()


def test_bad_invocations_fail_cleanly(runs, tiny_corpus, tmp_path, capsys):
    assert _run("-m", "train", "-u", "fbank", "--data", str(tiny_corpus)) == 1            # no task
    assert _run("-m", "train", "-u", "fbank", "-d", "nosuchtask", "--data", str(tiny_corpus)) == 1
    assert _run("-m", "train", "-u", "fbank", "-d", "ks", "--data", str(tmp_path / "none"),
                "--expdir", str(tmp_path / "x")) == 1
    assert _run("-m", "train", "-u", "fbank", "-d", "ks", "--data", str(tiny_corpus), "--expdir",
                str(tmp_path / "y"), "-o", "trainer.nosuchkey=1") == 1


def test_report_renders_table_legend_and_plots(runs, tmp_path):
    root, _ = runs
    assert _run("report", str(root), "--out", str(tmp_path / "report")) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| upstream | pr PER (%) ↓ | ks accuracy (%) ↑ | qbe MTWV ↑ |" in md
    assert "`fbank`" in md and "## What the tasks are" in md and "- **ks** — keyword spotting" in md
    assert (tmp_path / "report" / "metrics.png").stat().st_size > 1000
    rows = json.loads((tmp_path / "report" / "report.json").read_text())
    assert {r["task"] for r in rows} == {"ks", "pr", "qbe"}


def test_same_command_same_numbers(runs, tmp_path):
    _, common = runs
    out = []
    for name in ("a", "b"):
        assert _run("-m", "train", "-u", "fbank", "-d", "ks", "--expdir", str(tmp_path / name), "-o", _FAST,
                    *common) == 0
        r = json.loads((tmp_path / name / "result.json").read_text())
        out.append((r["value"], r["valid_metrics"], (tmp_path / name / "predictions_test.tsv").read_text()))
    assert out[0] == out[1]
