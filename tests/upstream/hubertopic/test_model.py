"""HuBERTopic: the topic head and loss against a hand computation, padding invariance, the task on its example."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from speechssl.nn.pooling import AttentionPooling, masked_mean
from speechssl.train.task import PretrainContext
from speechssl.upstream.hubertopic.config import HubertopicConfig, tiny
from speechssl.upstream.hubertopic.example import write_example
from speechssl.upstream.hubertopic.model import HubertopicPretrainModel
from speechssl.upstream.hubertopic.task import HubertopicPretrainTask


def _small(**kw) -> HubertopicConfig:
    return dataclasses.replace(tiny(), encoder_layers=2, dropout=0.0, attention_dropout=0.0, dropout_input=0.0,
                               **kw)


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_pooling_ignores_padding(pooling: str) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 5, generator=g)
    lengths = torch.tensor([7, 4, 0])
    pool = AttentionPooling(5) if pooling == "attention" else (lambda h, n: masked_mean(h, n))
    with torch.no_grad():
        ref = pool(x, lengths)
        noisy = x.clone()
        noisy[1, 4:] = float("nan")
        noisy[2] = 1e30
        longer = torch.cat([noisy, torch.full((3, 5, 5), float("inf"))], dim=1)
        got = pool(longer, lengths)
        alone = pool(x[1:2, :4], lengths[1:2])
    assert torch.equal(got[2], torch.zeros(5))
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(alone, ref[1:2], rtol=0, atol=1e-6)
    if pooling == "mean":
        torch.testing.assert_close(ref[1], x[1, :4].mean(0))
    else:
        w = torch.softmax(x[1, :4] @ pool.score.weight[0] + pool.score.bias[0], dim=0)
        torch.testing.assert_close(ref[1], (w[:, None] * x[1, :4]).sum(0))


def test_topic_logits_of_an_utterance_do_not_depend_on_its_batch() -> None:
    torch.manual_seed(0)
    model = HubertopicPretrainModel(_small(topic_pooling="attention", topic_layer=1), [6], [50.0]).eval()
    g = torch.Generator().manual_seed(1)
    wavs = [torch.randn(8000, generator=g), torch.randn(4800, generator=g)]
    source = torch.zeros(2, 8000)
    source[0], source[1, :4800] = wavs[0], wavs[1]
    units = torch.randint(0, 6, (2, 25), generator=g)
    with torch.no_grad():
        both = model(source, torch.tensor([8000, 4800]), [units], [torch.tensor([25, 15])], mask=False)
        alone = model(wavs[1][None], torch.tensor([4800]), [units[1:, :15]], [torch.tensor([15])], mask=False)
    assert both["topic_lengths"].tolist() == [24, 14]
    torch.testing.assert_close(both["topic_logits"][1:], alone["topic_logits"], rtol=0, atol=1e-5)


def test_task_loss_is_hubert_loss_plus_weighted_topic_ce(tmp_path: Path) -> None:
    """The task's loss, rebuilt by hand from the model's logits and hidden states."""
    cfg = write_example(tmp_path)
    model_cfg = _small(topic_weight=0.7, topic_layer=-1)
    task = HubertopicPretrainTask(cfg, PretrainContext("hubertopic", model_cfg))
    torch.manual_seed(0)
    model = task.build_model().eval()  # no dropout; the mask is drawn from a fixed generator below
    data = task.dataset("train")
    batch = task.collate([data[i] for i in range(3)])
    g_state = torch.random.get_rng_state()
    loss, size, logs = task.loss(model, batch)
    torch.random.set_rng_state(g_state)
    out = model(batch["wav"], batch["lengths"], [batch["km"]], [batch["km_lengths"]])
    # unit part: summed CE over masked frames + feature penalty * sample size
    logits, target = out["logits_masked"][0], out["targets_masked"][0]
    unit_ce = -(logits.log_softmax(-1).gather(1, target[:, None])).sum()
    n_frames = target.numel()
    assert size == n_frames > 0
    # topic part: mean-pool the last layer over the label-aligned frames, Linear, CE per utterance
    feats, frame_lengths = model.upstream.forward_features(batch["wav"], batch["lengths"])
    enc = model.upstream.encode(feats, out["lengths"], mask=out["mask_indices"])
    h = enc.hidden_states[-1]
    pooled = torch.stack([h[b, : int(n)].mean(0) for b, n in enumerate(out["lengths"])])
    topic_logits = pooled @ model.topic_head.weight.T + model.topic_head.bias
    topics = batch["topic"]
    topic_ce = torch.stack([torch.logsumexp(topic_logits[b], 0) - topic_logits[b, topics[b]] for b in range(3)])
    expected = unit_ce + 10.0 * out["features_pen"] * n_frames + 0.7 * topic_ce.mean() * n_frames
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(torch.tensor(logs["loss_topic"]), topic_ce.sum().detach(), rtol=1e-5, atol=1e-5)
    reduced = task.reduce_logs(logs, size)
    assert reduced["loss_topic"] == pytest.approx(float(topic_ce.mean().detach()), rel=1e-5)
    assert 0.0 <= reduced["acc_topic"] <= 1.0 and "count_topic" not in reduced


def test_task_trains_on_its_example_and_the_upstream_is_the_trunk(tmp_path: Path) -> None:
    cfg = write_example(tmp_path)
    task = HubertopicPretrainTask(cfg, PretrainContext("hubertopic", tiny()))
    torch.manual_seed(0)
    model = task.build_model()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    data = task.dataset("train")
    batch = task.collate([data[i] for i in range(4)])
    first = None
    for _ in range(6):
        torch.manual_seed(5)  # same mask every step
        loss, size, logs = task.loss(model, batch)
        opt.zero_grad()
        (loss / size).backward()
        opt.step()
        first = first if first is not None else float(loss.detach() / size)
        assert model.topic_head.weight.grad is not None and model.topic_head.weight.grad.abs().sum() > 0
    assert float(loss.detach() / size) < first
    upstream = task.upstream(model)
    assert upstream.method == "hubertopic" and not any(k.startswith("topic") for k in upstream.state_dict())
    keys = set(model.state_dict())
    assert {"label_embs_concat", "final_proj.weight", "topic_head.weight"} <= keys
    assert any(k.startswith("upstream.encoder.") for k in keys)


def test_task_errors_name_the_fix(tmp_path: Path) -> None:
    cfg = write_example(tmp_path)
    with pytest.raises(ValueError, match=r"has 8 topics but model.num_topics is 5.*num_topics=8"):
        HubertopicPretrainTask(cfg, PretrainContext("hubertopic", dataclasses.replace(tiny(), num_topics=5)))
    with pytest.raises(ValueError, match="also a unit label"):
        HubertopicPretrainTask(dataclasses.replace(cfg, topic_label="km"), PretrainContext("hubertopic", tiny()))
    (tmp_path / "valid.topic").unlink()
    task = HubertopicPretrainTask(cfg, PretrainContext("hubertopic", tiny()))
    with pytest.raises(FileNotFoundError, match=r"valid\.topic"):
        task.dataset("valid")


@pytest.mark.parametrize("field,value", [("num_topics", 1), ("topic_weight", -0.1), ("topic_pooling", "max"),
                                         ("topic_layer", 5), ("topic_layer", -6)])
def test_config_validate_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(tiny(), **{field: value}).validate()
