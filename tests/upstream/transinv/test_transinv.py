"""Transitive Invariance: the ranking loss by hand and against a float64 loop, hard-negative mining, seeded
triplets drawn from the graph, the graph as resumable task state (re-clustered at epoch starts, no global
RNG), a fixed clustering upstream, one training step lowering the loss, config errors."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from speechssl import hub
from speechssl.nn.losses import cosine_triplet_loss
from speechssl.train.task import PretrainContext
from speechssl.upstream.transinv import METHOD, TransInvModel, TransInvTask, TransInvTaskConfig
from speechssl.upstream.transinv.config import TransInvConfig, tiny
from speechssl.upstream.transinv.graph import KIND_ID


@pytest.fixture(scope="module")
def task_cfg(tmp_path_factory):
    return METHOD.example(tmp_path_factory.mktemp("transinv-example"))


def _task(cfg: TransInvTaskConfig, model: TransInvConfig | None = None) -> TransInvTask:
    return TransInvTask(cfg, PretrainContext(method="transinv", model=model or tiny(), seed=0))


def _built(cfg: TransInvTaskConfig) -> tuple[TransInvTask, torch.nn.Module]:
    task = _task(cfg)
    torch.manual_seed(0)
    return task, task.build_model()


def test_triplet_loss_by_hand():
    a = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    p = torch.tensor([[0.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    n = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]],      # D = 0 and 2
                      [[0.0, -5.0], [3.0, 0.0]],      # D = 1 (the other slot is masked)
                      [[1.0, 0.0], [1.0, 0.0]]])      # every slot masked: not scored
    mask = torch.tensor([[True, True], [True, False], [False, False]])
    res = cosine_triplet_loss(a, p, n, 0.5, negative_mask=mask)
    # anchor 0: D(a,p) = 1; hinges max(0, 1 - 0 + .5) = 1.5 and max(0, 1 - 2 + .5) = 0 -> mean 0.75
    # anchor 1: D(a,p) = 1 - 1/sqrt(2); hinge max(0, 1 - 1/sqrt(2) - 1 + .5) = .5 - 1/sqrt(2) < 0 -> 0
    assert float(res.loss) == pytest.approx(0.75, abs=1e-6)
    assert res.count == 2
    assert float(res.violations) == pytest.approx(0.5)  # anchor 0: 1 of 2 triplets violated; anchor 1: 0 of 1
    assert float(res.d_pos) == pytest.approx(1 + 1 - 2 ** -0.5, abs=1e-6)
    assert float(res.d_neg) == pytest.approx(1.0 + 1.0, abs=1e-6)  # anchor 0: mean(0, 2); anchor 1: 1
    with pytest.raises(ValueError, match=r"negatives must be \(B=3, M, D=2\)"):
        cosine_triplet_loss(a, p, n[:, :, :1])


def test_triplet_loss_and_gradients_match_a_float64_loop():
    g = torch.Generator().manual_seed(0)
    a, p, n = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g), torch.randn(4, 3, 5, generator=g)
    mask = torch.rand(4, 3, generator=g) > 0.3
    mask[0] = True
    leaves = [t.clone().requires_grad_(True) for t in (a, p, n)]
    res = cosine_triplet_loss(*leaves, margin=0.4, negative_mask=mask)
    res.loss.backward()

    ref_leaves = [t.double().clone().requires_grad_(True) for t in (a, p, n)]
    ra, rp, rn = ref_leaves
    total = torch.zeros((), dtype=torch.float64)
    for i in range(4):
        cos = lambda x, y: (x @ y) / (x.norm() * y.norm())  # noqa: E731
        hinges = [torch.clamp((1 - cos(ra[i], rp[i])) - (1 - cos(ra[i], rn[i, m])) + 0.4, min=0)
                  for m in range(3) if mask[i, m]]
        if hinges:
            total = total + sum(hinges) / len(hinges)
    total.backward()
    assert float(res.loss.detach()) == pytest.approx(float(total.detach()), rel=1e-5)
    for got, want in zip(leaves, ref_leaves):
        torch.testing.assert_close(got.grad.double(), want.grad, rtol=1e-4, atol=1e-6)


def test_hard_negatives_are_the_closest_keys_of_other_clusters(task_cfg):
    task = _task(dataclasses.replace(task_cfg, hard_negatives=2))
    B = 2
    za = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # keys = [za; zp; zn] of the batch: rows 0-1 anchors, 2-3 positives, 4-5 negatives
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9], [0.8, -0.2], [0.7, 0.7]])
    key_c = torch.tensor([0, 1, 0, 1, 3, 2])
    mined, ok = task._mined(za, keys, key_c, torch.tensor([0, 1]), 0)
    # anchor 0 (cluster 0): candidates rows 1, 3 (cluster 1) and 5 (cluster 2); row 4 is its own negative.
    # cosines with (1, 0): row 5 0.707, row 3 0.110, row 1 0 -> rows 5 and 3
    assert torch.equal(mined[0], keys[[5, 3]]) and ok[0].all()
    # anchor 1 (cluster 1): candidates rows 0, 2, 4 (its own negative row 5 is excluded): cosines 0, .110, -.243
    assert torch.equal(mined[1], keys[[2, 0]]) and ok[1].all()
    few = _task(dataclasses.replace(task_cfg, hard_negatives=3))
    mined, ok = few._mined(za, keys, torch.tensor([0, 1, 0, 1, 1, 1]), torch.tensor([0, 1]), 0)
    # anchor 0: rows 1, 3, 5 of cluster 1; anchor 1: only rows 0 and 2 (row 4 is of its own cluster)
    assert ok.tolist() == [[True, True, True], [True, True, False]] and mined.shape == (B, 3, 2)


def test_triplets_follow_the_graph_and_are_seeded(task_cfg):
    task, _ = _built(dataclasses.replace(task_cfg, positives=("transitive", "intra", "inter")))
    ds = task.dataset("train")
    ds.set_epoch(1)
    graph = task.graph("train")
    kinds = set()
    for i in range(24):
        it = ds[i]
        c = int(graph.clusters[i])
        assert it["cluster"] == c and it["negative_cluster"] == int(graph.clusters[it["negative_index"]]) != c
        if it["kind"] == KIND_ID["intra"]:
            assert it["partner"] == i or int(graph.members(i).numel()) > 1
            assert it["partner"] == i
        else:  # transitive (a, b') or inter (a, b): another image of the anchor's cluster
            assert it["partner"] != i and int(graph.clusters[it["partner"]]) == c
        kinds.add(it["kind"])
        assert not torch.equal(it["anchor"], it["positive"])
    assert kinds == {0, 1, 2}
    again = ds[5]
    first = ds[5]
    assert all(torch.equal(again[k], first[k]) for k in ("anchor", "positive", "negative"))
    ds.set_epoch(2)
    assert not torch.equal(ds[5]["positive"], first["positive"])


def test_graph_is_refit_at_epoch_starts_without_global_rng_and_resumes_from_state(task_cfg, monkeypatch):
    cfg = dataclasses.replace(task_cfg, recluster_every=2)
    task, model = _built(cfg)
    ds, valid = task.dataset("train"), task.dataset("valid")
    rng = torch.get_rng_state()
    ds.set_epoch(1)
    assert torch.equal(rng, torch.get_rng_state())  # building the graph draws nothing from the global RNG
    assert task.refit_epoch(1) == task.refit_epoch(2) == 1 and task.refit_epoch(3) == 3
    first = task.state_dict()
    assert first["graph_epoch"] == 1 and set(first["clusters"]) == {"train", "valid"}
    assert len(first["clusters"]["valid"]) == len(valid)
    # the clusters are k-means on the current model's normalised pooled features
    feats = task.features("train")
    d = torch.cdist(feats, first["centroids"])
    assert torch.equal(d.argmin(1), first["clusters"]["train"])
    ds.set_epoch(2)
    assert task.state_dict()["graph_epoch"] == 1  # no re-fit inside a re-clustering period
    with torch.no_grad():  # the model changes: the epoch-3 graph is fitted on the new features
        for prm in model.parameters():
            prm.add_(0.05 * torch.randn(prm.shape, generator=torch.Generator().manual_seed(prm.numel())))
    ds.set_epoch(3)
    third = task.state_dict()
    assert third["graph_epoch"] == 3 and not torch.equal(third["clusters"]["train"], first["clusters"]["train"])

    resumed, _ = _built(cfg)
    resumed.load_state_dict(third)
    monkeypatch.setattr(resumed, "features", lambda split: pytest.fail("a restored graph is not recomputed"))
    rds = resumed.dataset("train")
    rds.set_epoch(3)
    rds.set_epoch(4)
    assert torch.equal(resumed.graph("train").clusters, third["clusters"]["train"])
    ds.set_epoch(4)
    assert torch.equal(rds[7]["positive"], ds[7]["positive"])


def test_a_fixed_clustering_upstream_is_clustered_once(task_cfg, tmp_path):
    torch.manual_seed(3)
    fixed = TransInvModel(tiny()).eval()
    hub.save(fixed, tmp_path / "fixed")
    task, _ = _built(dataclasses.replace(task_cfg, cluster_upstream=str(tmp_path / "fixed"), recluster_every=1))
    assert task.refit_epoch(7) == 1
    ds = task.dataset("train")
    ds.set_epoch(1)
    state = task.state_dict()
    ds.set_epoch(2)
    assert task.state_dict()["graph_epoch"] == 1
    images = torch.stack([ds.load(i) for i in range(4)])  # the tiny corpus is 32 px: no resize needed
    with torch.no_grad():
        want = torch.nn.functional.normalize(fixed(images)["last_hidden_state"].mean(1), dim=1)
    torch.testing.assert_close(task.features("train")[:4], want, rtol=1e-5, atol=1e-6)
    assert torch.equal(torch.cdist(task.features("train"), state["centroids"]).argmin(1), state["clusters"]["train"])


def test_one_training_step_lowers_the_loss(task_cfg):
    task, model = _built(task_cfg)
    ds = task.dataset("train")
    ds.set_epoch(1)
    batch = task.collate([ds[i] for i in range(16)])
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loss, size, logs = task.loss(model, batch)
    assert size == 16 and logs["transitive"] <= 16 and 0 <= logs["violations"] <= 16
    (loss / size).backward()
    opt.step()
    with torch.no_grad():
        after, _, _ = task.loss(model, batch)
    assert float(after) < float(loss.detach()), (float(loss), float(after))


def test_config_errors_name_the_field(task_cfg):
    with pytest.raises(ValueError, match="task.clusters"):
        _task(dataclasses.replace(task_cfg, clusters=1))
    with pytest.raises(ValueError, match="task.positives"):
        _task(dataclasses.replace(task_cfg, positives=("video",)))
    with pytest.raises(ValueError, match="task.recluster_every"):
        _task(dataclasses.replace(task_cfg, recluster_every=0))
    with pytest.raises(ValueError, match="model.widths"):
        _task(task_cfg, dataclasses.replace(tiny(), widths=(8, 16)))
    task = _task(dataclasses.replace(task_cfg, clusters=1000))
    task.build_model()
    with pytest.raises(ValueError, match="task.clusters=1000 exceeds"):
        task.dataset("train").set_epoch(1)
    with pytest.raises(RuntimeError, match="build_model"):
        _task(task_cfg).dataset("train").set_epoch(1)
