from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from speechssl.data.base import SizedDataset
from speechssl.data.multisource import (
    MultiSourceBatchSampler, MultiSourceCollater, MultiSourceDataset, Tagged, interleave,
)
from speechssl.data.sampler import MaxTokensBatchSampler


class _Items(SizedDataset):
    """Items ``(name, local index)``; remembers the last epoch it was given."""

    def __init__(self, name: str, sizes: list[int]) -> None:
        self.name, self.sizes, self.epoch = name, sizes, None

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> dict:
        return {"name": self.name, "i": i, "x": torch.ones(self.sizes[i])}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def collater(self):
        return lambda items: {"i": torch.tensor([it["i"] for it in items]), "name": items[0]["name"]}


RNG = np.random.default_rng(0)
SPEECH = RNG.integers(1000, 16000, size=120).tolist()
TEXT = RNG.integers(5, 60, size=300).tolist()


def _dataset(**kw) -> MultiSourceDataset:
    return MultiSourceDataset({"speech": _Items("speech", SPEECH), "text": _Items("text", TEXT)}, **kw)


def _sampler(ds=None, **kw) -> MultiSourceBatchSampler:
    kw.setdefault("source_max_tokens", {"text": 400})
    return MultiSourceBatchSampler(ds or _dataset(), 40000, seed=3, **kw)


def test_concatenation_and_tagging():
    ds = _dataset()
    assert len(ds) == len(SPEECH) + len(TEXT)
    assert ds.sizes.tolist() == SPEECH + TEXT
    assert ds.locate(0) == ("speech", 0) and ds.locate(len(SPEECH)) == ("text", 0)
    assert ds.source_range("text") == range(len(SPEECH), len(SPEECH) + len(TEXT))
    item = ds[len(SPEECH) + 7]
    assert isinstance(item, Tagged) and item.source == "text" and item.item["i"] == 7
    ds.set_epoch(4)
    assert ds.sources["speech"].epoch == ds.sources["text"].epoch == 4
    with pytest.raises(IndexError):
        ds.locate(len(ds))


def test_collater_dispatches_per_source_and_refuses_mixed_batches():
    ds = _dataset()
    collate = ds.collater()
    batch = collate([ds[i] for i in range(len(SPEECH), len(SPEECH) + 3)])
    assert batch["source"] == "text" and batch["name"] == "text" and batch["i"].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="mixes sources"):
        collate([ds[0], ds[len(SPEECH)]])
    with pytest.raises(TypeError, match="Tagged"):
        collate([{"i": 0}])
    with pytest.raises(TypeError, match="reserved"):
        MultiSourceCollater({"a": lambda items: {"source": 1}})([Tagged("a", 0)])


def test_bad_construction():
    with pytest.raises(ValueError, match="unknown source"):
        _dataset(proportions={"video": 1.0})
    with pytest.raises(ValueError, match="> 0"):
        _dataset(proportions={"text": 0.0})
    with pytest.raises(ValueError, match="'text' is empty"):
        MultiSourceDataset({"text": _Items("text", [])})
    with pytest.raises(TypeError, match="MultiSourceDataset"):
        MultiSourceBatchSampler(SPEECH, 1000)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="source 'text': item 0 has size"):
        MultiSourceBatchSampler(_dataset(), 40000, source_max_tokens={"text": 4})


def test_each_batch_from_one_source_within_its_max_tokens_and_every_item_once():
    s = _sampler()
    ds = s.dataset
    batches = list(s)
    assert len(batches) == len(s)
    for b in batches:
        names = {ds.source_of(i) for i in b}
        assert len(names) == 1
        limit = 400 if names == {"text"} else 40000
        assert len(b) * max(ds.sizes[i] for i in b) <= limit
    assert sorted(i for b in batches for i in b) == list(range(len(ds)))
    # each source is bucketed exactly as a MaxTokensBatchSampler over it alone would group it
    alone = MaxTokensBatchSampler(TEXT, 400, shuffle=False).batches(1)
    text = [sorted(i - len(SPEECH) for i in b) for b in s.batches() if ds.source_of(b[0]) == "text"]
    assert sorted(map(len, text)) == sorted(map(len, alone))


def test_proportions_observed_over_an_epoch_and_spread():
    base = _sampler()
    n = collections.Counter(base.sources())
    s = _sampler(_dataset(proportions={"speech": 2.0, "text": 0.5}))
    got = collections.Counter(s.sources())
    assert got["speech"] == 2 * n["speech"]
    assert got["text"] == int(np.floor(0.5 * n["text"] + 0.5))
    # upsampling by 2 takes every speech batch exactly twice
    speech = collections.Counter(tuple(b) for b in s.batches() if s.dataset.source_of(b[0]) == "speech")
    assert set(speech.values()) == {2} and len(speech) == n["speech"]
    # downsampling takes distinct text batches
    text = [tuple(b) for b in s.batches() if s.dataset.source_of(b[0]) == "text"]
    assert len(set(text)) == len(text)
    # interleaved: in every window of the epoch the share of text is close to the overall share
    seq = np.array([src == "text" for src in s.sources()], dtype=float)
    share = seq.mean()
    for m in range(1, len(seq) + 1):
        assert abs(seq[:m].sum() - m * share) <= 1.0 + 1e-9


