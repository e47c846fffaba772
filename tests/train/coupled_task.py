"""A batch-coupled toy task: InfoNCE between two views of each item, the other items being negatives.

Also a script that runs the same updates on 2 gloo ranks (under torchrun) and saves what the
test compares with one process on all the items::

    torchrun --nproc_per_node 2 -m tests.train.coupled_task --exp-dir EXP --out FILE
"""
from __future__ import annotations

import argparse
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from speechssl.train import Task, TrainerConfig
from speechssl.train.config import OptimConfig, ScheduleConfig
from tests.train.items import RandomItems, stack

DIM, EMB, TAU = 6, 5, 0.1
B = 4  # items per rank and batch


class PairItems(RandomItems):
    """``n`` items ``{"x": (DIM,), "x2": (DIM,)}``: a random vector and a noisy copy of it."""

    def __init__(self, n: int, seed: int) -> None:
        super().__init__(n, seed, x=(DIM,), x2=(DIM,))
        self.data["x2"] = self.data["x"] + 0.3 * self.data["x2"]


collate = stack


def items(ds: PairItems, lo: int, hi: int) -> dict[str, torch.Tensor]:
    return collate([ds[i] for i in range(lo, hi)])


class Encoder(nn.Module):
    """A linear embedding, plus a frozen 'teacher' whose weights depend on the rank (to see DDP leave it alone)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(DIM, EMB)
        self.teacher = nn.Linear(DIM, EMB)
        g = torch.Generator().manual_seed(100 + int(os.environ.get("RANK", "0") or 0))
        with torch.no_grad():
            self.teacher.weight.copy_(torch.randn(EMB, DIM, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.lin(x), dim=-1)  # (B, EMB)


class CoupledTask(Task):
    """InfoNCE: anchor ``x_i`` against the ``x2`` of every item (of every rank, via :meth:`Task.gather`)."""

    batch_coupled = True

    def __init__(self, cfg: Any = None, ctx: Any = None) -> None:
        self.cfg, self.ctx = cfg, ctx

    def build_model(self) -> nn.Module:
        return Encoder()

    def frozen_modules(self, model: nn.Module) -> dict[str, str | None]:
        return {"teacher": "test:teacher"}

    def dataset(self, split: str) -> PairItems:
        return PairItems(16 if split == "train" else 12, seed=0 if split == "train" else 1)

    def collate(self, items_: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return collate(items_)

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, float, dict[str, float]]:
        n = len(batch["x"])
        z = model(torch.cat([batch["x"], batch["x2"]]))  # one forward under DDP
        q, k = z[:n], z[n:]  # (n, EMB) each
        keys, offset = self.gather(k)  # (N, EMB): every rank's x2 embeddings
        logits = q @ keys.T / TAU  # (n, N)
        target = torch.arange(n, device=z.device) + offset
        return F.cross_entropy(logits, target, reduction="sum"), float(n), {}


def trainer_config() -> TrainerConfig:
    return TrainerConfig(max_tokens=B, max_updates=10, valid_split="valid", tensorboard=False, progress_bar=False,
                         optim=OptimConfig(lr=0.05, weight_decay=0.0, clip_norm=0.0),
                         schedule=ScheduleConfig(name="constant"))


def groups(rank: int, world: int) -> list[list[dict[str, torch.Tensor]]]:
    """The batches of two updates for ``rank`` of ``world`` (world 1: the union of the ranks' batches).

    Update 1: one batch, B items per rank. Update 2 (update_freq=2): two batches, the second of
    unequal sizes across ranks (3 and 5 items), which the gather pads.
    """
    ds = PairItems(4 * B + 8, seed=0)
    if world == 1:
        return [[items(ds, 0, 2 * B)], [items(ds, 2 * B, 4 * B), items(ds, 4 * B, 4 * B + 8)]]
    second = [(4 * B, 4 * B + 3), (4 * B + 3, 4 * B + 8)][rank]
    return [[items(ds, rank * B, (rank + 1) * B)],
            [items(ds, 2 * B + rank * B, 2 * B + (rank + 1) * B), items(ds, *second)]]


def run_updates(trainer: Any, rank: int, world: int) -> dict[str, Any]:
    out: dict[str, Any] = {"stats": [], "params": []}
    for group in groups(rank, world):
        out["stats"].append(trainer._step(group, epoch=1))
        out["params"].append({k: v.detach().clone() for k, v in trainer.model.lin.state_dict().items()})
    out["valid"] = trainer.validate()
    return out


def main(argv: list[str] | None = None) -> None:
    import torch.distributed as dist

    from speechssl.train.distributed import all_gather_object
    from speechssl.train.trainer import Trainer

    parser = argparse.ArgumentParser()
    parser.add_argument("--exp-dir", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    trainer = Trainer(CoupledTask(), trainer_config(), args.exp_dir)
    rank, world = trainer.dist.rank, trainer.dist.world_size
    out = run_updates(trainer, rank, world)
    out["teachers"] = all_gather_object(trainer.model.teacher.weight.detach().clone())
    out["coupled"] = trainer.task.gathering
    out["ddp_ignores"] = sorted(getattr(trainer.model, "_ddp_params_and_buffers_to_ignore", []))
    if rank == 0:
        torch.save(out, args.out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
