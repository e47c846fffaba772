"""Transitive Invariance's graph: inter- and intra-instance edges, and the positive pairs transitivity gives.

Wang, He and Gupta (ICCV 2017) organise their training data as a graph whose nodes are object
patches and whose edges are of two kinds:

* **inter-instance** edges join *different* instances that look alike (the same cluster of a
  self-supervised feature: "different instances but a similar viewpoint and category");
* **intra-instance** edges join two views of *one* instance (in the paper, patches tracked
  through a video: "different viewpoints of the same instance").

Transitivity turns the two into pairs neither kind gives alone: when ``a — b`` is an inter-instance
edge and ``b — b'`` an intra-instance edge, ``(a, b')`` is a positive pair — a different
instance in a different view. :func:`transitive_pairs` is that rule over an explicit edge list
(the specification, dense, for small graphs and tests).

:class:`ClusterGraph` is the graph of an image corpus, held implicitly: node ``(i, v)`` is view
``v`` of image ``i``, ``v = 0`` the image itself and ``v = 1 .. V-1`` its augmented views. The
image corpus has no video, so random augmentation stands in for tracking: intra-instance edges
join ``(i, 0)`` to each ``(i, v)``; inter-instance edges join ``(i, 0)`` and ``(j, 0)`` for
``i != j`` of one k-means cluster. Its transitive pairs are therefore ``((i, 0), (j, v))`` with
``i, j`` distinct images of one cluster and ``v >= 1``; :meth:`ClusterGraph.sample_partner`
draws the ``j`` of such a pair (or of an intra- or inter-instance pair) and
:meth:`ClusterGraph.sample_negative` an image of another cluster, each with one draw of an
explicit ``torch.Generator``. Training draws a fresh augmentation for every use, which is the
same graph with as many view nodes per image as there are draws.
"""
from __future__ import annotations

from typing import Literal

import torch

__all__ = ["transitive_pairs", "ClusterGraph", "PAIR_KINDS", "KIND_ID"]

#: the kinds of positive pairs: (a, b') by transitivity, (a, a') along an intra edge, (a, b) along an inter edge
PAIR_KINDS = ("transitive", "intra", "inter")
#: kind name → the integer that items and batches carry
KIND_ID = {k: i for i, k in enumerate(PAIR_KINDS)}

Kind = Literal["transitive", "intra", "inter"]


def _edges(edges: torch.Tensor, num_nodes: int, what: str) -> torch.Tensor:
    edges = torch.as_tensor(edges, dtype=torch.long).reshape(-1, 2)
    if edges.numel() and (int(edges.min()) < 0 or int(edges.max()) >= num_nodes):
        raise ValueError(f"{what} edges must join nodes in [0, {num_nodes}), found {int(edges.min())}..{int(edges.max())}")
    if bool((edges[:, 0] == edges[:, 1]).any()):
        raise ValueError(f"{what} edges must join two different nodes; found a self-loop")
    return edges


def _adjacency(edges: torch.Tensor, num_nodes: int) -> torch.Tensor:
    a = torch.zeros(num_nodes, num_nodes, dtype=torch.bool)
    a[edges[:, 0], edges[:, 1]] = True
    a[edges[:, 1], edges[:, 0]] = True
    return a


def transitive_pairs(num_nodes: int, inter_edges: torch.Tensor, intra_edges: torch.Tensor) -> torch.Tensor:
    """Positive pairs by transitivity: ``{a, b'}`` for every inter edge ``a — b`` and intra edge ``b — b'``.

    Edges are undirected, so an inter edge ``a — b`` with intra edges at both ends gives
    ``{a, b'}`` and ``{b, a'}``. Two inter edges in a row (``a — b — c``) give no pair: the rule
    crosses exactly one edge of each kind. A pair of a node with itself is never returned.

    Args:
        num_nodes: ``V``; nodes are ``0 .. V-1``.
        inter_edges: ``(E, 2)`` int64 node pairs of inter-instance edges.
        intra_edges: ``(F, 2)`` int64 node pairs of intra-instance edges.

    Returns:
        ``(P, 2)`` int64 unordered pairs as ``(min, max)``, sorted lexicographically, no duplicates.
    """
    if num_nodes < 0:
        raise ValueError(f"num_nodes must be >= 0, got {num_nodes}")
    inter = _adjacency(_edges(inter_edges, num_nodes, "inter-instance"), num_nodes)
    intra = _adjacency(_edges(intra_edges, num_nodes, "intra-instance"), num_nodes)
    reach = (inter.to(torch.int64) @ intra.to(torch.int64)) > 0  # (V, V): a — b inter, b — b' intra
    reach = reach | reach.T
    reach.fill_diagonal_(False)
    return torch.triu(reach, diagonal=1).nonzero()  # row-major: lexicographic order


