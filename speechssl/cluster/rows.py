"""Row sources for k-means: one ``(N, D)`` matrix seen as chunks, in memory or memmapped.

k-means only ever needs two things from its data: full passes in a fixed order (Lloyd
iterations, label dumping) and a handful of rows by index (the initialisation sample).
:class:`Rows` provides both over tensors, numpy arrays or memmapped ``.npy`` shards, so a
feature store larger than memory is read chunk by chunk and never loaded whole.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

__all__ = ["Rows", "sample_rows"]


@dataclass(frozen=True)
class _Block:
    data: torch.Tensor | np.ndarray  # (N_b, D)
    name: str
    # Selected row ranges ``[start, stop)`` of this block, in order; the rows a block
    # contributes are these ranges concatenated.
    ranges: tuple[tuple[int, int], ...]
    num_rows: int


class Rows:
    """A virtual ``(N, D)`` matrix: selected row ranges of one or more blocks, concatenated.

    Args:
        blocks: ``(N_b, D)`` float tensors or numpy arrays (``np.load(..., mmap_mode="r")``
            memmaps are read lazily, chunk by chunk).
        names: a name per block used in error messages (e.g. the shard file); defaults to
            ``block <i>``.
        ranges: per block, the ``[start, stop)`` row ranges to use (e.g. the utterances kept
            by ``--percent`` sampling); ``None`` uses every row of every block.

    Raises:
        ValueError: a block is not 2-D, blocks differ in dimension, a range is out of bounds.
    """

    def __init__(
        self,
        blocks: Sequence[torch.Tensor | np.ndarray],
        *,
        names: Sequence[str] | None = None,
        ranges: Sequence[Sequence[tuple[int, int]]] | None = None,
    ) -> None:
        if isinstance(blocks, (torch.Tensor, np.ndarray)):
            blocks = [blocks]
        names = list(names) if names is not None else [f"block {i}" for i in range(len(blocks))]
        if len(names) != len(blocks):
            raise ValueError(f"got {len(blocks)} blocks but {len(names)} names")
        if ranges is not None and len(ranges) != len(blocks):
            raise ValueError(f"got {len(blocks)} blocks but {len(ranges)} range lists")
        self._blocks: list[_Block] = []
        dim = None
        for i, (data, name) in enumerate(zip(blocks, names)):
            if not isinstance(data, (torch.Tensor, np.ndarray)):
                raise TypeError(f"{name}: expected a torch.Tensor or numpy array, got {type(data).__name__}")
            if data.ndim != 2:
                raise ValueError(f"{name}: expected a 2-D (N, D) matrix of features, got shape {tuple(data.shape)}")
            if dim is None:
                dim = int(data.shape[1])
            elif int(data.shape[1]) != dim:
                raise ValueError(f"{name}: has dimension {data.shape[1]} but {names[0]} has {dim}; "
                                 "all feature blocks must have the same dimension")
            n = int(data.shape[0])
            sel = [(0, n)] if ranges is None else [(int(a), int(b)) for a, b in ranges[i]]
            for a, b in sel:
                if not 0 <= a <= b <= n:
                    raise ValueError(f"{name}: row range [{a}, {b}) is outside its {n} rows")
            sel = [(a, b) for a, b in sel if b > a]
            self._blocks.append(_Block(data, name, tuple(sel), sum(b - a for a, b in sel)))
        self.dim: int = 0 if dim is None else dim
        self.num_rows: int = sum(b.num_rows for b in self._blocks)
        self._starts = np.cumsum([0] + [b.num_rows for b in self._blocks])

    def __len__(self) -> int:
        return self.num_rows

    def describe_row(self, row: int) -> str:
        """Human-readable location of global row ``row`` (block name and row within it)."""
        b = int(np.searchsorted(self._starts, row, side="right")) - 1
        block = self._blocks[b]
        local = row - int(self._starts[b])
        for a, e in block.ranges:
            if local < e - a:
                return f"row {a + local} of {block.name}"
            local -= e - a
        raise IndexError(f"row {row} out of range for {self.num_rows} rows")

    def chunks(
        self, chunk_rows: int, device: torch.device | str = "cpu", *, check_finite: bool = False,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """One pass over all rows, in order.

        Yields:
            ``(start, x)``: the global index of the chunk's first row and a float32
            ``(n, D)`` tensor on ``device`` with ``n <= chunk_rows`` (a view when possible).

        Raises:
            ValueError: with ``check_finite``, a row holding NaN or inf (named by its block
                and row).
        """
        device = torch.device(device)
        start = 0
        pieces: list[torch.Tensor | np.ndarray] = []
        pending = 0
        for block in self._blocks:
            for a, b in block.ranges:
                while a < b:
                    take = min(b - a, chunk_rows - pending)
                    pieces.append(block.data[a:a + take])
                    pending += take
                    a += take
                    if pending == chunk_rows:
                        x = self._to_tensor(pieces, device)
                        if check_finite:
                            self.check_finite(x, start)
                        yield start, x
                        start += pending
                        pieces, pending = [], 0
        if pending:
            x = self._to_tensor(pieces, device)
            if check_finite:
                self.check_finite(x, start)
            yield start, x

    def gather(self, rows: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        """Rows by global index, as a float32 ``(len(rows), D)`` tensor on ``device``.

        ``rows`` must be sorted ascending (memmaps are then read front to back).
        """
        rows = np.asarray(rows.cpu() if isinstance(rows, torch.Tensor) else rows, dtype=np.int64)
        if rows.size and (rows[0] < 0 or rows[-1] >= self.num_rows):
            raise IndexError(f"row index out of range for {self.num_rows} rows")
        out: list[torch.Tensor | np.ndarray] = []
        for bi, block in enumerate(self._blocks):
            lo, hi = np.searchsorted(rows, [self._starts[bi], self._starts[bi + 1]])
            if hi == lo:
                continue
            local = rows[lo:hi] - self._starts[bi]
            # Map positions in the concatenated ranges back to block rows.
            lens = np.array([e - a for a, e in block.ranges], dtype=np.int64)
            offs = np.cumsum(np.concatenate([[0], lens[:-1]]))
            seg = np.searchsorted(offs, local, side="right") - 1
            block_rows = np.array([a for a, _ in block.ranges], dtype=np.int64)[seg] + (local - offs[seg])
            if isinstance(block.data, torch.Tensor):
                out.append(block.data[torch.from_numpy(block_rows).to(block.data.device)])
            else:
                out.append(np.asarray(block.data[block_rows]))
        if not out:
            return torch.empty(0, self.dim, dtype=torch.float32, device=device)
        return self._to_tensor(out, torch.device(device))

    @staticmethod
    def _to_tensor(pieces: list[torch.Tensor | np.ndarray], device: torch.device) -> torch.Tensor:
        ts = [p.to(device=device, dtype=torch.float32) if isinstance(p, torch.Tensor) else _from_numpy(p).to(device)
              for p in pieces]
        return ts[0] if len(ts) == 1 else torch.cat(ts)

    def check_finite(self, x: torch.Tensor, start: int) -> None:
        """Raise if chunk ``x`` (global rows from ``start``) holds NaN or inf, naming the first bad row."""
        if x.numel() and bool(torch.isfinite(x.sum())):
            return  # NaN and inf propagate into the sum (~10x cheaper than isfinite); an overflow checks exactly
        bad = ~torch.isfinite(x).all(dim=1)
        if bool(bad.any()):
            first = start + int(bad.nonzero()[0, 0])
            raise ValueError(
                f"features hold NaN or inf at {self.describe_row(first)} "
                f"({int(bad.sum())} bad rows in this chunk); fix or drop those frames before clustering")


def _from_numpy(a: np.ndarray) -> torch.Tensor:
    # Writable float32 arrays in memory are shared; memmaps (read-only) and other dtypes are
    # copied, which is also what pages the rows in.
    if a.dtype == np.float32 and a.flags.writeable and a.flags.c_contiguous:
        return torch.from_numpy(a)
    return torch.from_numpy(np.array(a, dtype=np.float32))


def sample_rows(n: int, m: int, generator: torch.Generator) -> np.ndarray:
    """``min(m, n)`` distinct indices in ``[0, n)``, sorted, drawn uniformly with ``generator``.

    Deterministic for a given generator state; memory is O(m) for huge ``n``.
    """
    if m >= n:
        return np.arange(n, dtype=np.int64)
    if n <= 1 << 24:
        return np.sort(torch.randperm(n, generator=generator)[:m].numpy())
    picked = torch.empty(0, dtype=torch.int64)
    while picked.numel() < m:
        more = torch.randint(0, n, (m - picked.numel() + m // 8 + 16,), generator=generator)
        picked = torch.cat([picked, more]).unique()
    keep = torch.randperm(picked.numel(), generator=generator)[:m]
    return np.sort(picked[keep].numpy())
