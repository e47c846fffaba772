"""`speechssl kmeans fit` + `speechssl dump-labels` end to end on a small feature dump."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from speechssl.cli import main as cli
from speechssl.cluster import KMeansModel
from speechssl.data.manifest import read_dict, read_labels


def _dump(feat_dir: Path, split: str, nshard: int, lengths: list[int], dim: int = 5, seed: int = 0) -> np.ndarray:
    """Write a fairseq-layout feature dump; returns all frames concatenated in manifest order."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 4, size=(6, dim))
    frames = [means[rng.integers(0, 6, size=n)] + rng.normal(0, 0.5, size=(n, dim)) for n in lengths]
    per = -(-len(lengths) // nshard)
    feat_dir.mkdir(parents=True, exist_ok=True)
    for r in range(nshard):
        utts = frames[r * per:(r + 1) * per]
        np.save(feat_dir / f"{split}_{r}_{nshard}.npy", np.concatenate(utts).astype(np.float32))
        (feat_dir / f"{split}_{r}_{nshard}.len").write_text("".join(f"{len(u)}\n" for u in utts))
    return np.concatenate(frames).astype(np.float32)


def test_fit_and_dump_labels_end_to_end(tmp_path) -> None:
    lengths = [37, 52, 18, 64, 41, 29, 55]
    x = _dump(tmp_path / "feat", "train", 3, lengths)
    km = tmp_path / "km.safetensors"
    assert cli(["kmeans", "fit", "--feat-dir", str(tmp_path / "feat"), "--split", "train", "--nshard", "3",
                "--n-clusters", "6", "--out", str(km), "--seed", "1"]) == 0
    model = KMeansModel.load(km)
    assert (model.n_clusters, model.dim, model.n_samples) == (6, 5, sum(lengths))

    lab = tmp_path / "lab"
    assert cli(["dump-labels", "--feat-dir", str(tmp_path / "feat"), "--split", "train", "--nshard", "3",
                "--km", str(km), "--out", str(lab)]) == 0
    rows = read_labels(lab / "train.km", expected_rows=len(lengths))
    assert [len(r.split()) for r in rows] == lengths
    units = np.array(" ".join(rows).split(), dtype=np.int64)
    np.testing.assert_array_equal(units, model.predict(x).numpy())
    d = read_dict(lab / "dict.km.txt")
    assert d.symbols == [str(i) for i in range(6)]
    assert d.counts == np.bincount(units, minlength=6).tolist()

    # Rerun: finished shards are skipped (files untouched).
    stamp = (lab / "train_1_3.km").stat().st_mtime_ns
    assert cli(["dump-labels", "--feat-dir", str(tmp_path / "feat"), "--split", "train", "--nshard", "3",
                "--km", str(km), "--out", str(lab)]) == 0
    assert (lab / "train_1_3.km").stat().st_mtime_ns == stamp


def test_dump_labels_shard_by_shard_merges_at_the_end(tmp_path) -> None:
    _dump(tmp_path / "feat", "valid", 2, [10, 20, 30])
    km = tmp_path / "km.safetensors"
    KMeansModel(torch.randn(4, 5)).save(km)
    args = ["dump-labels", "--feat-dir", str(tmp_path / "feat"), "--split", "valid", "--nshard", "2",
            "--km", str(km), "--out", str(tmp_path / "lab")]
    assert cli(args + ["--shard", "1"]) == 0
    assert (tmp_path / "lab" / "valid_1_2.km").is_file() and not (tmp_path / "lab" / "valid.km").exists()
    assert cli(args + ["--shard", "0"]) == 0
    assert len(read_labels(tmp_path / "lab" / "valid.km", expected_rows=3)) == 3


def test_dump_labels_errors_name_the_problem(tmp_path, speechssl_logs) -> None:
    caplog = speechssl_logs
    _dump(tmp_path / "feat", "valid", 2, [10, 20, 30], dim=5)
    km7 = tmp_path / "km7.safetensors"
    KMeansModel(torch.randn(4, 7), feature="hubert layer 9").save(km7)
    base = ["dump-labels", "--feat-dir", str(tmp_path / "feat"), "--split", "valid", "--out", str(tmp_path / "lab")]
    assert cli(base + ["--nshard", "2", "--km", str(km7)]) == 1
    assert "dimension 5 but the k-means model has dimension 7 (hubert layer 9)" in caplog.text
    km5 = tmp_path / "km5.safetensors"
    KMeansModel(torch.randn(4, 5)).save(km5)
    caplog.clear()
    assert cli(base + ["--nshard", "4", "--km", str(km5)]) == 1
    assert "valid_0_4.npy" in caplog.text and "valid_3_4.len" in caplog.text
    (tmp_path / "feat" / "valid_1_2.len").write_text("10\n")
    caplog.clear()
    assert cli(base + ["--nshard", "2", "--km", str(km5), "--shard", "1"]) == 1
    assert "valid_1_2.len lists 1 utterances with 10 frames" in caplog.text


def test_fit_percent_samples_utterances(tmp_path) -> None:
    lengths = [20] * 40
    _dump(tmp_path / "feat", "train", 2, lengths)
    km = tmp_path / "km.safetensors"
    assert cli(["kmeans", "fit", "--feat-dir", str(tmp_path / "feat"), "--split", "train", "--nshard", "2",
                "--n-clusters", "4", "--out", str(km), "--percent", "0.1"]) == 0
    assert KMeansModel.load(km).n_samples == 2 * 2 * 20  # ceil(20 * 0.1) = 2 utterances per shard


def test_torchrun_two_process_fit_equals_single_process(tmp_path) -> None:
    # ~6 s of CPU on a quiet machine (three interpreter start-ups); the real time grows with load.
    lengths = [int(n) for n in np.random.default_rng(3).integers(50, 400, size=24)]
    _dump(tmp_path / "feat", "train", 4, lengths, dim=6, seed=3)
    args = ["kmeans", "fit", "--feat-dir", str(tmp_path / "feat"), "--split", "train", "--nshard", "4",
            "--n-clusters", "8", "--seed", "5", "--init-size", "500", "--n-init", "2"]
    assert cli(args + ["--out", str(tmp_path / "single.safetensors")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "speechssl.cli", *args, "--out", str(tmp_path / "dist.safetensors")],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = KMeansModel.load(tmp_path / "single.safetensors")
    dist = KMeansModel.load(tmp_path / "dist.safetensors")
    assert single.n_iter > 0 and dist.n_samples == single.n_samples == sum(lengths)
    torch.testing.assert_close(dist.centroids, single.centroids, rtol=1e-5, atol=1e-5)
    # The inertia is summed from per-row float32 GEMM values, whose rounding depends on how rows
    # are chunked; ~1e-6 relative here.
    assert dist.inertia == pytest.approx(single.inertia, rel=1e-5)
