"""The hub with its neighbours: Trainer checkpoints of a real HuBERT pretraining run, and the
downstream runner's upstream resolution of converted models by path and by zoo name."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechssl import hub
from speechssl.data.manifest import Dictionary, write_dict, write_labels, write_manifest
from speechssl.upstream.hubert.model import HubertModel
from speechssl.train.task import PretrainContext
from tests.convert.conftest import max_diff, random_model, small_config
from tests.convert.fairseq_layout import hubert_checkpoint


def _noise_corpus(root: Path, n_utts: int = 4, classes: int = 5) -> Path:
    """train/valid manifests of noise with random 50 Hz k-means labels."""
    rng = np.random.default_rng(0)
    (root / "wav").mkdir(parents=True)
    for split in ("train", "valid"):
        rows, labels = [], []
        for i in range(n_utts):
            n = int(rng.integers(8000, 16000))
            sf.write(root / "wav" / f"{split}{i}.wav", (rng.standard_normal(n) * 0.1).astype("float32"), 16000)
            rows.append((f"wav/{split}{i}.wav", n))
            labels.append(" ".join(str(v) for v in rng.integers(0, classes, (n - 400) // 320 + 1)))
        write_manifest(root / f"{split}.tsv", root, rows)
        write_labels(root / f"{split}.km", labels)
    write_dict(root / "dict.km.txt", Dictionary([str(i) for i in range(classes)], [1] * classes))
    return root


def test_trainer_checkpoint_of_hubert_pretraining(tmp_path: Path) -> None:
    from speechssl.train.config import OptimConfig, TrainerConfig
    from speechssl.train.trainer import Trainer
    from speechssl.upstream.hubert.task import HubertPretrainTask, HubertTaskConfig

    data = _noise_corpus(tmp_path / "corpus")
    model_cfg = small_config(conv_feature_layers=((16, 10, 5),) + ((16, 3, 2),) * 4 + ((16, 2, 2),) * 2)
    task = HubertPretrainTask(HubertTaskConfig(data=str(data), max_sample_size=16000), PretrainContext("hubert", model_cfg))
    cfg = TrainerConfig(max_updates=2, max_tokens=48_000, optim=OptimConfig(lr=1e-3), progress_bar=False,
                        tensorboard=False, log_every_updates=1, save_every_updates=2)
    Trainer(task, cfg, tmp_path / "exp").fit()
    ckpt = tmp_path / "exp" / "checkpoint_last.pt"
    state = torch.load(ckpt, weights_only=True, map_location="cpu")
    trained = task.build_model()
    trained.load_state_dict(state["model"])
    upstream = task.upstream(trained).eval()

    loaded = hub.load(ckpt)
    assert type(loaded) is HubertModel and loaded.config == model_cfg
    wavs = [torch.randn(3000, generator=torch.Generator().manual_seed(1)), torch.randn(2100)]
    assert max_diff(upstream, loaded, wavs) == 0.0
    # and into the zoo, loadable by name
    hub.export(ckpt, "pretrained-tiny")
    assert max_diff(upstream, hub.load("pretrained-tiny"), wavs) == 0.0


def test_downstream_resolves_converted_models_by_path_and_name(tmp_path: Path) -> None:
    upstreams = pytest.importorskip("speechssl.downstream.upstreams")
    model = random_model(HubertModel)
    torch.save(hubert_checkpoint(model), tmp_path / "hubert_fairseq.pt")
    converted = hub.convert(tmp_path / "hubert_fairseq.pt", tmp_path / "hubert_converted")
    hub.export(converted, "hubert-converted")
    by_path = upstreams.load_upstream(str(converted))
    by_name = upstreams.load_upstream("hubert-converted")
    by_ckpt = upstreams.load_upstream("hubert", ckpt=tmp_path / "hubert_fairseq.pt")
    assert by_path.method == by_name.method == by_ckpt.method == "hubert"
    assert by_path.hash == by_name.hash == by_ckpt.hash
    wavs = [torch.randn(2000, generator=torch.Generator().manual_seed(2))]
    assert max_diff(model, by_name.model, wavs) == 0.0
