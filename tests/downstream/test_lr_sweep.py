"""Learning-rate sweeps, early stopping and the report's lr/updates columns (issue 24)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from speechssl.cli import main
from speechssl.downstream import runner
from speechssl.downstream.report import collect_results, render_markdown

_FAST = "trainer.max_updates=4,trainer.validate_every_updates=2,trainer.save_every_updates=2"


def test_early_stopping_is_opt_in_and_overrides_win():
    _, _, trainer, _ = runner.resolve_configs(flags={"task": "ks", "upstream": "fbank"})
    assert trainer.patience == runner.TRAINER_DEFAULTS["patience"] == 0
    _, _, trainer, _ = runner.resolve_configs(flags={"task": "ks", "upstream": "fbank"},
                                              overrides=["trainer.patience=3"])
    assert trainer.patience == 3


@pytest.mark.parametrize("lrs, message", [([1e-3, 1e-3], "listed twice"), ([0.0], "positive")])
def test_bad_sweeps_are_refused(lrs, message):
    with pytest.raises(ValueError, match=message):
        runner.resolve_configs(flags={"task": "ks", "upstream": "fbank", "lr_sweep": lrs})


class _FakeTask:
    trains = True


def _fake_run(tmp_path: Path, lrs: list[float]) -> runner.Run:
    run_cfg, task_cfg, trainer, spec = runner.resolve_configs(
        flags={"task": "ks", "upstream": "fbank", "lr_sweep": lrs})
    return runner.Run(run=run_cfg, task_cfg=task_cfg, trainer=trainer, spec=spec, expdir=tmp_path / "exp",
                      upstream=None, task=_FakeTask())  # type: ignore[arg-type]


def test_sweep_chooses_by_validation_never_by_test(tmp_path, monkeypatch):
    """Scripted heads: lr 1e-3 is best on valid, 1e-2 best on test; ties on valid go to the earlier lr."""
    script = {1e-4: (0.50, 0.60), 1e-3: (0.80, 0.55), 1e-2: (0.70, 0.90), 3e-2: (0.80, 0.99)}
    seen = []

    def fake_train(sub: runner.Run, *, test_split: str) -> dict:
        lr = sub.trainer.optim.lr
        seen.append((lr, sub.expdir, sub.run.lr_sweep))
        valid, test = script[lr]
        sub.expdir.mkdir(parents=True)
        (sub.expdir / "predictions_test.tsv").write_text(f"lr {lr}\n")
        return {"value": test, "valid_metrics": {"accuracy": valid}, "checkpoint": str(sub.expdir),
                "training": {"best_update": 2, "trained_updates": 4, "stopped_early": False, "patience": 3},
                "train_seconds": 1.0, "higher_is_better": True}

    monkeypatch.setattr(runner, "train", fake_train)
    r = _fake_run(tmp_path, list(script))
    result = runner.sweep(r)
    assert [lr for lr, *_ in seen] == list(script)
    assert all(d == runner.sweep_dir(r.expdir, lr) and sweep == [] for lr, d, sweep in seen)
    assert result["lr_sweep"]["chosen_lr"] == 1e-3 and result["value"] == 0.55
    on_disk = json.loads((r.expdir / "result.json").read_text())
    assert on_disk["lr_sweep"]["selected_on"] == "valid" and on_disk["train_seconds"] == 4.0
    assert [(x["lr"], x["valid"], x["test"]) for x in on_disk["lr_sweep"]["runs"]] == [
        (lr, v, t) for lr, (v, t) in script.items()]
    assert on_disk["config"]["run"]["lr_sweep"] == list(script)
    assert (r.expdir / "predictions_test.tsv").read_text() == "lr 0.001\n"


def test_sweep_of_a_lower_is_better_metric(tmp_path, monkeypatch):
    def fake_train(sub, *, test_split):
        sub.expdir.mkdir(parents=True)
        (sub.expdir / "predictions_test.tsv").write_text("")
        per = {1e-3: 0.4, 1e-2: 0.3}[sub.trainer.optim.lr]
        return {"value": per, "valid_metrics": {"per": per}, "checkpoint": "", "higher_is_better": False}

    monkeypatch.setattr(runner, "train", fake_train)
    run_cfg, task_cfg, trainer, spec = runner.resolve_configs(
        flags={"task": "pr", "upstream": "fbank", "lr_sweep": [1e-3, 1e-2]})
    r = runner.Run(run=run_cfg, task_cfg=task_cfg, trainer=trainer, spec=spec, expdir=tmp_path / "pr",
                   upstream=None, task=_FakeTask())  # type: ignore[arg-type]
    assert runner.sweep(r)["lr_sweep"]["chosen_lr"] == 1e-2
    with pytest.raises(ValueError, match="needs trainer.valid_split"):
        runner.sweep(dataclasses.replace(r, trainer=dataclasses.replace(r.trainer, valid_split=None)))


def test_lr_sweep_end_to_end(tiny_corpus, tmp_path):
    """Through the CLI on cached fbank features: one head per lr, the report marks the cell."""
    exp = tmp_path / "ks_sweep"
    args = ["-q", "downstream", "-m", "train", "-u", "fbank", "-d", "ks", "--data", str(tiny_corpus),
            "--cache-dir", str(tmp_path / "cache"), "-p", str(exp), "-o", _FAST, "--lr-sweep", "1e-4,1e-2"]
    assert main(args) == 0
    r = json.loads((exp / "result.json").read_text())
    runs = r["lr_sweep"]["runs"]
    assert [x["lr"] for x in runs] == [1e-4, 1e-2]
    for x in runs:  # each lr is a complete experiment of its own, with that lr
        sub = json.loads((Path(x["expdir"]) / "result.json").read_text())
        assert sub["config"]["trainer"]["optim"]["lr"] == x["lr"] and "lr_sweep" not in sub
        assert (sub["valid_metrics"]["accuracy"], sub["value"]) == (x["valid"], x["test"])
        assert x["trained_updates"] == 4 and x["best_update"] in (2, 4)
    oracle = max(runs, key=lambda x: (x["valid"], -runs.index(x)))
    assert r["lr_sweep"]["chosen_lr"] == oracle["lr"] and r["value"] == oracle["test"]
    assert r["training"]["trained_updates"] == 4
    # the features were cached once and shared by both heads
    assert len([p for p in (tmp_path / "cache").glob("fbank-*/keywords-train-*") if p.is_dir()]) == 1
    assert main(args) == 1  # a second sweep into the same directory needs -a
    assert main(["-q", "downstream", "-m", "evaluate", "-e", str(exp)]) == 0
    assert json.loads((exp / "result.json").read_text())["lr_sweep"]["chosen_lr"] == oracle["lr"]
    md = render_markdown(collect_results([exp]))
    row = next(line for line in md.splitlines() if line.startswith("| `fbank`"))
    assert row.endswith(" † |") and "† best of a learning-rate sweep" in md
    assert f"| {oracle['lr']:g} † (of 0.0001, 0.01) | {r['training']['best_update']} of 4 |" in md


def test_report_updates_column_says_best_and_trained(tmp_path):
    base = {"task": "er", "metric": "accuracy", "higher_is_better": True, "upstream": {"name": "fbank", "hash": "a"},
            "featurizer": {"layer": None}, "seed": 1, "num_updates": 300,
            "config": {"trainer": {"optim": {"lr": 1e-3}}}}
    rows = [{**base, "value": 0.5, "training": {"best_update": 300, "trained_updates": 600, "stopped_early": True}},
            {**base, "upstream": {"name": "old", "hash": "b"}, "value": 0.4}]
    for i, row in enumerate(rows):
        (tmp_path / f"r{i}").mkdir()
        (tmp_path / f"r{i}" / "result.json").write_text(json.dumps(row))
    md = render_markdown(collect_results([tmp_path]))
    assert "| 0.001 | 300 of 600, stopped early |" in md
    assert "| 0.001 | 300 |" in md  # results written before issue 24 keep their single number
    assert "†" not in md
