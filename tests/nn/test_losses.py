"""Losses against independent references: HuBERT's logits, python-loop InfoNCE / NT-Xent, a 2-rank gloo run."""
from __future__ import annotations

import dataclasses
import math
import os
import socket

import pytest
import torch
from torch.nn import functional as F

from speechssl.nn.losses import (cosine_logits, gather_with_grad, info_nce, layer_distillation, masked_mse,
                                 masked_prediction_loss, nt_xent)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- masked prediction: bit-identical to HuBERT ------------------------------------------------

def _hubert(target_glu: bool, untie: bool = False):
    from speechssl.upstream.hubert.config import tiny
    from speechssl.upstream.hubert.model import HubertPretrainModel

    cfg = dataclasses.replace(tiny(), conv_feature_layers=((16, 10, 5),) + ((16, 3, 2),) * 4 + ((16, 2, 2),) * 2,
                              encoder_layers=1, encoder_embed_dim=24, encoder_ffn_embed_dim=32,
                              encoder_attention_heads=2, conv_pos=8, conv_pos_groups=2, final_dim=8,
                              target_glu=target_glu, untie_final_proj=untie, logit_temp=0.1)
    torch.manual_seed(0)
    return HubertPretrainModel(cfg, [7, 5], [50.0, 50.0]).eval()


@pytest.mark.parametrize("target_glu", [False, True])
@pytest.mark.parametrize("autocast", [False, True])
def test_cosine_logits_equal_hubert_logits_exactly(target_glu, autocast):
    model = _hubert(target_glu)
    if not hasattr(model, "_logits"):
        pytest.skip("HubertPretrainModel computes its logits with cosine_logits now")
    x = torch.randn(9, 8, generator=_gen())
    embs = model.label_embs_concat.split([7, 5])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        xin = x.to(torch.bfloat16) if autocast else x
        for i, e in enumerate(embs):
            ref = model._logits(xin, i, e)
            e2 = model.target_glu(e) if model.target_glu is not None else e
            ours = cosine_logits(xin, e2, model.config.logit_temp)
            assert ours.dtype == torch.float32 and torch.equal(ours, ref)


@pytest.mark.parametrize("untie", [False, True])
def test_hubert_forward_logits_and_loss_from_the_shared_functions(untie):
    """HuBERT's masked logits and its task's cross-entropy, rebuilt from public parts (holds after the switch)."""
    model = _hubert(target_glu=True, untie=untie)
    source = torch.randn(2, 6000, generator=_gen(1))
    lengths = torch.tensor([6000, 4000])
    n = model.upstream.output_lengths(lengths)
    T = int(n.max())
    targets = [torch.randint(0, 7, (2, T), generator=_gen(2)), torch.randint(0, 5, (2, T), generator=_gen(3))]
    mask = torch.rand(2, T, generator=_gen(4)) < 0.5
    with torch.no_grad():
        out = model(source, lengths, targets, [n, n], mask=mask)
        hidden = model.upstream.extract_features(source, lengths, mask=mask).hidden_states[-1]
        valid = torch.arange(T)[None] < n[:, None]
        sel = valid & mask
        proj = model.final_proj(hidden[sel])
        projs = proj.chunk(2, dim=-1) if untie else [proj, proj]
        for i, (p, e) in enumerate(zip(projs, model.label_embs_concat.split([7, 5]))):
            logits = cosine_logits(p, model.target_glu(e), model.config.logit_temp)
            assert torch.equal(logits, out["logits_masked"][i])
            res = masked_prediction_loss(logits, targets[i][sel])
            assert torch.equal(res.loss, F.cross_entropy(out["logits_masked"][i], out["targets_masked"][i],
                                                         reduction="sum"))
            assert res.count == int(sel.sum())