class ClusterGraph:
    """The graph of an image corpus from one k-means assignment (see the module docstring).

    Args:
        clusters: ``(N,)`` int64 cluster id of every image (any non-negative ids; empty clusters
            are allowed).
        views: ``V`` nodes per image when the graph is materialised (:meth:`inter_edges`,
            :meth:`intra_edges`): the image and ``V - 1`` augmented views.

    Attributes:
        num_images: ``N``.
        clusters: the ``(N,)`` assignment.
    """

    def __init__(self, clusters: torch.Tensor, views: int = 2) -> None:
        clusters = torch.as_tensor(clusters, dtype=torch.long).reshape(-1)
        if clusters.numel() == 0:
            raise ValueError("a ClusterGraph needs at least one image")
        if int(clusters.min()) < 0:
            raise ValueError(f"cluster ids must be >= 0, found {int(clusters.min())}")
        if views < 1:
            raise ValueError(f"views must be >= 1, got {views}")
        self.clusters, self.views, self.num_images = clusters, int(views), int(clusters.numel())
        # images sorted by cluster (stable: image order within a cluster), each cluster a block
        self._order = torch.argsort(clusters, stable=True)
        counts = torch.bincount(clusters)
        starts = torch.cumsum(counts, 0) - counts
        self._start = starts[clusters]  # (N,) first sorted position of each image's cluster
        self._size = counts[clusters]  # (N,) size of each image's cluster
        self._rank = torch.empty_like(clusters)
        self._rank[self._order] = torch.arange(self.num_images) - starts[clusters[self._order]]  # position in the block
        self.num_clusters_used = int((counts > 0).sum())

    @property
    def num_nodes(self) -> int:
        return self.num_images * self.views

    def node(self, image: int, view: int) -> int:
        """Node id of view ``view`` of image ``image``: ``image * V + view``."""
        return int(image) * self.views + int(view)

    def members(self, image: int) -> torch.Tensor:
        """The images of ``image``'s cluster, itself included, in image order."""
        s, n = int(self._start[image]), int(self._size[image])
        return self._order[s:s + n]

    def inter_edges(self) -> torch.Tensor:
        """``(E, 2)`` inter-instance edges ``(i, 0) — (j, 0)``, ``i < j`` of one cluster."""
        same = self.clusters[:, None] == self.clusters[None, :]
        i, j = torch.triu(same, diagonal=1).nonzero().unbind(1)
        return torch.stack([i * self.views, j * self.views], 1)

    def intra_edges(self) -> torch.Tensor:
        """``(F, 2)`` intra-instance edges ``(i, 0) — (i, v)``, ``v = 1 .. V-1``."""
        i = torch.arange(self.num_images).repeat_interleave(self.views - 1)
        v = torch.arange(1, self.views).repeat(self.num_images)
        return torch.stack([i * self.views, i * self.views + v], 1)

    def sample_partner(self, image: int, kind: Kind, generator: torch.Generator) -> tuple[int, Kind]:
        """The other end of a positive pair of anchor ``image``, with one draw of ``generator``.

        ``"transitive"`` and ``"inter"``: an image ``j != image`` of its cluster, uniformly (the
        pair is then ``((image, 0), (j, view))``, resp. ``((image, 0), (j, 0))``); ``"intra"``:
        the image itself. An image alone in its cluster has no such ``j``: the pair falls back
        to ``"intra"``. The draw always happens, whatever the kind.

        Returns:
            ``(j, kind)`` — the partner image and the kind of pair actually formed.
        """
        if kind not in KIND_ID:
            raise ValueError(f"pair kind must be one of {', '.join(PAIR_KINDS)}, got {kind!r}")
        u = float(torch.rand((), generator=generator))
        others = int(self._size[image]) - 1
        if kind == "intra" or others == 0:
            return int(image), "intra"
        r = min(int(u * others), others - 1)
        r += int(r >= int(self._rank[image]))  # skip the anchor's own position in its block
        return int(self._order[int(self._start[image]) + r]), kind

    def sample_negative(self, image: int, generator: torch.Generator) -> int:
        """An image of another cluster, uniformly, with one draw of ``generator``; when every image
        shares ``image``'s cluster, any other image (``image`` itself for a one-image corpus)."""
        u = float(torch.rand((), generator=generator))
        s, n = int(self._start[image]), int(self._size[image])
        outside = self.num_images - n
        if outside == 0:
            if self.num_images == 1:
                return int(image)
            r = min(int(u * (self.num_images - 1)), self.num_images - 2)
            return r + int(r >= image)
        r = min(int(u * outside), outside - 1)
        return int(self._order[r if r < s else r + n])
