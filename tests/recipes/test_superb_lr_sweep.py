"""recipes/superb/run.sh --lr-sweep: checked, documented, passed to every run, marked in the report."""
from __future__ import annotations

import json
from pathlib import Path

from tests.recipes.test_superb import _FAST, _bash


def test_help_and_bad_values(tmp_path: Path) -> None:
    r = _bash("--help", cwd=tmp_path)
    assert r.returncode == 0 and "--lr-sweep 1e-4,1e-3,1e-2" in r.stdout
    r = _bash("--data", ".", "--upstream", "a=fbank", "--lr-sweep", "1e-3;1e-2", cwd=tmp_path)
    assert r.returncode == 1 and "--lr-sweep must be learning rates separated by commas" in r.stderr
    assert not (tmp_path / "exp").exists()


def test_superb_lr_sweep_picks_by_validation_and_marks_the_report(tiny_corpus: Path, tmp_path: Path) -> None:
    exp = tmp_path / "sweep"
    r = _bash("--data", str(tiny_corpus), "--exp-dir", str(exp), "--tasks", "er", "--nj", "1",
              "--upstream", "fbank=fbank", "--lr-sweep", "1e-4,1e-2", "--", _FAST, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((exp / "downstream" / "er_fbank" / "result.json").read_text())
    runs = res["lr_sweep"]["runs"]
    assert [x["lr"] for x in runs] == [1e-4, 1e-2]
    chosen = max(runs, key=lambda x: (x["valid"], -runs.index(x)))
    assert res["lr_sweep"]["chosen_lr"] == chosen["lr"] and res["value"] == chosen["test"]
    row = next(line for line in (exp / "report/report.md").read_text().splitlines() if line.startswith("| `fbank`"))
    assert row.endswith(" † |")
