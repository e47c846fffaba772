"""Out-of-range layer options refused before work (issue 23 item 2) and L's follow-ups:
CTC rates through metrics.rate, cache builds and hub exports staged with owned temp dirs,
hub info reports a checkpoint's verified digests."""
from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from speechssl.downstream.cache import FeatureCache
from speechssl.downstream.featurizer import Featurizer
from speechssl.downstream.task import FeaturizerConfig, RunContext
from speechssl.downstream.upstreams import load_upstream
from speechssl.registry import get_downstream


@pytest.fixture(scope="module")
def hubert():
    return load_upstream("random:hubert@tiny")


def _dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except OSError:
            pass
        pid += 1


def _stale(directory: Path, target: str) -> Path:
    host = socket.gethostname()
    p = directory / f".{target}.~{host}~{_dead_pid()}~abc123.tmp"
    p.mkdir(parents=True)
    (p / "layer_00.npy").write_bytes(b"partial")
    return p


@pytest.mark.parametrize("cached", [True, False])
@pytest.mark.parametrize("layer", [None, 9, -99])
def test_featurizer_layer_out_of_range_is_refused_before_work(tiny_corpus, tmp_path, hubert, cached, layer) -> None:
    n = hubert.num_layers
    spec = get_downstream("ks")
    bad = n + 4 if layer is None else layer
    ctx = RunContext(upstream=hubert, data_dir=Path(tiny_corpus), featurizer=FeaturizerConfig(layer=bad),
                     cache=FeatureCache(tmp_path / "cache") if cached else None)
    with pytest.raises(ValueError, match=rf"featurizer.layer={bad} is out of range: the upstream has {n} hidden"):
        spec.task_cls(spec.config_cls(), ctx)
    assert not (tmp_path / "cache").exists()  # refused before any feature was computed


def test_negative_layers_resolve_once_for_both_paths(tiny_corpus, tmp_path, hubert) -> None:
    n = hubert.num_layers
    spec = get_downstream("ks")
    for cache in (FeatureCache(tmp_path / "cache"), None):
        ctx = RunContext(upstream=hubert, data_dir=Path(tiny_corpus), featurizer=FeaturizerConfig(layer=-1),
                         cache=cache)
        task = spec.task_cls(spec.config_cls(), ctx)
        assert task.layer == n - 1
        assert task.feature_dim() == hubert.hidden_sizes[n - 1]
    from speechssl.downstream.featurizer import resolve_layer

    assert resolve_layer(-n, n) == 0 and resolve_layer(None, n) is None
    for bad in (n, -n - 1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="featurizer.layer"):
            resolve_layer(bad, n)
    with pytest.raises(ValueError, match=rf"featurizer.layer={n} is out of range"):
        Featurizer(n, layer=n)


def test_qbe_task_layer_out_of_range_is_refused(tiny_corpus, tmp_path, hubert) -> None:
    spec = get_downstream("qbe")
    cfg = spec.config_cls()
    cfg.layer = 40
    ctx = RunContext(upstream=hubert, data_dir=Path(tiny_corpus), cache=FeatureCache(tmp_path / "c"))
    with pytest.raises(ValueError, match="task.layer=40 is out of range"):
        spec.task_cls(cfg, ctx)


@pytest.mark.parametrize("task", ["pr", "sf", "asr"])
def test_ctc_rates_with_empty_references_use_metrics_rate(task) -> None:
    cls = get_downstream(task).task_cls
    sums = {"num_per": 1.0, "den_per": 0.0, "num_wer": 3.0, "den_wer": 0.0, "num_cer": 2.0, "den_cer": 4.0}
    out = cls.reduce_logs(object.__new__(cls), sums, 1.0)
    # one definition (jiwer's): no reference tokens -> the count of insertions, never x / 1e-12
    assert out["per"] == 1.0 and out["wer"] == 3.0 and out["cer"] == 0.5


def test_cache_build_removes_dead_staging_dirs_and_uses_the_umask(tmp_path, hubert) -> None:
    import numpy as np

    from speechssl import audio
    from speechssl.data.manifest import read_manifest, write_manifest

    audio.save(tmp_path / "a.wav", np.zeros(4000, np.float32))
    write_manifest(tmp_path / "t.tsv", tmp_path, [("a.wav", 4000)])
    manifest = read_manifest(tmp_path / "t.tsv")
    cache = FeatureCache(tmp_path / "cache")
    target = cache.directory(hubert, "t", manifest, None)
    stale = _stale(target.parent, target.name)
    old = os.umask(0o022)
    try:
        cached = cache.get(hubert, "t", manifest)
    finally:
        os.umask(old)
    assert not stale.exists(), "a killed build's staging dir was left behind"
    assert stat.S_IMODE(cached.directory.stat().st_mode) == 0o755
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_hub_export_removes_dead_staging_dirs(tmp_path, monkeypatch) -> None:
    from speechssl import hub
    from speechssl._hub.zoo import zoo_path

    monkeypatch.setenv("SPEECHSSL_HOME", str(tmp_path / "home"))
    up = load_upstream("random:hubert@tiny")
    src = hub.save(up.model, tmp_path / "m")
    dst = zoo_path("mine")
    stale = _stale(dst.parent, dst.name)
    old = os.umask(0o022)
    try:
        out = hub.export(src, "mine")
    finally:
        os.umask(old)
    assert not stale.exists() and (out / "model.safetensors").is_file()
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert sorted(p.name for p in dst.parent.iterdir()) == ["mine"]


def test_hub_info_of_a_checkpoint_reports_verified_digests(tmp_path) -> None:
    import torch

    from speechssl import hub
    from speechssl.train.checkpoint import save_checkpoint

    up = load_upstream("random:hubert@tiny")
    state = {"model": {f"encoder.{k}": v for k, v in up.model.state_dict().items()}, "num_updates": 1,
             "upstream": {"method": "hubert", "config": __import__("speechssl.config", fromlist=["x"]).to_dict(
                 up.model.config), "prefix": "encoder."}}
    save_checkpoint(state, tmp_path / "checkpoint_last.pt")
    assert hub.info(tmp_path / "checkpoint_last.pt").verified is True
    assert hub.info(tmp_path / "checkpoint_last.pt", verify=False).verified is None
    torch.save(state, tmp_path / "old.pt")  # written before digests existed: nothing to verify
    assert hub.info(tmp_path / "old.pt").verified is None
