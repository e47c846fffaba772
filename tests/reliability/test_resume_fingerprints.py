"""Every resumable step fingerprints the content it depends on (issue 23 item 1).

A rerun after the model, the features, the k-means model, the labels or an option changed
must neither resume (mixing rows of two sources) nor skip: it starts again, with a log line
that names what changed. Each test fails on a fingerprint that holds paths only.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from torch import nn

from speechssl.cli import main as cli
from speechssl.cluster import KMeansModel
from speechssl.data.manifest import read_labels, write_labels, write_manifest
from speechssl.features import UpstreamFeatureSource, dump_features, read_features
from tests.features.kaldi_ref import speechlike

_FP_LOGGER = "speechssl.fingerprint"


class _Upstream(nn.Module):
    """Upstream contract, strided conv (frames independent of context)."""

    method = "test"
    downsample_rate = 320

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv1d(1, 4, kernel_size=320, stride=320)
        self.hidden_sizes = [4]

    def forward(self, wavs):
        lengths = torch.tensor([len(w) for w in wavs])
        batch = nn.utils.rnn.pad_sequence(list(wavs), batch_first=True)
        h = self.conv(batch.unsqueeze(1)).transpose(1, 2)
        return {"hidden_states": [h], "last_hidden_state": h, "lengths": lengths // 320}


class _StopAt:
    """A feature source that raises KeyboardInterrupt at call ``stop_at`` (a killed run)."""

    def __init__(self, source, stop_at: int) -> None:
        self.source, self.stop_at, self.calls = source, stop_at, 0
        self.dim, self.frame_rate_hz, self.sample_rate = source.dim, source.frame_rate_hz, 16000.0

    def describe(self):
        return self.source.describe()

    def __call__(self, wav):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return self.source(wav)


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    root = tmp_path / "wav"
    root.mkdir()
    rows = []
    for i in range(5):
        wav = speechlike(0.2 + 0.05 * i, seed=i)
        soundfile.write(root / f"u{i}.wav", wav, 16000, subtype="FLOAT")
        rows.append((f"u{i}.wav", len(wav)))
    write_manifest(tmp_path / "m" / "train.tsv", root, rows)
    return tmp_path / "m" / "train.tsv"


def _fresh(manifest: Path, out: Path, seed: int) -> np.ndarray:
    dump_features(manifest, out, UpstreamFeatureSource(_Upstream(seed), 0, name="P"), progress=False)
    return np.asarray(read_features(out, "train")[0])


def test_killed_upstream_dump_does_not_resume_after_the_model_changed(manifest, tmp_path, caplog) -> None:
    out = tmp_path / "feats"
    killed = _StopAt(UpstreamFeatureSource(_Upstream(0), 0, name="P"), stop_at=4)
    with pytest.raises(KeyboardInterrupt):
        dump_features(manifest, out, killed, progress=False, checkpoint_interval_s=0)
    # the model at the same path P is rewritten with other weights, then the command is rerun
    with caplog.at_level(logging.WARNING, logger=_FP_LOGGER):
        dump_features(manifest, out, UpstreamFeatureSource(_Upstream(1), 0, name="P"), progress=False)
    assert "source.model_sha256" in caplog.text and "starting the shard again" in caplog.text
    np.testing.assert_array_equal(np.asarray(read_features(out, "train")[0]),
                                  _fresh(manifest, tmp_path / "ref", seed=1))


def test_finished_upstream_dump_is_redone_after_the_model_changed(manifest, tmp_path, caplog) -> None:
    out = tmp_path / "feats"
    first = _fresh(manifest, out, seed=0)
    with caplog.at_level(logging.WARNING, logger=_FP_LOGGER):
        dump_features(manifest, out, UpstreamFeatureSource(_Upstream(1), 0, name="P"), progress=False)
    assert "was made from other inputs" in caplog.text and "dumping it again" in caplog.text
    second = np.asarray(read_features(out, "train")[0])
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(second, _fresh(manifest, tmp_path / "ref", seed=1))
    meta = json.loads((out / "train_0_1.json").read_text())
    assert len(meta["fingerprint"]["source"]["model_sha256"]) == 64
    assert len(meta["fingerprint"]["manifest_sha256"]) == 64


def test_same_model_resumes_silently(manifest, tmp_path, caplog) -> None:
    out = tmp_path / "feats"
    with pytest.raises(KeyboardInterrupt):
        dump_features(manifest, out, _StopAt(UpstreamFeatureSource(_Upstream(0), 0, name="P"), 4),
                      progress=False, checkpoint_interval_s=0)
    again = _StopAt(UpstreamFeatureSource(_Upstream(0), 0, name="P"), 99)
    with caplog.at_level(logging.WARNING, logger=_FP_LOGGER):
        dump_features(manifest, out, again, progress=False)
    assert again.calls == 2 and not caplog.text  # resumed after the 3 finished rows
    np.testing.assert_array_equal(np.asarray(read_features(out, "train")[0]),
                                  _fresh(manifest, tmp_path / "ref", seed=0))


def _features(feat_dir: Path, lengths: list[int], seed: int, nshard: int = 2) -> None:
    rng = np.random.default_rng(seed)
    per = -(-len(lengths) // nshard)
    feat_dir.mkdir(parents=True, exist_ok=True)
    for r in range(nshard):
        n = sum(lengths[r * per:(r + 1) * per])
        np.save(feat_dir / f"train_{r}_{nshard}.npy", rng.normal(size=(n, 3)).astype(np.float32))
        (feat_dir / f"train_{r}_{nshard}.len").write_text("".join(f"{x}\n" for x in lengths[r * per:(r + 1) * per]))


def _fit(tmp_path: Path, km: Path, k: int = 3, seed: int = 0) -> int:
    return cli(["kmeans", "fit", "--feat-dir", str(tmp_path / "feat"), "--split", "train", "--nshard", "2",
                "--n-clusters", str(k), "--out", str(km), "--seed", str(seed)])


def _label(tmp_path: Path, km: Path) -> int:
    return cli(["dump-labels", "--feat-dir", str(tmp_path / "feat"), "--split", "train", "--nshard", "2",
                "--km", str(km), "--out", str(tmp_path / "lab")])


def test_kmeans_fit_refits_when_features_or_options_change(tmp_path, capfd) -> None:
    lengths = [20, 30, 25, 15]
    _features(tmp_path / "feat", lengths, seed=0)
    km = tmp_path / "km.safetensors"
    assert _fit(tmp_path, km) == 0
    first = KMeansModel.load(km).centroids.clone()
    stamp = km.stat().st_mtime_ns
    capfd.readouterr()
    assert _fit(tmp_path, km) == 0
    assert km.stat().st_mtime_ns == stamp and "skipping the fit" in capfd.readouterr().err  # same inputs
    _features(tmp_path / "feat", lengths, seed=1)  # new features, same paths and lengths
    os.utime(tmp_path / "feat" / "train_0_2.npy", ns=(1, 1))
    assert _fit(tmp_path, km) == 0
    err = capfd.readouterr().err
    assert "made from other inputs (changed: features)" in err and "fitting it again" in err
    assert not torch.equal(KMeansModel.load(km).centroids, first)
    assert _fit(tmp_path, km, k=4) == 0
    assert "n_clusters" in capfd.readouterr().err and KMeansModel.load(km).n_clusters == 4


def _units(tmp_path: Path, km: Path) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([np.load(tmp_path / "feat" / f"train_{r}_2.npy") for r in range(2)])
    units = np.array(" ".join(read_labels(tmp_path / "lab" / "train.km")).split(), dtype=np.int64)
    return units, KMeansModel.load(km).predict(x).numpy()


def test_dump_labels_relabels_when_the_kmeans_model_or_features_change(tmp_path, capfd) -> None:
    lengths = [20, 30, 25, 15]
    _features(tmp_path / "feat", lengths, seed=0)
    km_a, km_b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert _fit(tmp_path, km_a, k=3) == 0 and _fit(tmp_path, km_b, k=5, seed=3) == 0
    assert _label(tmp_path, km_a) == 0
    np.testing.assert_array_equal(*_units(tmp_path, km_a))
    capfd.readouterr()
    assert _label(tmp_path, km_b) == 0  # another k-means model: never keep the old units
    err = capfd.readouterr().err
    assert "kmeans_sha256" in err and err.count("labelling the shard again") == 2
    np.testing.assert_array_equal(*_units(tmp_path, km_b))
    assert _label(tmp_path, km_b) == 0
    assert capfd.readouterr().err.count("skipping") == 2  # same inputs: skipped
    _features(tmp_path / "feat", lengths, seed=7)  # features rewritten in place (same lengths)
    for r in range(2):
        os.utime(tmp_path / "feat" / f"train_{r}_2.npy", ns=(r + 5, r + 5))
    assert _label(tmp_path, km_b) == 0
    assert capfd.readouterr().err.count("labelling the shard again") == 2
    np.testing.assert_array_equal(*_units(tmp_path, km_b))


def test_dump_labels_fingerprint_uses_a_dumped_shards_own_fingerprint(manifest, tmp_path, capfd) -> None:
    """Features from `features dump`: their .json fingerprint (model digest) identifies them."""
    feat = tmp_path / "feat"
    for r in range(2):
        dump_features(manifest, feat, UpstreamFeatureSource(_Upstream(0), 0, name="P"), rank=r, nshard=2,
                      progress=False)
    km = tmp_path / "km.safetensors"
    assert _fit(tmp_path, km, k=2) == 0 and _label(tmp_path, km) == 0
    for r in range(2):  # the model at P changed: the dump redoes the shards, the labels follow
        dump_features(manifest, feat, UpstreamFeatureSource(_Upstream(1), 0, name="P"), rank=r, nshard=2,
                      progress=False)
    capfd.readouterr()
    assert _fit(tmp_path, km, k=2) == 0 and _label(tmp_path, km) == 0
    err = capfd.readouterr().err
    assert "fitting it again" in err and err.count("labelling the shard again") == 2
    np.testing.assert_array_equal(*_units(tmp_path, km))


def test_lda_refits_when_its_labels_change(tmp_path, caplog) -> None:
    pytest.importorskip("gensim")
    from speechssl.cluster.lda import LdaOptions, TopicModel, run_lda

    rng = np.random.default_rng(0)
    write_labels(tmp_path / "train.km", [" ".join(map(str, rng.integers(0, 6, 12))) for _ in range(20)])
    options = LdaOptions(num_topics=2, passes=1)
    run_lda(tmp_path, tmp_path / "lda", ["train"], options=options)
    write_labels(tmp_path / "train.km", [" ".join(map(str, rng.integers(6, 12, 12))) for _ in range(20)])
    with caplog.at_level(logging.WARNING, logger=_FP_LOGGER):
        state = run_lda(tmp_path, tmp_path / "lda", ["train"], options=options)
    assert "was made from other inputs" in caplog.text and "fitting LDA again" in caplog.text
    vocab = TopicModel.load(tmp_path / "lda" / "lda.safetensors").vocab
    assert state["fit"]["vocabulary"] == len(vocab) and all(int(w.split("_")[0]) >= 6 for w in vocab)
