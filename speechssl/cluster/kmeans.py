"""k-means fitting in pure torch: greedy k-means++ and chunked Lloyd, in memory, streamed or distributed.

The fit runs in two phases, so that most Lloyd iterations are paid at a fraction of their cost:

1. **Initialisation on a sample.** ``init_size`` rows are drawn uniformly (all rows when
   there are fewer). ``n_init`` greedy k-means++ seedings (sklearn's variant: ``2 + ln K``
   candidates per step, keep the one that lowers the potential most) run side by side on a
   random subset of the sample (:func:`default_seed_size` rows), one GEMM per step for all of
   them; the seeding with the lowest potential wins (sklearn's ``MiniBatchKMeans`` likewise
   keeps the best of its ``n_init`` seedings by inertia) and only it runs Lloyd, on the
   subset and then on the whole sample, each to a relative inertia change of ``tol / 10``.
   When the sample is every row, this phase *is* the fit.
2. **Lloyd on the fitting rows** from the winner: every row when there are at most
   ``fit_size`` (:func:`default_fit_size`, 2048 per cluster), else a uniform sample of
   ``fit_size`` rows, as faiss trains on at most 256 rows per centroid and fairseq's HuBERT
   recipe clusters a percentage of the frames: beyond ~2000 rows a cluster, more rows move
   the centroids by less than Lloyd's stopping tolerance, and every pass costs in proportion to
   the rows. (With a sample, every row is still read once to reject NaN/inf.) Full passes in
   chunks of rows never materialise the ``N x K`` distance matrix. Distances are
   ``||x||^2 - 2 x.c + ||c||^2`` through one float32 GEMM per chunk, laid out ``(K, rows)``
   so that the minimum over ``K`` vectorises along the rows
   (:func:`~speechssl.cluster.model.nearest_centroid`); sums (float32 partials over at most
   ``_FLUSH_ROWS`` rows), counts and inertia are accumulated in float64; after the first pass
   only rows that changed cluster update the sums (each rank keeps its rows' labels, 4 bytes
   a row, against ``4 D`` bytes of features). A cluster that ends up empty is re-seeded with
   the point farthest from its centroid (as sklearn does). It stops when the relative change
   of inertia is at most ``tol`` or after ``max_iter`` updates; the returned centroids are
   always the ones whose inertia was measured, over the fitting rows.

The data may be a tensor, a numpy array or a :class:`~speechssl.cluster.rows.Rows` over
memmapped shards (read chunk by chunk on every pass, so it may exceed memory). Under
``torch.distributed`` (e.g. ``torchrun``) every rank passes its own rows; the samples are
gathered, initialised on rank 0 and broadcast, and each pass all-reduces sums, counts and
inertia, so all ranks end with the centroids a single process would find on the rows of
rank 0, then rank 1, ... concatenated (up to float rounding).
"""
from __future__ import annotations

import logging
import math
from typing import Literal

import numpy as np
import torch

from speechssl.cluster.model import KMeansModel, default_chunk_rows, nearest_centroid
from speechssl.cluster.rows import Rows, sample_rows
from speechssl.log import progress_bar

__all__ = ["fit_kmeans", "kmeans_plusplus", "default_init_size", "default_seed_size", "default_fit_size",
           "default_n_init", "fit_chunk_rows"]

_log = logging.getLogger(__name__)

# Rows per float32 partial sum before it is added to the float64 total: bounds the float32
# accumulation error of a centroid sum to ~_FLUSH_ROWS ulps in the worst case.
_FLUSH_ROWS = 4096
# The sample stages run to tol * _SAMPLE_TOL. Iterations there cost a fifth of a pass over the
# fitting rows, and converging them deeply is what reaches sklearn's inertia on speech
# features: 0.5 instead of 0.1 halved them but ended 0.5% above sklearn on 694k MFCC frames.
_SAMPLE_TOL = 0.1
# Offset of the fitting sample's seed from `seed` (a stream every rank draws identically).
_FIT_STREAM = 104729


def default_init_size(n_clusters: int) -> int:
    """Rows of the initialisation sample when ``init_size`` is not given: ``max(20000, 60 K)``."""
    return max(20000, 60 * n_clusters)


def default_seed_size(n_clusters: int) -> int:
    """Rows k-means++ seeds on (a random subset of the sample): ``max(5000, 60 K)``.

    Seeds drawn from too few rows per cluster leave Lloyd in poor local optima at large K
    (measured at K=500: 5% higher final inertia seeding on 10 rows per cluster than on 60).
    """
    return max(5000, 60 * n_clusters)


