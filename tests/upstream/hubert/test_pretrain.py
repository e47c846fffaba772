"""HuBERT pretraining: label alignment, logits, loss decrease, the Task on the shared Trainer."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from speechssl.data.manifest import Dictionary, write_dict, write_labels, write_manifest
from speechssl.upstream.hubert.config import HubertConfig, tiny
from speechssl.upstream.hubert.model import HubertPretrainModel
from speechssl.upstream.hubert.task import HubertPretrainTask, HubertTaskConfig
from speechssl.train.task import PretrainContext


def _small(**kw) -> HubertConfig:
    cfg = dataclasses.replace(tiny(), conv_feature_layers=((32, 10, 5),) + ((32, 3, 2),) * 4 + ((32, 2, 2),) * 2,
                              encoder_layers=2, encoder_embed_dim=48, encoder_ffn_embed_dim=96,
                              encoder_attention_heads=4, conv_pos=16, conv_pos_groups=4, final_dim=16)
    return dataclasses.replace(cfg, **kw)


def test_labels_at_several_rates_are_aligned_to_frames():
    rates = [50.0, 100.0, 25.0]
    model = HubertPretrainModel(_small(untie_final_proj=True), [1000, 1000, 1000], rates).eval()
    sizes = torch.tensor([16000, 9600])
    frames = model.upstream.output_lengths(sizes)  # [49, 29]
    label_lens = [torch.tensor([50, 30]), torch.tensor([99, 41]), torch.tensor([25, 15])]
    targets = [torch.arange(int(n.max())).repeat(2, 1) for n in label_lens]
    with torch.no_grad():
        out = model(torch.randn(2, 16000), sizes, targets, label_lens, mask=False)
    # row 1: 100 Hz labels cover ceil(41 / 2) = 21 frames, fewer than its 29 conv frames
    assert out["lengths"].tolist() == [int(frames[0]), 21]
    assert out["logits_masked"][0].shape[0] == 0
    t = torch.cat([torch.arange(int(n)) for n in out["lengths"]])
    for i, ratio in enumerate((1.0, 2.0, 0.5)):
        assert torch.equal(out["targets_unmasked"][i], torch.floor(t * ratio).long())
        assert out["logits_unmasked"][i].shape == (len(t), 1000)


def test_logits_are_cosine_similarities_over_temperature():
    torch.manual_seed(0)
    cfg = _small(untie_final_proj=False, logit_temp=0.1, dropout=0.0, attention_dropout=0.0, dropout_input=0.0)
    model = HubertPretrainModel(cfg, [7, 5], [50.0, 50.0]).eval()
    x = torch.randn(1, 8000)
    n = model.upstream.output_lengths(torch.tensor([8000]))
    targets = [torch.randint(0, 7, (1, int(n))), torch.randint(0, 5, (1, int(n)))]
    with torch.no_grad():
        out = model(x, torch.tensor([8000]), targets, [n, n], mask=False)
        final = model.upstream.extract_features(x).hidden_states[-1][0]  # (T, D)
        proj = model.final_proj(final)
        embs = model.label_embs_concat.split([7, 5])
    for i, e in enumerate(embs):
        expected = F.cosine_similarity(proj[:, None, :], e[None, :, :], dim=-1) / 0.1
        torch.testing.assert_close(out["logits_unmasked"][i], expected, atol=1e-4, rtol=1e-4)
        assert torch.equal(out["targets_unmasked"][i], targets[i][0])


def test_bad_class_ids_are_reported():
    model = HubertPretrainModel(_small(), [4], [50.0])
    targets = [torch.full((1, 30), 9)]
    with pytest.raises(ValueError, match=r"class ids must be in \[0, 4\)"):
        model(torch.randn(1, 8000), torch.tensor([8000]), targets, [torch.tensor([30])])
    with pytest.raises(ValueError, match="label rates"):
        HubertPretrainModel(_small(), [4, 4], [50.0])


def test_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    model = HubertPretrainModel(tiny(), [20], [50.0])
    sizes = torch.tensor([24000, 20000])
    x = torch.randn(2, 24000) * 0.1
    frames = model.upstream.output_lengths(sizes)
    targets = [torch.randint(0, 20, (2, int(frames.max())))]
    mask = model.upstream.sample_mask((2, int(frames.max())), frames, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(8):
        out = model(x, sizes, targets, [frames], mask=mask)
        loss = F.cross_entropy(out["logits_masked"][0], out["targets_masked"][0]) + 10 * out["features_pen"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert math.isfinite(losses[-1])
    assert losses[-1] < losses[0] - 0.2, losses


# --- the Task --------------------------------------------------------------------------------

def _write_corpus(root: Path, n_utts: int = 6, classes: int = 12, seed: int = 0) -> Path:
    """Noise waveforms with a manifest and 50 Hz '.km' labels for train and valid."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    (root / "wav").mkdir(parents=True)
    for split in ("train", "valid"):
        rows, labels = [], []
        for i in range(n_utts):
            n = int(rng.integers(8000, 24000))
            sf.write(root / "wav" / f"{split}{i}.wav", (rng.standard_normal(n) * 0.1).astype("float32"), 16000)
            rows.append((f"wav/{split}{i}.wav", n))
            frames = (n - 400) // 320 + 1
            labels.append(" ".join(str(v) for v in rng.integers(0, classes, frames)))
        write_manifest(root / f"{split}.tsv", root, rows)
        write_labels(root / f"{split}.km", labels)
    write_dict(root / "dict.km.txt", Dictionary([str(i) for i in range(classes)], [1] * classes))
    return root


