"""SSAMBA pretraining Task: loss and logs, falling loss on the shared Trainer, CLI config, hub round trip."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from speechssl.data.manifest import write_manifest
from speechssl.upstream.ssamba.config import nano
from speechssl.upstream.ssamba.task import SsambaPretrainTask, SsambaTaskConfig
from speechssl.train.task import PretrainContext


def _tone(n: int, rng: np.random.Generator) -> np.ndarray:
    """Harmonic tones with a gliding pitch and a syllable-like envelope: structure to predict."""
    t = np.arange(n) / 16000
    f0 = rng.uniform(100, 300) * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    wav = sum(np.sin(k * phase) / k for k in range(1, 6))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t)
    return (0.1 * wav * env + 0.003 * rng.standard_normal(n)).astype("float32")


def write_corpus(root: Path, n_utts: int = 8, seed: int = 0) -> Path:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    (root / "wav").mkdir(parents=True)
    for split in ("train", "valid"):
        rows = []
        for i in range(n_utts if split == "train" else 2):
            n = int(rng.integers(12000, 24000))
            sf.write(root / "wav" / f"{split}{i}.wav", _tone(n, rng), 16000)
            rows.append((f"wav/{split}{i}.wav", n))
        write_manifest(root / f"{split}.tsv", root, rows)
    return root


def test_task_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="--data"):
        SsambaPretrainTask(SsambaTaskConfig(), PretrainContext("ssamba", nano()))
    with pytest.raises(FileNotFoundError, match="no such directory"):
        SsambaPretrainTask(SsambaTaskConfig(data=str(tmp_path / "nope")), PretrainContext("ssamba", nano()))
    with pytest.raises(ValueError, match="mse_weight"):
        SsambaPretrainTask(SsambaTaskConfig(data=str(tmp_path), nce_weight=0.0, mse_weight=0.0), PretrainContext("ssamba", nano()))
    task = SsambaPretrainTask(SsambaTaskConfig(data=str(tmp_path)), PretrainContext("ssamba", nano()))
    with pytest.raises(FileNotFoundError, match="test.tsv"):
        task.dataset("test")


def test_task_loss_and_logs(tmp_path):
    data = write_corpus(tmp_path / "c")
    task = SsambaPretrainTask(SsambaTaskConfig(data=str(data), mask_mode="random"), PretrainContext("ssamba", nano()))
    torch.manual_seed(0)
    model = task.build_model()
    ds = task.dataset("train")
    batch = task.collate([ds[i] for i in range(3)])
    loss, sample_size, logs = task.loss(model, batch)
    assert sample_size == logs["masked"] > 0
    assert loss.item() == pytest.approx(logs["nce"] + 10 * logs["mse"], rel=1e-5)
    # the same batch draws the same masks (seeds come from the items)
    assert task.loss(model, batch)[0].item() == pytest.approx(loss.item(), rel=1e-6)
    loss.backward()
    reduced = task.reduce_logs(logs, sample_size)
    assert reduced["nce"] == pytest.approx(logs["nce"] / logs["masked"])
    assert 0.0 <= reduced["acc"] <= 1.0
    # InfoNCE of an untrained model is near log(#candidates per utterance)
    per_utt = sample_size / 3
    assert 0.3 * math.log(per_utt) < reduced["nce"] < 3 * math.log(per_utt)
    assert task.upstream(model) is model.upstream and task.upstream_config() == task.model_cfg


def _train(task, exp: Path, updates: int, lr: float = 2e-3):
    from speechssl.train.config import OptimConfig, ScheduleConfig, TrainerConfig
    from speechssl.train.trainer import Trainer

    cfg = TrainerConfig(max_updates=updates, max_tokens=4 * 24000, optim=OptimConfig(lr=lr, weight_decay=0.0),
                        schedule=ScheduleConfig(name="constant", warmup_updates=5), progress_bar=False,
                        tensorboard=False, log_every_updates=1, save_every_updates=updates,
                        validate_every_updates=0, validate_every_epochs=0)
    Trainer(task, cfg, exp).fit()
    rows = [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return torch.load(exp / "checkpoint_last.pt", weights_only=True, map_location="cpu"), rows


def test_nano_pretrains_with_falling_loss(tmp_path):
    data = write_corpus(tmp_path / "c")
    task = SsambaPretrainTask(SsambaTaskConfig(data=str(data), max_sample_size=24000), PretrainContext("ssamba", nano()))
    state, rows = _train(task, tmp_path / "exp", 40)
    losses = [r["loss"] for r in rows if r.get("split", "train") == "train" and "loss" in r]
    assert len(losses) == 40
    first, last = float(np.mean(losses[:5])), float(np.mean(losses[-5:]))
    assert last < 0.8 * first, (first, last)
    assert state["upstream"]["method"] == "ssamba" and state["upstream"]["prefix"] == "upstream."
    assert "upstream.layers.0.mixer.A_b_log" in state["model"] and "mask_embed" in state["model"]


def test_pretrained_upstream_round_trips_through_the_hub(tmp_path):
    from speechssl import hub
    from speechssl.upstream.ssamba.model import SsambaModel

    torch.manual_seed(0)
    model = SsambaModel(dataclasses.replace(nano(), cls_tokens=2)).eval()
    hub.save(model, tmp_path / "m")
    loaded = hub.load(tmp_path / "m")
    assert isinstance(loaded, SsambaModel) and loaded.config == model.config and not loaded.training
    wavs = [torch.randn(9000) * 0.1, torch.randn(5000) * 0.1]
    with torch.no_grad():
        a, b = model(wavs), loaded(wavs)
    torch.testing.assert_close(a["last_hidden_state"], b["last_hidden_state"])


def test_pretrain_cli_config_for_ssamba(tmp_path):
    from speechssl.commands.pretrain import build_config
    from speechssl.registry import get_method

    tree = build_config(get_method("ssamba"), "nano", data=tmp_path,
                        overrides=["model.depth=1", "task.mask_mode=random", "trainer.max_updates=5"])
    assert tree.task.data == str(tmp_path) and tree.model.depth == 1 and tree.task.mask_mode == "random"
    assert tree.trainer.max_updates == 5 and tree.trainer.optim.lr == 2e-3      # nano trainer preset
    base = build_config(get_method("ssamba"), "base", data=tmp_path)
    assert base.model.embed_dim == 768 and base.trainer.optim.lr == 1e-4        # SSAST/SSAMBA recipe


def test_task_on_the_tiny_corpus(tmp_path, request):
    try:
        corpus = Path(request.getfixturevalue("tiny_corpus"))
    except pytest.FixtureLookupError:
        pytest.skip("tiny_corpus fixture not available")
    src = corpus / "read"  # the read-speech subset is the pretraining data (corpus README)
    assert (src / "train.tsv").is_file(), f"no read/train.tsv under {corpus}"
    task = SsambaPretrainTask(SsambaTaskConfig(data=str(src), max_sample_size=32000), PretrainContext("ssamba", nano()))
    state, rows = _train(task, tmp_path / "exp", 2)
    assert state["upstream"]["method"] == "ssamba" and all(math.isfinite(r["loss"]) for r in rows if "loss" in r)