def default_fit_size(n_clusters: int) -> int:
    """Rows of the final Lloyd stage when ``fit_size`` is not given: ``max(2048 K, init size)``.

    At 2048 rows a cluster the sampling error of a centroid is ~1/2048 of the cluster's
    variance, below the default ``tol``: on 694k MFCC frames (K=50) centroids fitted on a
    102k-row sample and on every row differ in inertia by less than 0.1%.
    """
    return max(2048 * n_clusters, default_init_size(n_clusters))


def default_n_init(n_clusters: int, dim: int) -> int:
    """Seedings per fit when ``n_init`` is not given: 4 when ``K * D <= 32768``, else 1.

    Greedy k-means++ costs ``~(2 + ln K) K^2 D`` multiply-adds per seeding on ``60 K`` rows, a
    small part of the fit at MFCC sizes but most of it at hidden-state sizes (K=500, D=768).
    Extra seedings pay off on data with about K well-separated modes (on a 100-blob
    mixture the best of 4 reached sklearn's inertia where 1 seeding ended 17% above it), and
    not on speech features, whose modes outnumber the clusters (no gain measured on MFCCs or
    a HuBERT layer).
    """
    return 4 if n_clusters * dim <= 32768 else 1


def fit_chunk_rows(n_clusters: int) -> int:
    """Rows per chunk of the Lloyd passes: ``(rows, K)`` float32 distance blocks of ~2 MiB.

    Smaller than :func:`~speechssl.cluster.model.default_chunk_rows`' 8 MiB: the block and its
    row-minimum temporaries then stay in the L2 cache; one thread ran a 200k x 39, K=100 pass
    in 94 ms with 4096-row chunks against 223 ms with 20971-row ones.
    """
    return int(max(1024, min(default_chunk_rows(n_clusters), (1 << 19) // max(n_clusters, 1))))


def _bf16_matmul_is_native() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def kmeans_plusplus(
    x: torch.Tensor, n_clusters: int, *, generator: torch.Generator, n_local_trials: int | None = None,
    bf16: bool | None = None, n_seedings: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; sklearn's ``_kmeans_plusplus``).

    The first centre is a uniformly drawn row; every next one is the best of
    ``n_local_trials`` candidates drawn with probability proportional to the squared
    distance to the nearest centre so far, "best" meaning the lowest resulting potential.
    With ``n_seedings > 1``, that many independent seedings run side by side (one GEMM per
    step for all of them) and the one with the lowest final potential (the sum of squared
    distances of the rows to their nearest centre) is returned: the potential ranks seedings
    almost as well as running Lloyd from each would (sklearn's ``MiniBatchKMeans`` picks its
    ``n_init`` seedings by their inertia, too), at a fraction of the cost.

    Each step reads all ``N`` rows for a handful of candidates, so seeding is bound by memory
    bandwidth; with ``bf16`` the rows are read as bfloat16 (half the traffic, products
    accumulated in float32, norms kept in float32). The draws only need distances to a few
    significant digits; the centroids returned are exact rows of ``x``.

    Args:
        x: ``(N, D)`` float32 rows, ``N >= n_clusters``.
        n_clusters: K.
        generator: CPU generator for all random draws (so results do not depend on device).
        n_local_trials: candidates per step; default ``2 + int(ln K)``.
        bf16: read rows as bfloat16; default: on CPUs with native bf16 matmul when ``D >= 128``.
        n_seedings: independent seedings; the lowest-potential one is returned.

    Returns:
        ``(centroids, indices)``: ``(K, D)`` rows of ``x`` and their ``(K,)`` int64 indices.
    """
    indices, potential = _seedings(x, n_clusters, generator=generator, n_local_trials=n_local_trials, bf16=bf16,
                                   n_seedings=n_seedings)
    best = indices[int(potential.argmin())]
    return x[best.to(x.device)].clone(), best


def _seedings(
    x: torch.Tensor, n_clusters: int, *, generator: torch.Generator, n_local_trials: int | None, bf16: bool | None,
    n_seedings: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_seedings`` greedy k-means++ seedings at once: ``(R, K)`` row indices, ``(R,)`` potentials (float64)."""
    n = x.shape[0]
    if not 1 <= n_clusters <= n:
        raise ValueError(f"k-means++ needs 1 <= n_clusters <= rows, got n_clusters={n_clusters} for {n} rows")
    if n_seedings < 1:
        raise ValueError(f"n_seedings must be >= 1, got {n_seedings}")
    r, trials = n_seedings, n_local_trials or 2 + int(math.log(n_clusters))
    if bf16 is None:
        bf16 = x.device.type == "cpu" and x.shape[1] >= 128 and _bf16_matmul_is_native()
    x = x - x.mean(dim=0)  # centred: the distance expansion loses less to cancellation
    x_sq = x.pow(2).sum(dim=1)  # (N,)
    xm = x.to(torch.bfloat16) if bf16 else x  # what the per-step products read
    xt = xm.T  # (D, N): distances come out as (candidates, N), reduced along contiguous rows
    seeds = torch.arange(r, device=x.device)
    indices = torch.empty(r, n_clusters, dtype=torch.int64)
    first = torch.randint(n, (r,), generator=generator)
    indices[:, 0] = first
    first = first.to(x.device)
    closest = (xm[first] @ xt).float().mul_(-2.0).add_(x_sq).add_(x_sq[first, None]).clamp_min_(0)  # (R, N)
    for c in range(1, n_clusters):
        cum = torch.cumsum(closest, dim=1, dtype=torch.float64)  # (R, N)
        draws = torch.rand(r, trials, generator=generator, dtype=torch.float64).to(x.device) * cum[:, -1:]
        cand = torch.searchsorted(cum, draws).clamp_(max=n - 1)  # (R, L)
        flat = cand.flatten()
        d = (xm[flat] @ xt).float().mul_(-2.0).add_(x_sq).add_(x_sq[flat, None]).clamp_min_(0)  # (R L, N)
        d = torch.minimum(d.view(r, trials, n), closest[:, None], out=d.view(r, trials, n))  # (R, L, N)
        best = d.sum(dim=2, dtype=torch.float64).argmin(dim=1)  # (R,)
        closest = d[seeds, best]  # (R, N)
        indices[:, c] = cand[seeds, best].cpu()
    return indices, closest.sum(dim=1, dtype=torch.float64).cpu()


class _Comm:
    """Collectives over the default ``torch.distributed`` group; no-ops in a single process."""

    def __init__(self, local: bool = False) -> None:
        import torch.distributed as dist

        self.active = (not local and dist.is_available() and dist.is_initialized()
                       and dist.get_world_size() > 1)
        self.rank = dist.get_rank() if self.active else 0
        self.world = dist.get_world_size() if self.active else 1
        self.device = torch.device("cpu")
        if self.active and dist.get_backend() == "nccl":
            self.device = torch.device("cuda", torch.cuda.current_device())

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return t
        import torch.distributed as dist

        buf = t.to(self.device)
        dist.all_reduce(buf)
        return buf.to(t.device)

    def broadcast(self, t: torch.Tensor, src: int = 0) -> torch.Tensor:
        if not self.active:
            return t
        import torch.distributed as dist

        buf = t.to(self.device).contiguous()
        dist.broadcast(buf, src)
        return buf.to(t.device)

    def all_gather(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate (in rank order) tensors whose first dimension may differ across ranks."""
        if not self.active:
            return t
        import torch.distributed as dist

        n = torch.tensor([t.shape[0]], dtype=torch.int64, device=self.device)
        sizes = [torch.zeros_like(n) for _ in range(self.world)]
        dist.all_gather(sizes, n)
        sizes_i = [int(s) for s in sizes]
        pad = torch.zeros((max(sizes_i),) + tuple(t.shape[1:]), dtype=t.dtype, device=self.device)
        pad[: t.shape[0]] = t.to(self.device)
        parts = [torch.empty_like(pad) for _ in range(self.world)]
        dist.all_gather(parts, pad)
        return torch.cat([p[:s] for p, s in zip(parts, sizes_i)]).to(t.device)


class _Passes:
    """Full passes over one rank's rows: Lloyd statistics and farthest points.

    Distances are computed relative to a fixed ``shift`` (a point near the data mean, the
    same on every rank): with ``c' = c - shift``, ``||x - c||^2 - ||x - shift||^2 =
    ||c'||^2 + 2 shift.c' - 2 x.c'``. The float32 GEMM then multiplies by the small ``c'``
    instead of ``c``, which keeps rounding errors at the scale of the clusters rather than of
    the data's offset from the origin (MFCC energy, un-normalised hidden states).
    """

    def __init__(self, rows: Rows, comm: _Comm, device: torch.device, chunk_rows: int, offset: int,
                 shift: torch.Tensor, check_finite: bool) -> None:
        self.rows, self.comm, self.device, self.chunk_rows = rows, comm, device, chunk_rows
        self.offset = offset  # global index of this rank's first row
        self._shift = shift.to(device=device, dtype=torch.float64)  # (D,)
        self._check = check_finite
        self._sq_total: float | None = None  # sum of ||x - shift||^2 over all ranks' rows
        # Labels of the previous pass and this rank's sums/counts under them: later passes only
        # add the rows that changed cluster (a few percent once Lloyd settles).
        self._labels: torch.Tensor | None = None  # (N_local,) int32
        self._sums = torch.zeros(0, dtype=torch.float64, device=device)  # (K, D)
        self._counts = torch.zeros(0, dtype=torch.int64, device=device)  # (K,)

    def forget_labels(self) -> None:
        """Make the next pass recompute sums from scratch (after centroids were moved by hand)."""
        self._labels = None

    def _shifted_centroids(self, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = centroids.double() - self._shift  # (K, D)
        return c.float(), (c.pow(2).sum(dim=1) + 2.0 * (c @ self._shift)).float()

    def lloyd(self, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Sums ``(K, D)`` float64, counts ``(K,)`` float64 and inertia over all ranks."""
        k, dim = centroids.shape
        c, bias = self._shifted_centroids(centroids)
        fresh = self._labels is None
        if fresh:
            self._labels = torch.empty(self.rows.num_rows, dtype=torch.int32, device=self.device)
            self._sums = torch.zeros(k, dim, dtype=torch.float64, device=self.device)
            self._counts = torch.zeros(k, dtype=torch.int64, device=self.device)
        part = torch.empty(k, dim, dtype=torch.float32, device=self.device)
        shifted_total = torch.zeros((), dtype=torch.float64, device=self.device)
        sq = torch.zeros((), dtype=torch.float64, device=self.device)
        first = self._sq_total is None
        error = None
        try:
            shift32 = self._shift.float()
            for start, x in self.rows.chunks(self.chunk_rows, self.device):
                shifted, labels = nearest_centroid(x, c, bias)
                if first and self._check and not bool(torch.isfinite(shifted).all()):
                    # A NaN/inf feature makes its row's distances non-finite: one check of N
                    # values instead of N x D; the labels of such rows are garbage, so stop here.
                    self.rows.check_finite(x, start)
                    bad = start + int((~torch.isfinite(shifted)).nonzero()[0, 0])
                    raise ValueError(f"squared distances overflow float32 at {self.rows.describe_row(bad)}; "
                                     "the features are too large, scale them down")
                shifted_total += shifted.sum(dtype=torch.float64)
                if first:
                    sq += torch.sub(x, shift32).pow_(2).sum(dtype=torch.float64)
                stored = self._labels[start:start + labels.numel()]
                if fresh:
                    self._add(part, labels, x, 1.0)
                else:
                    moved = (labels != stored).nonzero().squeeze(1)
                    if moved.numel():
                        self._add(part, labels[moved], x[moved], 1.0)
                        self._add(part, stored[moved].long(), x[moved], -1.0)
                stored.copy_(labels)
        except ValueError as exc:  # bad rows: every rank must learn of it, or the others would hang
            error = str(exc)
        flag = torch.tensor([0.0 if error is None else 1.0], dtype=torch.float64, device=self.device)
        packed = torch.cat([self._sums.flatten(), self._counts.double(), shifted_total[None], sq[None], flag])
        packed = self.comm.all_reduce(packed)
        if float(packed[-1]) > 0:
            self._labels = None
            raise ValueError(error or "another process found bad feature rows (see its error)")
        packed = packed[:-1]
        sums = packed[: k * dim].view(k, dim)
        counts_f = packed[k * dim: k * dim + k]
        if first:
            self._sq_total = float(packed[-1])
        # sum ||x - c||^2 = sum ||x - shift||^2 + sum (||c'||^2 + 2 shift.c' - 2 x.c')
        inertia = max(self._sq_total + float(packed[-2]), 0.0)
        return sums, counts_f, inertia

    def _add(self, part: torch.Tensor, labels: torch.Tensor, x: torch.Tensor, sign: float) -> None:
        """``sums[labels] += sign * x`` (float32 partials of at most _FLUSH_ROWS rows), counts too."""
        self._counts += torch.bincount(labels, minlength=part.shape[0]) * int(sign)
        for s in range(0, x.shape[0], _FLUSH_ROWS):
            part.zero_().index_add_(0, labels[s:s + _FLUSH_ROWS], x[s:s + _FLUSH_ROWS])
            self._sums.add_(part, alpha=sign)

    def farthest(self, centroids: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The ``m`` rows (over all ranks) farthest from their nearest centroid.

        Returns ``(dist (m,), x (m, D), labels (m,))``, farthest first, ties broken by row
        index so that the choice does not depend on how rows are split across ranks.
        """
        dim = centroids.shape[1]
        c, bias = self._shifted_centroids(centroids)
        best_d = torch.empty(0, dtype=torch.float64, device=self.device)
        best_i = torch.empty(0, dtype=torch.int64, device=self.device)
        best_x = torch.empty(0, dim, dtype=torch.float32, device=self.device)
        best_l = torch.empty(0, dtype=torch.int64, device=self.device)
        for start, x in self.rows.chunks(self.chunk_rows, self.device):
            shifted, labels = nearest_centroid(x, c, bias)
            d = ((x.double() - self._shift).pow(2).sum(dim=1) + shifted).clamp_min(0)
            top = d.topk(min(m, d.numel())).indices
            best_d = torch.cat([best_d, d[top]])
            best_i = torch.cat([best_i, top + start + self.offset])
            best_x = torch.cat([best_x, x[top]])
            best_l = torch.cat([best_l, labels[top]])
            keep = _order(best_d, best_i)[:m]
            best_d, best_i, best_x, best_l = best_d[keep], best_i[keep], best_x[keep], best_l[keep]
        packed = torch.cat([best_d[:, None], best_i[:, None].double(), best_l[:, None].double(),
                            best_x.double()], dim=1)
        packed = self.comm.all_gather(packed)
        keep = _order(packed[:, 0], packed[:, 1].long())[:m]
        packed = packed[keep]
        return packed[:, 0], packed[:, 3:].float(), packed[:, 2].long()


def _order(dist: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Permutation sorting by distance descending, then row index ascending."""
    by_index = torch.argsort(index)
    return by_index[torch.argsort(dist[by_index], descending=True, stable=True)]


def _lloyd(passes: _Passes, centroids: torch.Tensor, *, max_iter: int, tol: float,
           desc: str, progress: bool) -> tuple[torch.Tensor, float, int, bool, int]:
    """Lloyd iterations from ``centroids``.

    Returns ``(centroids, inertia, n_updates, converged, n_empty)``; ``n_empty`` counts the
    clusters without points under the returned centroids.
    """
    bar = None
    if progress and passes.comm.rank == 0:
        bar = progress_bar(total=max_iter, desc=desc, unit="it", leave=False)
    prev = math.inf
    converged = False
    n_updates = 0
    try:
        while True:
            sums, counts, inertia = passes.lloyd(centroids)
            change = (prev - inertia) / inertia if inertia > 0 else 0.0
            _log.debug("%s: iteration %d inertia %.8g relative change %.3g", desc, n_updates, inertia, change)
            if bar is not None:
                bar.set_postfix(inertia=f"{inertia:.6g}", change=f"{change:.2e}", refresh=False)
            if abs(change) <= tol:
                converged = True
                break
            if n_updates == max_iter:
                break
            empty = (counts == 0).nonzero().squeeze(1)
            if empty.numel():
                sums, counts = _repair_empty(passes, centroids, sums, counts, empty)
                passes.forget_labels()  # the relocated points' sums no longer match stored labels
            nonempty = counts > 0
            new = centroids.clone()
            new[nonempty] = (sums[nonempty] / counts[nonempty, None]).float()
            centroids, prev = new, inertia
            n_updates += 1
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return centroids, inertia, n_updates, converged, int((counts == 0).sum())


def _repair_empty(passes: _Passes, centroids: torch.Tensor, sums: torch.Tensor, counts: torch.Tensor,
                  empty: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the points farthest from their centroid into the empty clusters (sklearn's relocation)."""
    dist, x, labels = passes.farthest(centroids, int(empty.numel()))
    usable = int((dist > 0).sum())
    if usable < empty.numel():
        _log.warning("%d clusters are empty and only %d points lie away from their centroid: the data has "
                     "fewer distinct points than clusters; those clusters keep their old centroid",
                     int(empty.numel()), usable)
    sums, counts = sums.clone(), counts.clone()
    for j, xi, li in zip(empty[:usable].tolist(), x[:usable], labels[:usable].tolist()):
        sums[li] -= xi.double()
        counts[li] -= 1
        sums[j] = xi.double()
        counts[j] = 1
    _log.info("re-seeded %d empty cluster(s) with the farthest points", usable)
    return sums, counts


def _as_rows(data: torch.Tensor | np.ndarray | Rows) -> Rows:
    if isinstance(data, Rows):
        return data
    if isinstance(data, (torch.Tensor, np.ndarray)):
        return Rows([data], names=["input"])
    raise TypeError(f"expected a (N, D) tensor, numpy array or Rows, got {type(data).__name__}")


def fit_kmeans(
    data: torch.Tensor | np.ndarray | Rows,
    n_clusters: int,
    *,
    max_iter: int = 100,
    tol: float = 2e-3,
    n_init: int | None = None,
    init: Literal["k-means++", "random"] | torch.Tensor = "k-means++",
    init_size: int | None = None,
    fit_size: int | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    chunk_rows: int | None = None,
    check_finite: bool = True,
    feature: str = "",
    progress: bool = False,
) -> KMeansModel:
    """Fit k-means to ``(N, D)`` rows (see the module docstring for the algorithm).

    Args:
        data: ``(N, D)`` float rows: tensor, numpy array (memmaps are streamed) or
            :class:`Rows` over several shards. Under ``torch.distributed``, this rank's rows.
        n_clusters: K.
        max_iter: maximum Lloyd updates per phase (sample phase, then full data).
        tol: stop the final phase when ``|inertia_prev - inertia| / inertia <= tol`` (the
            sample stages use ``tol / 10``). The default stops once a pass gains less than
            0.2%; ``1e-4`` runs Lloyd nearly to convergence for ~0.3% lower inertia at ~3x the time.
        n_init: k-means++ seedings run side by side on the seeding subset; the one with the
            lowest potential runs Lloyd (for ``init="random"``: restarts with Lloyd each, the
            lowest sample inertia wins). Default :func:`default_n_init`.
        init: ``"k-means++"`` (greedy), ``"random"`` (K distinct sample rows), or a ``(K, D)``
            tensor of initial centroids (then the sample phase is skipped).
        init_size: rows of the initialisation sample (default :func:`default_init_size`).
        fit_size: rows of the final phase: every row when there are at most this many, else
            a uniform sample of this many (default :func:`default_fit_size`); ``0``: every row.
        seed: seeds every random draw (sample, seeding); same seed, same centroids.
        device: where to compute (default: the device of ``data`` if a tensor, else CPU).
        chunk_rows: rows per chunk (default: ``(rows, K)`` float32 blocks of ~8 MiB).
        check_finite: reject NaN/inf rows (checked on the first pass).
        feature: description stored in the model (e.g. ``"mfcc 39-d 100 Hz"``).
        progress: show tqdm bars (rank 0 only).

    Returns:
        The fitted :class:`KMeansModel` (identical on every rank); its ``inertia`` and
        ``n_samples`` are those of the fitting rows.

    Raises:
        ValueError: no rows, ``n_clusters`` outside ``[1, N]``, NaN/inf rows (named), bad
            ``init`` shape or options.
    """
    rows = _as_rows(data)
    comm = _Comm()
    if device is None:
        device = data.device if isinstance(data, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    if max_iter < 0 or (n_init is not None and n_init < 1) or tol < 0 or (fit_size is not None and fit_size < 0):
        raise ValueError(f"need max_iter >= 0, n_init >= 1, tol >= 0 and fit_size >= 0; got {max_iter}, {n_init}, "
                         f"{tol}, {fit_size}")
    counts = comm.all_gather(torch.tensor([[rows.num_rows, rows.dim]], dtype=torch.int64))
    n_total = int(counts[:, 0].sum())
    dims = {int(d) for n, d in counts.tolist() if n > 0}
    if n_total == 0:
        raise ValueError("k-means got no rows to fit (empty input); check the feature files")
    if len(dims) > 1:
        raise ValueError(f"ranks hold features of different dimensions {sorted(dims)}")
    dim = dims.pop()
    n_init = default_n_init(n_clusters, dim) if n_init is None else n_init
    if not 1 <= n_clusters <= n_total:
        raise ValueError(f"n_clusters={n_clusters} must be between 1 and the number of rows ({n_total}); "
                         "use fewer clusters or more data")
    offset = int(counts[: comm.rank, 0].sum())
    chunk_rows = chunk_rows or fit_chunk_rows(n_clusters)
    g = torch.Generator().manual_seed(seed)

    if isinstance(init, torch.Tensor):
        if tuple(init.shape) != (n_clusters, dim):
            raise ValueError(f"init centroids have shape {tuple(init.shape)}, expected ({n_clusters}, {dim})")
        centroids = init.detach().to(device=device, dtype=torch.float32).clone()
        sample_is_all = False
    elif init in ("k-means++", "random"):
        m = min(n_total, init_size or default_init_size(n_clusters))
        if m < n_clusters:
            raise ValueError(f"init_size={m} is smaller than n_clusters={n_clusters}")
        centroids, sample_inertia = _init_on_sample(
            rows, comm, device, n_clusters, dim, m, offset, init, n_init, max_iter, tol, g, check_finite,
            chunk_rows, progress)
        sample_is_all = m == n_total
    else:
        raise ValueError(f"init must be 'k-means++', 'random' or a (K, D) tensor, got {init!r}")

    fit_size = default_fit_size(n_clusters) if fit_size is None else fit_size
    n_fit = n_total if fit_size == 0 else min(n_total, max(fit_size, n_clusters))
    if sample_is_all:
        # The sample was every row: phase 1 already ran Lloyd on the full data.
        inertia, n_iter, converged, n_empty = sample_inertia
    else:
        shift = centroids.double().mean(dim=0)  # identical on every rank
        fit_rows, fit_offset = rows, offset
        if n_fit < n_total:
            if check_finite:
                _check_all_finite(rows, comm, device, chunk_rows)
            # its own stream: rank 0 alone has drawn from `g` during the initialisation
            fit_gen = torch.Generator().manual_seed(seed + _FIT_STREAM)
            fit_rows, fit_offset = _sample_as_rows(rows, device, n_total, n_fit, offset, dim, fit_gen)
        passes = _Passes(fit_rows, comm, device, chunk_rows, fit_offset, shift, check_finite and n_fit == n_total)
        centroids, inertia, n_iter, converged, n_empty = _lloyd(
            passes, centroids, max_iter=max_iter, tol=tol, desc="k-means", progress=progress)
    if n_empty:
        _log.warning("%d of %d clusters are empty: the data has fewer distinct points than clusters",
                     n_empty, n_clusters)
    if not converged:
        _log.warning("k-means stopped after max_iter=%d updates before the relative inertia change "
                     "reached tol=%g", max_iter, tol)
    n_fitted = n_total if sample_is_all else n_fit
    _log.info("k-means: K=%d on %s x %d rows, inertia %.6g (%.6g per row), %d updates%s",
              n_clusters, f"{n_fitted}" if n_fitted == n_total else f"a sample of {n_fitted} of {n_total}", dim,
              inertia, inertia / n_fitted, n_iter, "" if converged else " (not converged)")
    return KMeansModel(centroids=centroids, inertia=inertia, n_samples=n_fitted, n_iter=n_iter,
                       converged=converged, seed=seed, feature=feature)


def _check_all_finite(rows: Rows, comm: _Comm, device: torch.device, chunk_rows: int) -> None:
    """Read every row once and raise (on every rank together) if one holds NaN or inf."""
    error = None
    try:
        for _ in rows.chunks(max(chunk_rows, 1 << 15), device, check_finite=True):
            pass
    except ValueError as exc:
        error = str(exc)
    if float(comm.all_reduce(torch.tensor([0.0 if error is None else 1.0], dtype=torch.float64))[0]) > 0:
        raise ValueError(error or "another process found NaN or inf in its features (see its error)")


def _local_sample(rows: Rows, device: torch.device, n_total: int, m: int, offset: int, dim: int,
                  g: torch.Generator) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """A uniform ``m``-row sample of all ranks' rows (global indices, every rank the same draw),
    this rank's share as local indices, and those rows ``(m_local, D)``."""
    picked = sample_rows(n_total, m, g)
    mine = picked[(picked >= offset) & (picked < offset + rows.num_rows)] - offset
    local = rows.gather(mine, device)
    if local.shape[1] != dim:  # a rank without rows (its Rows has dimension 0)
        local = local.new_zeros(0, dim)
    return picked, mine, local


def _sample_as_rows(rows: Rows, device: torch.device, n_total: int, m: int, offset: int, dim: int,
                    g: torch.Generator) -> tuple[Rows, int]:
    """This rank's share of a uniform ``m``-row sample of all ranks' rows, and its offset in the sample."""
    picked, _, local = _local_sample(rows, device, n_total, m, offset, dim, g)
    before = int(np.searchsorted(picked, offset))  # sampled rows of the lower ranks
    return Rows([local], names=[f"the {m}-row fitting sample"]), before


def _init_on_sample(
    rows: Rows, comm: _Comm, device: torch.device, k: int, dim: int, m: int, offset: int, init: str, n_init: int,
    max_iter: int, tol: float, g: torch.Generator, check_finite: bool, chunk_rows: int, progress: bool,
) -> tuple[torch.Tensor, tuple[float, int, bool, int]]:
    """Phase 1: seed ``n_init`` times on an ``m``-row sample, keep the best, Lloyd on it (rank 0)."""
    n_total = int(comm.all_reduce(torch.tensor(rows.num_rows, dtype=torch.int64)))
    _, mine, local = _local_sample(rows, device, n_total, m, offset, dim, g)
    if check_finite:
        bad = (~torch.isfinite(local).all(dim=1)).nonzero()
        if int(comm.all_reduce(torch.tensor(bad.shape[0], dtype=torch.int64))):  # all ranks raise together
            if not bad.numel():
                raise ValueError("another process found NaN or inf in its features (see its error)")
            raise ValueError(f"features hold NaN or inf at {rows.describe_row(int(mine[int(bad[0, 0])]))}; "
                             "fix or drop those frames before clustering")
    sample = comm.all_gather(local)
    if comm.rank == 0:
        centroids, stats = _best_start(sample, k, init, n_init, max_iter, tol, g, chunk_rows, progress)
        meta = torch.tensor(stats, dtype=torch.float64)
    else:
        centroids = torch.empty(k, sample.shape[1], dtype=torch.float32, device=device)
        meta = torch.zeros(4, dtype=torch.float64)
    centroids = comm.broadcast(centroids)
    meta = comm.broadcast(meta)
    return centroids, (float(meta[0]), int(meta[1]), bool(meta[2]), int(meta[3]))


def _best_start(
    sample: torch.Tensor, k: int, init: str, n_init: int, max_iter: int, tol: float, g: torch.Generator,
    chunk_rows: int, progress: bool,
) -> tuple[torch.Tensor, tuple[float, int, float, int]]:
    """Seeding and Lloyd on nested subsets: ``n_init`` seedings on a seeding subset, the best
    one refined on the whole sample. Returns the centroids and ``(inertia, n_updates,
    converged, n_empty)`` of the last stage (the final answer when the sample is every row)."""
    m = sample.shape[0]
    n_seed = min(m, max(k, default_seed_size(k)))
    subset = sample if n_seed == m else sample[torch.randperm(m, generator=g)[:n_seed].to(sample.device)]
    shift = sample.double().mean(dim=0)
    stages = [subset] if n_seed == m else [subset, sample]
    passes = [_Passes(Rows([s], names=["initialisation sample"]), _Comm(local=True), sample.device, chunk_rows, 0,
                      shift, False) for s in stages]
    # Stages on at most init_size rows are cheap: they run to tol * _SAMPLE_TOL (also when the
    # sample is every row and they are the whole fit).
    stage_tol = tol * _SAMPLE_TOL
    if init == "k-means++":
        # Cheap restarts: n_init seedings side by side, the lowest k-means++ potential wins,
        # and only that one runs Lloyd.
        c0, _ = kmeans_plusplus(subset, k, generator=g, n_seedings=n_init)
        c, inertia, n_iter, converged, n_empty = _lloyd(
            passes[0], c0, max_iter=max_iter, tol=stage_tol, desc="k-means init", progress=progress)
        _log.debug("best of %d seedings: inertia %.8g on %d rows after %d updates", n_init, inertia, n_seed, n_iter)
    else:
        best: tuple[float, torch.Tensor, int, bool, int] | None = None
        for r in range(n_init):
            c0 = subset[torch.from_numpy(sample_rows(n_seed, k, g)).to(sample.device)].clone()
            passes[0].forget_labels()
            c, inertia, n_iter, converged, n_empty = _lloyd(
                passes[0], c0, max_iter=max_iter, tol=stage_tol, desc=f"k-means init {r + 1}/{n_init}",
                progress=progress)
            _log.debug("restart %d/%d: inertia %.8g on %d rows after %d updates", r + 1, n_init, inertia, n_seed,
                       n_iter)
            if best is None or inertia < best[0]:
                best = (inertia, c, n_iter, converged, n_empty)
        assert best is not None
        inertia, c, n_iter, converged, n_empty = best
    if len(stages) > 1:
        c, inertia, n_iter, converged, n_empty = _lloyd(
            passes[1], c, max_iter=max_iter, tol=stage_tol, desc="k-means sample", progress=progress)
        _log.debug("sample: inertia %.8g on %d rows after %d updates", inertia, m, n_iter)
    return c, (inertia, n_iter, float(converged), n_empty)