def test_task_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="--data"):
        HubertPretrainTask(HubertTaskConfig(), PretrainContext("hubert", _small()))
    data = _write_corpus(tmp_path / "c")
    with pytest.raises(FileNotFoundError, match="dict.phn.txt"):
        HubertPretrainTask(HubertTaskConfig(data=str(data), labels=("phn",)), PretrainContext("hubert", _small()))
    with pytest.raises(ValueError, match="label_rate"):
        HubertPretrainTask(HubertTaskConfig(data=str(data), labels=("km", "km2"), label_rate=(50.0, 100.0, 25.0)),
                           PretrainContext("hubert", _small()))
    task = HubertPretrainTask(HubertTaskConfig(data=str(data)), PretrainContext("hubert", _small()))
    with pytest.raises(FileNotFoundError, match="test.tsv"):
        task.dataset("test")


def test_task_loss_and_logs(tmp_path):
    data = _write_corpus(tmp_path / "c")
    task = HubertPretrainTask(HubertTaskConfig(data=str(data), pred_nomask_weight=0.5), PretrainContext("hubert", _small()))
    model = task.build_model()
    ds = task.dataset("train")
    batch = task.collate([ds[i] for i in range(3)])
    torch.manual_seed(0)
    loss, sample_size, logs = task.loss(model, batch)
    assert sample_size == logs["count_m_0"] + logs["count_u_0"] > 0
    expected = logs["loss_m_0"] + 0.5 * logs["loss_u_0"] + logs["features_pen"] * 10
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    reduced = task.reduce_logs(logs, sample_size)
    assert reduced["loss_m_0"] == pytest.approx(logs["loss_m_0"] / logs["count_m_0"])
    assert 0.0 <= reduced["acc_m_0"] <= 1.0 and "count_m_0" not in reduced
    assert task.upstream(model) is model.upstream and task.upstream_config() == task.model_cfg


def _train(task: HubertPretrainTask, exp: Path, updates: int) -> dict:
    from speechssl.train.config import OptimConfig, TrainerConfig
    from speechssl.train.trainer import Trainer

    cfg = TrainerConfig(max_updates=updates, max_tokens=48_000, optim=OptimConfig(lr=1e-3), progress_bar=False,
                        tensorboard=False, log_every_updates=1, save_every_updates=updates)
    trainer = Trainer(task, cfg, exp)
    trainer.fit()
    return torch.load(exp / "checkpoint_last.pt", weights_only=True, map_location="cpu")


def test_task_trains_with_the_shared_trainer(tmp_path):
    data = _write_corpus(tmp_path / "c")
    task = HubertPretrainTask(HubertTaskConfig(data=str(data), max_sample_size=16000), PretrainContext("hubert", _small()))
    state = _train(task, tmp_path / "exp", 3)
    assert state["upstream"]["method"] == "hubert" and state["upstream"]["prefix"] == "upstream."
    assert "upstream.encoder.pos_conv.0.weight_g" in state["model"] and "label_embs_concat" in state["model"]


def test_task_on_the_tiny_corpus(tmp_path, request):
    try:
        corpus = Path(request.getfixturevalue("tiny_corpus"))
    except pytest.FixtureLookupError:
        pytest.skip("tiny_corpus fixture not available")
    from speechssl.data.manifest import read_manifest

    src = corpus / "read"  # the read-speech subset is the pretraining data (corpus README)
    assert (src / "train.tsv").is_file(), f"no read/train.tsv under {corpus}"
    labels = tmp_path / "labels"
    labels.mkdir()
    rng = np.random.default_rng(0)
    for split in ("train", "valid"):
        m = read_manifest(src / f"{split}.tsv")
        write_labels(labels / f"{split}.km", [" ".join(map(str, rng.integers(0, 8, max((n - 400) // 320 + 1, 1))))
                                              for n in m.sizes])
    write_dict(labels / "dict.km.txt", Dictionary([str(i) for i in range(8)], [1] * 8))
    task = HubertPretrainTask(HubertTaskConfig(data=str(src), label_dir=str(labels), max_sample_size=32000),
                              PretrainContext("hubert", _small()))
    state = _train(task, tmp_path / "exp", 2)
    assert state["upstream"]["method"] == "hubert"


def test_pretrain_cli_config_for_hubert(tmp_path):
    from speechssl.commands.pretrain import build_config
    from speechssl.registry import get_method

    tree = build_config(get_method("hubert"), "tiny", data=tmp_path,
                        overrides=["model.encoder_layers=2", "task.labels=[km]", "trainer.max_updates=5"])
    assert tree.task.data == str(tmp_path) and tree.model.encoder_layers == 2
    assert tree.trainer.max_updates == 5 and tree.trainer.optim.lr == 2e-3  # tiny trainer preset


def test_bf16_autocast_keeps_logits_in_float32():
    model = HubertPretrainModel(_small(), [20], [50.0])
    sizes = torch.tensor([16000, 12000])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 16000), sizes, [torch.randint(0, 20, (2, 49))], [torch.tensor([49, 37])])
        loss = F.cross_entropy(out["logits_masked"][0], out["targets_masked"][0]) + out["features_pen"]
    loss.backward()
    assert out["logits_masked"][0].dtype == torch.float32 and math.isfinite(loss.item())
