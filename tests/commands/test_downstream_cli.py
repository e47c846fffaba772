"""`speechssl downstream` with s3prl's flags (-f, -l, -s, --verbose) and a truthful --help."""
from __future__ import annotations

import logging

import pytest

from speechssl.cli import main
from speechssl.downstream import runner
from speechssl.registry import list_downstreams


class _Stop(Exception):
    pass


@pytest.fixture
def captured(monkeypatch, tmp_path):
    """Run the CLI up to runner.prepare and return the resolved run config."""
    seen = {}

    def fake_prepare(run_cfg, task_cfg, trainer, spec, expdir):
        seen.update(run=run_cfg, trainer=trainer, expdir=expdir)
        raise _Stop

    monkeypatch.setattr(runner, "prepare", fake_prepare)
    level = logging.getLogger("speechssl").level

    def go(*args: str):
        with pytest.raises(_Stop):
            main(["-q", "downstream", "-m", "train", "-u", "fbank", "-d", "ks", "--data", str(tmp_path),
                  "-p", str(tmp_path / "exp"), *args])
        return seen["run"]

    yield go
    logging.getLogger("speechssl").setLevel(level)


def test_s3prl_layer_and_finetune_flags(captured):
    run = captured("-l", "2", "-f")
    assert run.featurizer.layer == 2 and run.upstream_trainable is True
    assert captured("--upstream_layer_selection", "-1").featurizer.layer == -1
    assert captured().featurizer.layer is None and captured().upstream_trainable is False


def test_s3prl_feature_selection(captured, capsys):
    assert captured("-s", "hidden_states").featurizer.layer is None
    assert captured("-s", "last_hidden_state").featurizer.layer == -1
    assert main(["-q", "downstream", "-u", "fbank", "-d", "ks", "-s", "PR"]) == 1
    assert "-s/--upstream_feature_selection 'PR' is not supported" in capsys.readouterr().err


def test_verbose_logs_debug(captured):
    captured("--verbose")
    assert logging.getLogger("speechssl").level == logging.DEBUG


def test_lr_sweep_flag_parses_and_rejects(captured, capsys):
    assert captured("--lr-sweep", "1e-4,1e-3,1e-2").lr_sweep == [1e-4, 1e-3, 1e-2]
    with pytest.raises(SystemExit):
        main(["downstream", "--lr-sweep", "1e-3,abc"])
    assert "comma-separated learning rates" in capsys.readouterr().err


def test_help_names_the_flags_tasks_and_dimensions(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["downstream", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("-f, --upstream-trainable", "-l N, --upstream_layer_selection N", "-s KEY", "--verbose",
                 "--lr-sweep LR,LR,...", "240 dims", "trainer.patience"):
        assert flag in out, flag
    tasks_line = next(line for line in out.splitlines() if line.startswith("tasks (-d):"))
    assert tasks_line.split(":", 1)[1].split("(")[0].split() == list(list_downstreams())
    with pytest.raises(SystemExit):
        main(["downstream", "tasks", "--help"])
    assert "List the registered downstream tasks" in capsys.readouterr().out
