"""UMD: the loss by hand, masked/visible weighting and targets, the two corruptions, the upstream, seeded items."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from speechssl.data.example import write_example_images
from speechssl.nn.token_masking import random_masking
from speechssl.nn.vit import patchify
from speechssl.train.task import PretrainContext
from speechssl.upstream.umd import METHOD, UMDConfig, UMDOutput, UMDPretrainModel, UMDTask, UMDTaskConfig, umd_loss

SMALL = dict(image_size=8, patch=2, dim=16, ffn_dim=32, heads=2, decoder_dim=8, decoder_ffn_dim=16, decoder_heads=2)


def _model(**kwargs: object) -> UMDPretrainModel:
    torch.manual_seed(0)
    return UMDPretrainModel(UMDConfig(**SMALL), **kwargs).eval()  # 16 patches of 2 x 2 x 3 = 12 values


def _hand_case() -> UMDOutput:
    """B = 2 rows (0 clean, 1 noisy), N = 3 patches, P = 2 values per patch."""
    x0 = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [0.5, -0.5]], [[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]])
    eps = torch.tensor([[[9.0, 9.0], [9.0, 9.0], [9.0, 9.0]], [[0.5, 0.5], [-0.5, 0.0], [1.0, 2.0]]])
    pred_x0 = torch.tensor([[[1.0, 0.0], [1.0, 3.0], [0.5, 0.5]], [[1.0, 2.0], [0.0, 0.0], [0.0, -1.0]]])
    pred_eps = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]], [[0.5, 1.5], [0.5, 0.0], [1.0, 0.0]]])
    mask = torch.tensor([[True, True, False], [False, True, True]])
    return UMDOutput(pred_x0=pred_x0, pred_eps=pred_eps, x0=x0, eps=eps, mask=mask,
                     clean=torch.tensor([True, False]))


def test_loss_by_hand() -> None:
    out = _hand_case()
    res = umd_loss(out)  # UMD: masked x0, visible eps, 0.5 / 0.5
    # clean row 0: x0 error on masked patches 0, 1: se = mean((1,0)^2) = 0.5 and mean((0,2)^2) = 2 -> 1.25
    mae = (0.5 + 2.0) / 2
    # noisy row 1: masked patches 1, 2 on x0: mean((0,1)^2) = 0.5, mean((1,0)^2) = 0.5 -> 0.5;
    # visible patch 0 on eps: mean((0,1)^2) = 0.5
    masked, visible = 0.5, 0.5
    assert float(res.total) == pytest.approx(mae + 0.5 * masked + 0.5 * visible)
    assert (res.mae, res.masked, res.visible, res.clean, res.noisy) == (pytest.approx(mae), pytest.approx(masked),
                                                                       pytest.approx(visible), 1, 1)
    # other weights and targets: masked eps on row 1 = mean((1,0)^2), mean((0,-2)^2) -> (0.5 + 2) / 2 = 1.25;
    # visible x0 on row 1 = mean((0,2)^2) = 2
    res2 = umd_loss(out, masked_target="eps", visible_target="x0", masked_weight=0.2, visible_weight=3.0)
    assert float(res2.total) == pytest.approx(mae + 0.2 * 1.25 + 3.0 * 2.0)
    with pytest.raises(ValueError, match="masked_target must be one of"):
        umd_loss(out, masked_target="v")


def test_only_the_scored_predictions_carry_gradient() -> None:
    out = _hand_case()
    out.pred_x0.requires_grad_(True)
    out.pred_eps.requires_grad_(True)
    umd_loss(out).total.backward()
    gx0 = out.pred_x0.grad.abs().sum(-1) > 0  # (B, N)
    geps = out.pred_eps.grad.abs().sum(-1) > 0
    assert gx0.tolist() == [[True, True, False], [False, True, True]]  # x0 on the masked patches of both rows
    assert geps.tolist() == [[False, False, False], [True, False, False]]  # eps on the visible patch of the noisy row
    # the clean row's eps (its "noise" is 9s, unused) never counts; a zero weight silences its term
    out.pred_x0.grad = out.pred_eps.grad = None
    umd_loss(out, visible_weight=0.0).total.backward()
    assert not bool(out.pred_eps.grad.any())


def test_weights_scale_only_the_noisy_rows() -> None:
    out = _hand_case()
    base = umd_loss(out, masked_weight=0.0, visible_weight=0.0)
    assert float(base.total) == pytest.approx(1.25)  # the clean row alone
    m = umd_loss(out, masked_weight=1.0, visible_weight=0.0)
    v = umd_loss(out, masked_weight=0.0, visible_weight=1.0)
    assert float(m.total) - 1.25 == pytest.approx(0.5) and float(v.total) - 1.25 == pytest.approx(0.5)


def _batch(B: int, seed: int, clean: list[bool]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(B, 3, 8, 8, generator=g), "noise": torch.rand(B, 16, generator=g),
            "t": torch.randint(0, 1000, (B,), generator=g), "eps": torch.randn(B, 3, 8, 8, generator=g),
            "clean": torch.tensor(clean)}


def test_clean_and_noisy_rows_are_corrupted_as_umd() -> None:
    model = _model()
    b = _batch(3, 1, [True, False, True])
    with torch.no_grad():
        out = model(b["image"], b["noise"], b["t"], b["eps"], b["clean"])
    assert out.mask.sum(dim=1).tolist() == [12, 6, 12]  # 16 patches: 75 % masked clean, 16 - int(16 * 0.625) noisy
    x0 = b["image"] * 2 - 1
    assert torch.equal(out.x0, patchify(x0, 2)) and torch.equal(out.eps, patchify(b["eps"], 2))
    # the noisy row is the encoder path on x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, by hand, at index t + 1
    t = int(b["t"][1])
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    abar = f((t + 1) / 1000) / f(0.0)
    xt = math.sqrt(abar) * x0[1:2] + math.sqrt(1 - abar) * b["eps"][1:2]
    with torch.no_grad():
        ref, ref_mask = model.reconstruct(xt, b["noise"][1:2], torch.tensor([t + 1]), 10)
    torch.testing.assert_close(torch.cat([out.pred_x0[1:2], out.pred_eps[1:2]], -1), ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(out.mask[1:2], ref_mask)
    # clean rows read neither t nor eps; a noisy row reads both
    g = torch.Generator().manual_seed(9)
    b2 = dict(b, t=torch.randint(0, 1000, (3,), generator=g), eps=torch.randn(3, 3, 8, 8, generator=g))
    with torch.no_grad():
        out2 = model(b2["image"], b2["noise"], b2["t"], b2["eps"], b2["clean"])
    assert torch.equal(out.pred_x0[[0, 2]], out2.pred_x0[[0, 2]])
    assert not torch.allclose(out.pred_x0[1], out2.pred_x0[1])
    # and the time index matters: the noisy row at index t + 1 differs from index 0
    with torch.no_grad():
        at0, _ = model.reconstruct(xt, b["noise"][1:2], torch.tensor([0]), 10)
    assert not torch.allclose(at0, ref)


def test_the_upstream_is_the_clean_step_encoder_on_every_patch() -> None:
    model = _model()
    up = model.upstream
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        states = up(images)["hidden_states"]
        # training's clean path with nothing masked (keep = N, noise in patch order) at index 0
        tokens = up.vit.embed(images * 2 - 1)
        kept, mask, _ = random_masking(tokens, torch.arange(16.0).expand(2, 16), 16)
        train_states = up.encode(kept, torch.zeros(2, dtype=torch.long))
    assert not mask.any()
    for a, b in zip(states, train_states):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    # the time embedding is part of the upstream: without it the tokens differ
    plain = up.vit(images * 2 - 1)["hidden_states"][0]
    assert not torch.allclose(plain, states[0])


def _task(tmp_path: Path, **kwargs: object) -> UMDTask:
    return UMDTask(UMDTaskConfig(data=str(tmp_path), **kwargs), PretrainContext(method="umd", model=UMDConfig(**SMALL),
                                                                                 seed=0))


def test_task_loss_is_the_mean_over_rows_and_logs_per_group(tmp_path: Path) -> None:
    task, model = _task(tmp_path), _model()
    b = _batch(4, 3, [True, False, False, True])
    with torch.no_grad():
        loss, size, logs = task.loss(model, b)
        res = umd_loss(model(b["image"], b["noise"], b["t"], b["eps"], b["clean"]))
    assert size == 4.0 and float(loss) == pytest.approx(float(res.total), rel=1e-6)
    red = task.reduce_logs(logs, size)
    assert red["clean_frac"] == 0.5
    assert red["mae"] == pytest.approx(res.mae / 2) and red["visible"] == pytest.approx(res.visible / 2)


def test_one_training_step_lowers_the_loss(tmp_path: Path) -> None:
    task = _task(tmp_path)
    model = _model().train()
    b = _batch(8, 4, [True, False] * 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss0, size, logs0 = task.loss(model, b)
    opt.zero_grad()
    (loss0 / size).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == [], missing
    opt.step()
    with torch.no_grad():
        loss1, _, logs1 = task.loss(model, b)
    assert float(loss1) < float(loss0.detach())
    assert logs1["mae"] < logs0["mae"] and logs1["masked"] + logs1["visible"] < logs0["masked"] + logs0["visible"]


def test_items_carry_seeded_corruptions(tmp_path: Path) -> None:
    write_example_images(tmp_path, per_split=8, min_side=16, max_side=20, seed=0)
    task = _task(tmp_path, clean_prob=0.5, timesteps=50)
    ds, again = task.dataset("train"), task.dataset("train")
    items = [ds[i] for i in range(8)]
    for i, it in enumerate(items):
        other = again[i]
        assert torch.equal(it["noise"], other["noise"]) and torch.equal(it["eps"], other["eps"])
        assert (it["clean"], it["t"]) == (other["clean"], other["t"])
        assert it["noise"].shape == (16,) and it["eps"].shape == (3, 8, 8) and 0 <= it["t"] < 50
    assert len({float(it["noise"][0]) for it in items}) == 8  # items differ
    ds.set_epoch(2)
    assert not torch.equal(ds[0]["eps"], items[0]["eps"])  # epochs differ
    batch = task.collate(items)
    assert batch["clean"].dtype == torch.bool and batch["t"].dtype == torch.long and batch["eps"].shape == (8, 3, 8, 8)
    # clean_prob 0 / 1 put every item in one step
    assert not any(_task(tmp_path, clean_prob=0.0).dataset("train")[i]["clean"] for i in range(4))
    assert all(_task(tmp_path, clean_prob=1.0).dataset("train")[i]["clean"] for i in range(4))


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    cases = (({"schedule": "sigmoid"}, "task.schedule"), ({"timesteps": 0}, "task.timesteps"),
             ({"schedule": "linear", "timesteps": 10}, "task.timesteps"), ({"clean_prob": 1.5}, "task.clean_prob"),
             ({"mask_ratio_clean": 1.0}, "task.mask_ratio_clean"), ({"visible_target": "v"}, "task.visible_target"),
             ({"masked_weight": -1.0}, "task.masked_weight"),
             ({"masked_weight": 0.0, "visible_weight": 0.0}, "no loss"),
             ({"data": ""}, "task.data is empty"))
    for kwargs, msg in cases:
        with pytest.raises(ValueError, match=msg):
            _task(tmp_path, **kwargs) if "data" not in kwargs else UMDTask(
                UMDTaskConfig(**kwargs), PretrainContext(method="umd", model=UMDConfig(**SMALL), seed=0))
    with pytest.raises(ValueError, match="model.image_size"):
        UMDConfig(image_size=30).validate()
    assert METHOD.modality == "image" and set(METHOD.presets) == {"tiny", "small"}
    defaults = UMDTaskConfig()
    assert (defaults.schedule, defaults.timesteps, defaults.clean_prob, defaults.mask_ratio_clean,
            defaults.mask_ratio_noisy, defaults.masked_target, defaults.visible_target) == (
        "cosine", 1000, 0.5, 0.75, 0.375, "x0", "eps")
