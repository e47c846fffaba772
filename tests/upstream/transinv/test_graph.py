"""Transitive Invariance's graph: transitive pairs of hand-built graphs, the image graph's edges, and the
samplers' supports against the explicit pairs."""
from __future__ import annotations

import pytest
import torch

from speechssl.upstream.transinv.graph import ClusterGraph, transitive_pairs


def _pairs(t: torch.Tensor) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in t.tolist()}


def test_transitive_pairs_of_a_hand_built_graph():
    # inter 0 - 1 - 2 (a chain of two inter edges), intra 1 - 3, 2 - 4, 0 - 5; node 6 alone
    inter = torch.tensor([[0, 1], [2, 1]])
    intra = torch.tensor([[1, 3], [4, 2], [0, 5]])
    got = transitive_pairs(7, inter, intra)
    # 0-1 inter then 1-3 intra: (0, 3); 1-0 inter then 0-5 intra: (1, 5); 1-2 then 2-4: (1, 4); 2-1 then 1-3: (2, 3)
    assert got.tolist() == [[0, 3], [1, 4], [1, 5], [2, 3]]  # sorted, (min, max)
    assert (0, 2) not in _pairs(got)  # two inter edges in a row are no transitive pair
    assert not any(6 in p for p in _pairs(got))


def test_transitive_pairs_drop_self_pairs_and_duplicates():
    # a - b inter and b - a' intra where a' is a again would be a self pair; two routes to one pair count once
    inter = torch.tensor([[0, 1], [0, 2]])
    intra = torch.tensor([[1, 3], [2, 3], [1, 0]])
    got = _pairs(transitive_pairs(4, inter, intra))
    # 0-1,1-3 -> (0,3); 0-2,2-3 -> (0,3) again; 0-1,1-0 -> self, dropped; 1-0,0-1 -> self; 2-0,0-1 -> (1,2)
    assert got == {(0, 3), (1, 2)}


def test_transitive_pairs_validate_edges():
    with pytest.raises(ValueError, match=r"inter-instance edges must join nodes in \[0, 3\)"):
        transitive_pairs(3, torch.tensor([[0, 3]]), torch.zeros(0, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="self-loop"):
        transitive_pairs(3, torch.zeros(0, 2, dtype=torch.long), torch.tensor([[1, 1]]))
    assert transitive_pairs(3, torch.zeros(0, 2, dtype=torch.long), torch.tensor([[0, 1]])).shape == (0, 2)


def test_cluster_graph_edges_by_hand():
    g = ClusterGraph(torch.tensor([0, 0, 1, 1, 1, 2]), views=3)
    assert g.num_nodes == 18 and g.node(2, 1) == 7
    # same-cluster images {0, 1} and {2, 3, 4} joined at their view-0 nodes 0, 3 and 6, 9, 12
    assert _pairs(g.inter_edges()) == {(0, 3), (6, 9), (6, 12), (9, 12)}
    intra = _pairs(g.intra_edges())
    assert len(intra) == 12 and {(0, 1), (0, 2), (15, 16), (15, 17)} <= intra
    assert g.members(3).tolist() == [2, 3, 4] and g.members(5).tolist() == [5]


def test_image_graph_transitive_pairs_are_other_images_views_of_the_cluster():
    clusters = torch.tensor([2, 0, 2, 2, 0, 1])
    g = ClusterGraph(clusters, views=3)
    want = {tuple(sorted((g.node(i, 0), g.node(j, v)))) for i in range(6) for j in range(6) for v in (1, 2)
            if i != j and clusters[i] == clusters[j]}
    assert _pairs(transitive_pairs(g.num_nodes, g.inter_edges(), g.intra_edges())) == want


def test_partner_sampler_covers_exactly_the_transitive_pairs():
    clusters = torch.tensor([1, 1, 0, 1, 0, 3])  # image 5 is alone in its cluster
    g = ClusterGraph(clusters, views=2)
    gen = torch.Generator().manual_seed(0)
    drawn: dict[int, set[int]] = {i: set() for i in range(6)}
    for _ in range(200):
        for i in range(6):
            j, kind = g.sample_partner(i, "transitive", gen)
            drawn[i].add(j)
            assert kind == ("intra" if i == 5 else "transitive")
    assert drawn == {0: {1, 3}, 1: {0, 3}, 2: {4}, 3: {0, 1}, 4: {2}, 5: {5}}
    sampled = {tuple(sorted((g.node(i, 0), g.node(j, 1)))) for i, js in drawn.items() for j in js if j != i}
    assert sampled == _pairs(transitive_pairs(g.num_nodes, g.inter_edges(), g.intra_edges()))
    assert g.sample_partner(2, "intra", gen) == (2, "intra")
    with pytest.raises(ValueError, match="pair kind"):
        g.sample_partner(0, "video", gen)  # type: ignore[arg-type]


def test_negative_sampler_draws_other_clusters_with_one_draw():
    g = ClusterGraph(torch.tensor([1, 1, 0, 1, 0, 3]))
    gen = torch.Generator().manual_seed(1)
    seen = {i: {g.sample_negative(i, gen) for _ in range(300)} for i in range(6)}
    assert seen == {0: {2, 4, 5}, 1: {2, 4, 5}, 2: {0, 1, 3, 5}, 3: {2, 4, 5}, 4: {0, 1, 3, 5}, 5: {0, 1, 2, 3, 4}}
    one = ClusterGraph(torch.zeros(4, dtype=torch.long))  # a single cluster: any other image
    assert {one.sample_negative(2, gen) for _ in range(100)} == {0, 1, 3}
    # each call draws exactly once: the generator then continues as after one torch.rand
    a, b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    g.sample_partner(0, "transitive", a)
    g.sample_negative(0, a)
    torch.rand((), generator=b)
    torch.rand((), generator=b)
    assert float(torch.rand((), generator=a)) == float(torch.rand((), generator=b))
