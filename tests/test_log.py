"""speechssl.log: progress bars refresh rarely when stderr is redirected to a log file."""
from __future__ import annotations

import io
import sys

import pytest

from speechssl.log import progress_bar


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.mark.parametrize("tty, interval", [(True, 0.1), (False, 30.0)])
def test_refresh_interval_depends_on_the_terminal(monkeypatch: pytest.MonkeyPatch, tty: bool,
                                                  interval: float) -> None:
    stream = _Stream(tty)
    monkeypatch.setattr(sys, "stderr", stream)
    bar = progress_bar(range(5), file=stream, desc="x")
    assert bar.mininterval == interval
    assert list(bar) == [0, 1, 2, 3, 4]


def test_redirected_log_gets_few_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = _Stream(False)
    monkeypatch.setattr(sys, "stderr", stream)
    for _ in progress_bar(range(100_000), file=stream, desc="work"):
        pass
    # the opening and the closing refresh only; an unthrottled bar writes a line per 0.1 s
    assert stream.getvalue().count("work") <= 2
    # an explicit interval wins
    assert progress_bar(range(1), file=stream, mininterval=0.5).mininterval == 0.5
