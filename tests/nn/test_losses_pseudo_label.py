"""nt_xent with pseudo-labels (G-SimCLR): same-label views leave the denominator; against loops and a 2-rank gloo run."""
from __future__ import annotations

import os
import socket

import pytest
import torch

from speechssl.nn.losses import nt_xent


def _slow(z1: torch.Tensor, z2: torch.Tensor, t: float, labels: list[int] | None) -> torch.Tensor:
    """The formula written out (solo-learn's simclr_loss_func with a negative mask), float64, differentiable."""
    z = torch.cat([z1, z2]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n = z.shape[0]
    B = n // 2
    lab = None if labels is None else labels + labels
    total = z.new_zeros(())
    for i in range(n):
        j = (i + B) % n
        terms = []
        for m in range(n):
            if m == i:
                continue
            if m != j and lab is not None and lab[i] >= 0 and lab[m] == lab[i]:
                continue  # a same-label view: no negative
            terms.append(torch.exp(z[i] @ z[m] / t))
        total = total - torch.log(torch.exp(z[i] @ z[j] / t) / torch.stack(terms).sum())
    return total


def test_labels_drop_same_label_negatives_as_the_formula():
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(6, 5, generator=g, requires_grad=True)
    z2 = torch.randn(6, 5, generator=g, requires_grad=True)
    labels = [0, 1, 0, 2, -1, 1]
    res = nt_xent(z1, z2, 0.5, labels=torch.tensor(labels))
    ref = _slow(z1, z2, 0.5, labels)
    assert res.count == 12
    torch.testing.assert_close(res.loss.double(), ref, rtol=1e-5, atol=1e-6)
    g_res = torch.autograd.grad(res.loss, [z1, z2])
    g_ref = torch.autograd.grad(ref, [z1, z2])
    for a, b in zip(g_res, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # fewer negatives: the loss can only fall against plain NT-Xent
    assert float(res.loss.detach()) < float(nt_xent(z1, z2, 0.5).loss.detach())


def test_distinct_or_missing_labels_give_plain_nt_xent_exactly():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    plain = nt_xent(z1, z2, 0.1)
    assert torch.equal(nt_xent(z1, z2, 0.1, labels=torch.arange(4)).loss, plain.loss)
    assert torch.equal(nt_xent(z1, z2, 0.1, labels=torch.full((4,), -1)).loss, plain.loss)
    torch.testing.assert_close(plain.loss.double(), _slow(z1, z2, 0.1, None))


def test_bad_labels_name_the_problem():
    z = torch.randn(3, 2)
    with pytest.raises(ValueError, match=r"labels must be an integer tensor \(B=3,\)"):
        nt_xent(z, z, labels=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must be an integer"):
        nt_xent(z, z, labels=torch.zeros(3))


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
        res = nt_xent(z1, z2, 0.5, gather=True, labels=data["labels"][rows])
        res.loss.backward()
        torch.save({"loss": res.loss.detach(), "g1": z1.grad, "g2": z2.grad}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.barrier()
        dist.destroy_process_group()


def test_gathered_labels_equal_one_process_over_all_items(tmp_path):
    import torch.multiprocessing as mp

    world, B = 2, 3
    g = torch.Generator().manual_seed(2)
    # label 0 on both ranks: rank 1's label-0 views must leave rank 0's denominators too
    data = {"z1": torch.randn(world * B, 4, generator=g), "z2": torch.randn(world * B, 4, generator=g),
            "labels": torch.tensor([0, 1, 2, 0, 3, -1])}
    torch.save(data, tmp_path / "data.pt")
    mp.spawn(_rank_main, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    z1 = data["z1"].clone().requires_grad_(True)
    z2 = data["z2"].clone().requires_grad_(True)
    single = nt_xent(z1, z2, 0.5, labels=data["labels"])
    single.loss.backward()
    torch.testing.assert_close(sum(r["loss"] for r in ranks), single.loss.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([r["g1"] for r in ranks]), z1.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.cat([r["g2"] for r in ranks]), z2.grad, rtol=1e-5, atol=1e-6)