def test_interleave_counts_and_prefix_balance():
    for counts in ([3, 1], [5, 7, 2], [1], [4, 0, 4]):
        out = interleave(counts)
        assert collections.Counter(out) == {k: c for k, c in enumerate(counts) if c}
        total = sum(counts)
        for m in range(1, total + 1):
            for k, c in enumerate(counts):
                assert abs(out[:m].count(k) - m * c / total) < 1.0 + 1e-9


def test_deterministic_in_seed_and_epoch_and_independent_of_global_rng():
    torch.manual_seed(1)
    np.random.seed(1)
    a = _sampler(_dataset(proportions={"text": 1.5}))
    first = a.batches(1), a.batches(2)
    torch.manual_seed(2)
    np.random.seed(2)
    b = _sampler(_dataset(proportions={"text": 1.5}))
    assert (b.batches(1), b.batches(2)) == first
    assert first[0] != first[1]
    assert MultiSourceBatchSampler(_dataset(), 40000, seed=4, source_max_tokens={"text": 400}).batches(1) != \
        _sampler().batches(1)


def test_resume_gives_the_remaining_batches_exactly():
    s = _sampler(_dataset(proportions={"speech": 1.7}))
    s.set_epoch(3)
    full = list(s)
    r = _sampler(_dataset(proportions={"speech": 1.7}))
    r.set_epoch(3, start_batch=11)
    assert list(r) == full[11:]
    assert len(r) == len(full)  # __len__ is the full epoch, like MaxTokensBatchSampler


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_share_the_global_list_evenly_and_step_on_the_same_source(world):
    ds = _dataset(proportions={"text": 0.7})
    ranks = [_sampler(ds, num_replicas=world, rank=r) for r in range(world)]
    single = _sampler(ds)
    shares = [r.batches(2) for r in ranks]
    assert len({len(sh) for sh in shares}) == 1  # even_shards: the same number of steps
    # the union of the shares is the global list, which holds every batch of one process's epoch
    merged = [shares[i % world][i // world] for i in range(world * len(shares[0]))]
    assert merged == ranks[0].global_batches(2)
    assert collections.Counter(map(tuple, single.batches(2))) <= collections.Counter(map(tuple, merged))
    # at step i every rank works on the same source
    srcs = [r.sources(2) for r in ranks]
    assert all(len(set(step)) == 1 for step in zip(*srcs))
    # padding only repeats a source's own batches: at most world - 1 extra per source
    assert len(merged) - len(single.batches(2)) <= 2 * (world - 1)


def test_ranks_without_even_shards_take_disjoint_shares():
    ds = _dataset()
    shares = [_sampler(ds, num_replicas=2, rank=r, shuffle=False, even_shards=False).batches() for r in (0, 1)]
    everything = sorted(i for sh in shares for b in sh for i in b)
    assert everything == list(range(len(ds)))


def test_validation_order_takes_every_batch_once_and_ignores_proportions():
    s = _sampler(_dataset(proportions={"text": 3.0}), shuffle=False)
    assert sorted(i for b in s.batches() for i in b) == list(range(len(s.dataset)))
    assert s.batches(1) == s.batches(2)


def test_a_data_loader_over_audio_and_point_sets(corpus, tmp_path):
    from speechssl.data.dataset import AudioDataset
    from speechssl.data.files import write_file_manifest
    from speechssl.data.points import PointDataset

    rng = np.random.default_rng(0)
    for i in range(5):
        np.save(tmp_path / f"p{i}.npy", rng.standard_normal((20 + i, 3)).astype(np.float32))
    write_file_manifest(tmp_path / "pts.tsv", tmp_path, [f"p{i}.npy" for i in range(5)], "points")
    ds = MultiSourceDataset({"audio": AudioDataset(corpus / "train.tsv", max_sample_size=8000),
                             "points": PointDataset(tmp_path / "pts.tsv", num_points=8)},
                            proportions={"points": 2.0}, max_tokens={"points": 2})
    sampler = MultiSourceBatchSampler(ds, 20000, seed=1)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=ds.collater())
    seen = collections.Counter()
    for batch in loader:
        seen[batch["source"]] += 1
        if batch["source"] == "audio":
            assert batch["wav"].dim() == 2 and batch["lengths"].max() <= 8000
        else:
            assert batch["points"].shape[1:] == (8, 3) and len(batch["id"]) <= 2
    assert seen == {"audio": collections.Counter(sampler.sources())["audio"], "points": 6}  # 3 batches, twice
