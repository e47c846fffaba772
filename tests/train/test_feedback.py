"""Training feedback (issue 24): progress lines with totals, elapsed time and ETA, a final
line whose epoch agrees with them, the torch thread count, and early stopping with patience."""
from __future__ import annotations

import re

import pytest
import torch

from speechssl.train import Trainer
from speechssl.train import device as device_mod
from speechssl.train.progress import TrainingLog, format_duration
from tests.train.test_trainer import LinearTask, tiny_cfg
from tests.train.tiny_task import TinyTask, TinyTaskConfig

_PROGRESS = re.compile(r"epoch (\d+) update (\d+)/(\d+) \((\d+)%\) \| elapsed (\S+) \| eta (\S+) \|")


def test_progress_lines_show_total_elapsed_eta_and_the_done_epoch_agrees(tiny_data, tmp_path):
    task_cfg = TinyTaskConfig(data=str(tiny_data))
    per_epoch = Trainer(TinyTask(task_cfg), tiny_cfg(max_updates=1), tmp_path / "probe")._updates_per_epoch()
    n = per_epoch + 2  # the run ends mid-epoch 2, where the old "done" line said epoch 1
    Trainer(TinyTask(task_cfg), tiny_cfg(max_updates=n, log_every_updates=1), tmp_path / "run").fit()
    log = (tmp_path / "run" / "train.log").read_text()
    lines = _PROGRESS.findall(log)
    assert [int(u) for _, u, *_ in lines] == list(range(1, n + 1))
    assert {int(t) for _, _, t, *_ in lines} == {n}
    assert int(lines[0][3]) == round(100 / n) and lines[-1][3] == "100"
    assert lines[-1][-1] == "0s"  # nothing left at the last update
    done = re.search(rf"done: {n} updates, epoch (\d+), best loss \S+ at update (\d+)", log)
    assert done, log
    assert int(done.group(1)) == int(lines[-1][0]) == 2


def test_total_is_the_first_limit_reached(tiny_data, tmp_path):
    trainer = Trainer(TinyTask(TinyTaskConfig(data=str(tiny_data))), tiny_cfg(max_updates=1000, max_epochs=1),
                      tmp_path)
    assert trainer._planned_updates() == trainer._updates_per_epoch()


def test_position_text_extrapolates_the_rate_of_this_run(tmp_path):
    log = TrainingLog(tmp_path, enabled=False, tensorboard=False, progress_bar=False)
    log.plan(100, 40)  # resumed at update 40
    start = log._start
    assert log.position(50, now=start + 20.0) == "50/100 (50%) | elapsed 20s | eta 1m40s"
    assert log.position(40, now=start + 1.0) == "40/100 (40%) | elapsed 1s"
    log.plan(0, 0)
    assert log.position(7, now=log._start + 3725) == "7 | elapsed 1h02m"
    assert [format_duration(s) for s in (0, 59.4, 61, 3599, -3)] == ["0s", "59s", "1m01s", "59m59s", "0s"]


def test_threads_follow_the_available_cpus_unless_omp_num_threads_is_set(monkeypatch, speechssl_logs):
    before = torch.get_num_threads()
    monkeypatch.setattr(device_mod, "_threads_logged", False)
    monkeypatch.setattr(device_mod.os, "sched_getaffinity", lambda pid: {0})
    try:
        torch.set_num_threads(2)
        assert device_mod.configure_threads({"OMP_NUM_THREADS": "2"}) == 2  # the user's choice wins
        assert "torch threads: 2 (OMP_NUM_THREADS=2)" in speechssl_logs.text
        speechssl_logs.clear()
        assert device_mod.configure_threads({}) == 1 == torch.get_num_threads()
        assert "torch threads" not in speechssl_logs.text  # logged once per process
    finally:
        torch.set_num_threads(before)


def test_available_cpus_honours_a_cgroup_quota(monkeypatch, tmp_path):
    monkeypatch.setattr(device_mod.os, "sched_getaffinity", lambda pid: set(range(8)))
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert device_mod.available_cpus(tmp_path) == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert device_mod.available_cpus(tmp_path) == 8
    assert device_mod.available_cpus(tmp_path / "none") == 8


def _scripted(monkeypatch, trainer, values):
    it = iter(values)
    monkeypatch.setattr(trainer, "validate", lambda: {"accuracy": next(it), "loss": 1.0})


def test_early_stopping_after_patience_validations_without_improvement(tmp_path, monkeypatch, speechssl_logs):
    cfg = tiny_cfg(max_tokens=8, max_updates=20, validate_every_updates=1, save_every_updates=0,
                   best_metric="accuracy", maximize_best_metric=True, patience=2)
    trainer = Trainer(LinearTask(), cfg, tmp_path)
    _scripted(monkeypatch, trainer, [0.1, 0.5, 0.4, 0.6, 0.6, 0.3] + [0.0] * 20)
    trainer.fit()
    # best 0.6 at update 4; updates 5 and 6 did not improve it -> stop after update 6
    assert (trainer.num_updates, trainer.best, trainer.best_update, trainer.stopped_early) == (6, 0.6, 4, True)
    assert "early stop at update 6: 2 validations in a row without a better accuracy" in speechssl_logs.text
    assert "done: 6 updates (stopped early)" in speechssl_logs.text
    best = torch.load(tmp_path / "checkpoint_best.pt", weights_only=True)
    last = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)
    assert (best["num_updates"], best["best_update"]) == (4, 4)
    assert (last["num_updates"], last["stopped_early"], last["stale_validations"]) == (6, True, 2)

    again = Trainer(LinearTask(), cfg, tmp_path)  # a resumed stopped run stays stopped
    again.fit()
    assert again.num_updates == 6 and again.best_update == 4
    more = Trainer(LinearTask(), tiny_cfg(**{**cfg.__dict__, "patience": 4}), tmp_path)
    _scripted(monkeypatch, more, [0.0] * 20)
    more.fit()  # more patience lets it go on until 4 stale validations
    assert more.num_updates == 8 and more.best_update == 4


def test_no_patience_trains_to_the_limit(tmp_path, monkeypatch):
    cfg = tiny_cfg(max_tokens=8, max_updates=6, validate_every_updates=1, save_every_updates=0,
                   best_metric="accuracy", maximize_best_metric=True)
    trainer = Trainer(LinearTask(), cfg, tmp_path)
    _scripted(monkeypatch, trainer, [0.5] + [0.1] * 10)
    trainer.fit()
    assert (trainer.num_updates, trainer.best_update, trainer.stopped_early) == (6, 1, False)


def test_patience_must_not_be_negative(tmp_path):
    with pytest.raises(ValueError, match="trainer.patience must be >= 0"):
        Trainer(LinearTask(), tiny_cfg(patience=-1), tmp_path)