def test_masked_prediction_loss_against_a_loop():
    logits = torch.randn(6, 4, generator=_gen())
    targets = torch.tensor([0, 3, 1, 1, 2, 0])
    res = masked_prediction_loss(logits, targets)
    ref = sum(-math.log(math.exp(logits[n, targets[n]]) / sum(math.exp(v) for v in logits[n].tolist()))
              for n in range(6))
    assert res.loss.item() == pytest.approx(ref, rel=1e-6)
    assert res.count == 6 and int(res.correct) == int((logits.argmax(-1) == targets).sum())
    empty = masked_prediction_loss(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert empty.loss.item() == 0.0 and empty.count == 0
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        masked_prediction_loss(logits, targets[:3])


# --- InfoNCE / NT-Xent ------------------------------------------------------------------------

def _slow_info_nce(q, k, pos, t, cand=None, normalize=False, multi="mean"):
    """Python loops over queries and keys, float64."""
    q, k = q.double(), k.double()
    total, count, correct = 0.0, 0, 0
    for n in range(q.shape[0]):
        def sim(m):
            a, b = q[n], k[m]
            if normalize:
                a, b = a / a.norm(), b / b.norm()
            return float(a @ b) / t
        cands = [m for m in range(k.shape[0]) if pos[n, m] or cand is None or cand[n, m]]
        ps = [m for m in range(k.shape[0]) if pos[n, m]]
        if not ps:
            continue
        denom = sum(math.exp(sim(m)) for m in cands)
        if multi == "mean":
            total += -sum(math.log(math.exp(sim(p)) / denom) for p in ps) / len(ps)
        else:
            total += -math.log(sum(math.exp(sim(p)) for p in ps) / denom)
        count += 1
        best = max(cands, key=sim)
        correct += int(pos[n, best])
    return total, count, correct


@pytest.mark.parametrize("multi", ["mean", "logsumexp"])
@pytest.mark.parametrize("normalize", [False, True])
def test_info_nce_against_python_loops(multi, normalize):
    g = _gen(5)
    q, k = torch.randn(7, 5, generator=g), torch.randn(9, 5, generator=g)
    pos = torch.rand(7, 9, generator=g) < 0.25
    pos[0] = False  # a query without positives is left out
    pos[1, :3] = True  # several positives
    cand = torch.rand(7, 9, generator=g) < 0.7
    for c in (None, cand):
        res = info_nce(q, k, pos, 0.3, candidate_mask=c, normalize=normalize, multi_positive=multi)
        ref, count, correct = _slow_info_nce(q, k, pos, 0.3, c, normalize, multi)
        assert res.loss.item() == pytest.approx(ref, rel=1e-5)
        assert res.count == count == 6 and int(res.correct) == correct


def test_info_nce_with_one_positive_is_cross_entropy_exactly():
    """SSAST's per-utterance form: logits = pred @ target.T against arange, float32 cross-entropy."""
    g = _gen(6)
    pred, target = torch.randn(11, 6, generator=g), torch.randn(11, 6, generator=g)
    res = info_nce(pred, target, torch.eye(11, dtype=torch.bool))
    logits = pred @ target.T
    own = torch.arange(11)
    assert torch.equal(res.loss, F.cross_entropy(logits.float(), own, reduction="sum"))
    assert int(res.correct) == int((logits.argmax(-1) == own).sum()) and res.count == 11


def _slow_nt_xent(z1, z2, t):
    z = torch.cat([z1, z2]).double()
    z = z / z.norm(dim=1, keepdim=True)
    B2 = z.shape[0]
    total = 0.0
    for i in range(B2):
        j = (i + B2 // 2) % B2
        denom = sum(math.exp(float(z[i] @ z[m]) / t) for m in range(B2) if m != i)
        total += -math.log(math.exp(float(z[i] @ z[j]) / t) / denom)
    return total


def test_nt_xent_against_python_loops():
    g = _gen(7)
    z1, z2 = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    res = nt_xent(z1, z2, 0.5)
    assert res.loss.item() == pytest.approx(_slow_nt_xent(z1, z2, 0.5), rel=1e-5)
    assert res.count == 10
    # the loss is symmetric in the two views
    torch.testing.assert_close(nt_xent(z2, z1, 0.5).loss, res.loss)


def test_gather_is_the_identity_without_a_process_group():
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(x) is x
    g = _gen(8)
    q, k = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    pos = torch.eye(4, dtype=torch.bool)
    assert torch.equal(info_nce(q, k, pos, gather=True).loss, info_nce(q, k, pos).loss)
    # a callable gather: masks must then cover the gathered keys
    double = lambda keys: torch.cat([keys, keys.flip(0)])  # noqa: E731
    with pytest.raises(ValueError, match="columns"):
        info_nce(q, k, pos, gather=double)
    res = info_nce(q, k, torch.cat([pos, torch.zeros_like(pos)], 1), gather=double)
    ref = info_nce(q, double(k), torch.cat([pos, torch.zeros_like(pos)], 1))
    assert torch.equal(res.loss, ref.loss)


def test_info_nce_bad_inputs_name_the_problem():
    q, k = torch.randn(3, 4), torch.randn(5, 4)
    with pytest.raises(ValueError, match="positive_mask"):
        info_nce(q, k, torch.ones(3, 5))
    with pytest.raises(ValueError, match="queries"):
        info_nce(q, torch.randn(5, 3), torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="multi_positive"):
        info_nce(q, k, torch.ones(3, 5, dtype=torch.bool), multi_positive="max")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        data = torch.load(os.path.join(out_dir, "data.pt"))
        B = data["z1"].shape[0] // world
        rows = slice(rank * B, (rank + 1) * B)
        z1 = data["z1"][rows].clone().requires_grad_(True)
        z2 = data["z2"][rows].clone().requires_grad_(True)
        res = nt_xent(z1, z2, 0.5, gather=True)
        res.loss.backward()
        # uneven key counts: rank r contributes r + 2 keys; queries see every key, positives local
        q = data["q"][rank * 3:(rank + 1) * 3].clone().requires_grad_(True)
        start = sum(r + 2 for r in range(rank))
        k = data["k"][start:start + rank + 2].clone().requires_grad_(True)
        pos = torch.zeros(3, rank + 2, dtype=torch.bool)
        pos[torch.arange(3), torch.arange(3) % (rank + 2)] = True
        res2 = info_nce(q, k, pos, 0.7, gather=True)
        res2.loss.backward()
        torch.save({"loss": res.loss.detach(), "count": res.count, "g1": z1.grad, "g2": z2.grad,
                    "loss2": res2.loss.detach(), "gq": q.grad, "gk": k.grad},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.barrier()
        dist.destroy_process_group()


def test_distributed_gather_equals_one_process_over_all_items(tmp_path):
    """2 gloo ranks × B items: Σ losses and every item's gradient equal one process over 2B items."""
    import torch.multiprocessing as mp

    world, B = 2, 3
    g = _gen(9)
    data = {"z1": torch.randn(world * B, 4, generator=g), "z2": torch.randn(world * B, 4, generator=g),
            "q": torch.randn(world * 3, 4, generator=g), "k": torch.randn(2 + 3, 4, generator=g)}
    torch.save(data, tmp_path / "data.pt")
    mp.spawn(_rank_main, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]

    z1 = data["z1"].clone().requires_grad_(True)
    z2 = data["z2"].clone().requires_grad_(True)
    single = nt_xent(z1, z2, 0.5)
    single.loss.backward()
    torch.testing.assert_close(sum(r["loss"] for r in ranks), single.loss.detach(), rtol=1e-5, atol=1e-5)
    assert sum(r["count"] for r in ranks) == single.count == 2 * world * B
    torch.testing.assert_close(torch.cat([r["g1"] for r in ranks]), z1.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.cat([r["g2"] for r in ranks]), z2.grad, rtol=1e-5, atol=1e-6)

    q = data["q"].clone().requires_grad_(True)
    k = data["k"].clone().requires_grad_(True)
    pos = torch.zeros(6, 5, dtype=torch.bool)
    for rank in range(world):
        start = sum(r + 2 for r in range(rank))
        for i in range(3):
            pos[rank * 3 + i, start + i % (rank + 2)] = True
    ref = info_nce(q, k, pos, 0.7)
    ref.loss.backward()
    torch.testing.assert_close(sum(r["loss2"] for r in ranks), ref.loss.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([r["gq"] for r in ranks]), q.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.cat([r["gk"] for r in ranks]), k.grad, rtol=1e-5, atol=1e-6)


# --- regression and distillation ------------------------------------------------------------

def test_masked_mse_against_torch_and_a_loop():
    g = _gen(10)
    pred, target = torch.randn(2, 5, 3, generator=g), torch.randn(2, 5, 3, generator=g)
    mask = torch.rand(2, 5, generator=g) < 0.5
    res = masked_mse(pred, target, mask)
    ref = sum(float(((pred[b, t] - target[b, t]) ** 2).mean()) for b in range(2) for t in range(5) if mask[b, t])
    assert res.loss.item() == pytest.approx(ref, rel=1e-6) and res.count == int(mask.sum())
    # data2vec: sum over D, scaled by 1/sqrt(D); smooth L1 with beta
    d2v = masked_mse(pred, target, mask, reduce_dim="sum", scale=1 / math.sqrt(3))
    assert d2v.loss.item() == pytest.approx(F.mse_loss(pred[mask], target[mask], reduction="sum").item() / math.sqrt(3),
                                           rel=1e-6)
    sl1 = masked_mse(pred, target, mask, reduce_dim="sum", beta=0.5)
    assert sl1.loss.item() == pytest.approx(F.smooth_l1_loss(pred[mask], target[mask], reduction="sum", beta=0.5).item(),
                                           rel=1e-6)
    # no mask: every unit
    full = masked_mse(pred, target)
    assert full.count == 10 and full.loss.item() == pytest.approx(F.mse_loss(pred, target).item() * 10, rel=1e-6)
    with pytest.raises(ValueError, match="mask"):
        masked_mse(pred, target, mask[:, :3])


def test_layer_distillation_against_distilhubert_formula():
    g = _gen(11)
    L, B, T, D = 3, 2, 6, 4
    preds = torch.randn(L, B, T, D, generator=g, requires_grad=True)
    targets = torch.randn(L, B, T, D, generator=g)
    lengths = torch.tensor([6, 4])
    res = layer_distillation(preds, targets, lengths, cos_weight=0.5)
    ref_l1, ref_cos = [], []
    for layer in range(L):
        l1 = cs = 0.0
        for b in range(B):
            for t in range(int(lengths[b])):
                p, y = preds[layer, b, t].detach().double(), targets[layer, b, t].double()
                l1 += float((p - y).abs().mean())
                c = float(p @ y / (p.norm() * y.norm()))
                cs += -math.log(1 / (1 + math.exp(-c)))
        ref_l1.append(l1)
        ref_cos.append(cs)
    assert res.count == 10
    torch.testing.assert_close(res.l1, torch.tensor(ref_l1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(res.cos, torch.tensor(ref_cos), rtol=1e-5, atol=1e-6)
    assert res.loss.item() == pytest.approx(sum(ref_l1) + 0.5 * sum(ref_cos), rel=1e-5)
    res.loss.backward()
    assert preds.grad[:, 1, 4:].abs().sum() == 0 and preds.grad[:, 1, :4].abs().sum() > 0
    # without lengths every frame counts; DistilHuBERT's loss is the sum divided by the count
    full = layer_distillation(list(preds.detach()), list(targets))
    s3prl_style = sum(F.l1_loss(preds[i], targets[i]) - F.logsigmoid(F.cosine_similarity(preds[i], targets[i], dim=-1)).mean()
                      for i in range(L))
    assert (full.loss / full.count).item() == pytest.approx(s3prl_style.item(), rel=1e-5)
    with pytest.raises(ValueError, match="layer 1"):
        layer_distillation([preds[0], preds[1, :, :3]], [targets[0], targets[1, :, :3]])


def test_info_nce_autocast_cosine_stays_float32_and_dot_products_follow_autocast():
    g = _gen(12)
    q, k = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    pos = torch.eye(6, dtype=torch.bool)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cos = info_nce(q, k, pos, 0.1, normalize=True)
        dot = info_nce(q, k, pos)
    assert torch.equal(cos.loss, info_nce(q, k, pos, 0.1, normalize=True).loss)
    ref = F.cross_entropy((q.bfloat16() @ k.bfloat16().T).float(), torch.arange(6), reduction="sum")
    assert torch.equal(dot.loss, ref)
