"""A failed or interrupted re-dump (``overwrite``, or other options) leaves the finished shard intact."""
from __future__ import annotations

import pytest

from speechssl.features import KaldiFeatureSource, dump_features, read_features
from tests.features.test_dump import NUM_UTTS, _Counting, corpus  # noqa: F401 - the fixture


class _Failing(_Counting):
    """A source that raises ``exc`` (Ctrl-C, or an error) on call ``at``."""

    def __init__(self, source, at: int, exc: type[BaseException]):
        super().__init__(source)
        self.at, self.exc = at, exc

    def __call__(self, wav):
        if self.calls + 1 == self.at:
            self.calls += 1
            raise self.exc("interrupted")
        return super().__call__(wav)


def _snapshot(paths):
    return {k: p.read_bytes() for k, p in paths.items()}


@pytest.mark.parametrize("redo", ["overwrite", "other_options"])
def test_failed_redump_keeps_the_finished_shard(corpus, tmp_path, redo) -> None:  # noqa: F811
    manifest, _ = corpus
    out = tmp_path / "feats"
    paths = dump_features(manifest, out, KaldiFeatureSource("fbank"), progress=False)
    before = _snapshot(paths)
    source = KaldiFeatureSource("fbank") if redo == "overwrite" else KaldiFeatureSource("fbank", num_mel_bins=40)
    for failure in (KeyboardInterrupt, RuntimeError):
        broken = _Failing(source, at=4, exc=failure)
        with pytest.raises(failure):
            dump_features(manifest, out, broken, progress=False, checkpoint_interval_s=0,
                          overwrite=redo == "overwrite")
        assert _snapshot(paths) == before                 # not deleted, not mixed with new rows
        feats, lengths, _ = read_features(out, "train")
        assert feats.shape[1] == 80 and len(lengths) == NUM_UTTS
    # the finished shard still counts as complete for its own options: skipped, debris removed
    again = _Counting(KaldiFeatureSource("fbank"))
    dump_features(manifest, out, again, progress=False)
    assert again.calls == 0 and not list(out.glob(".train_0_1*"))
    # a successful redo replaces it
    dump_features(manifest, out, source, progress=False, overwrite=redo == "overwrite")
    feats, lengths, _ = read_features(out, "train")
    assert feats.shape[1] == (80 if redo == "overwrite" else 40) and len(lengths) == NUM_UTTS
    if redo == "overwrite":
        assert _snapshot(paths)["npy"] == before["npy"]
    assert not list(out.glob(".train_0_1*"))
