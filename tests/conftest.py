"""Shared test configuration.

Markers:
    slow: long tests; skipped unless selected with ``-m slow`` (or any ``-m`` expression).
    gpu: needs CUDA; skipped when no GPU is present.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long test, run with -m slow")
    config.addinivalue_line("markers", "gpu: needs a CUDA device")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_slow = pytest.mark.skip(reason="slow test: select with -m slow")
    skip_gpu = pytest.mark.skip(reason="no CUDA device")
    markexpr = config.getoption("markexpr", default="")
    for item in items:
        if "slow" in item.keywords and not markexpr:
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded corpus, preset ``tiny``, seed 0 (layout: ``speechssl.corpus`` docstring).

    Built once per test session and shared by pytest-xdist workers (a file lock guards the
    build). Set ``SPEECHSSL_TEST_CORPUS=/path/to/corpus`` to use an existing build instead.
    Treat it as read-only.
    """
    import os
    from pathlib import Path

    from speechssl.corpus import is_complete, synthesize_corpus

    env = os.environ.get("SPEECHSSL_TEST_CORPUS")
    if env:
        path = Path(env)
        if not is_complete(path):
            pytest.fail(f"SPEECHSSL_TEST_CORPUS={env} is not a finished corpus (no corpus.json); "
                        "build one with `speechssl corpus synth --preset tiny --out DIR`")
        return path
    from filelock import FileLock

    # xdist workers share the parent of their base temp dirs; a plain session owns its base temp
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    path = shared / "speechssl-tiny-corpus"
    with FileLock(str(shared / "speechssl-tiny-corpus.lock")):
        if not is_complete(path):
            synthesize_corpus(path, "tiny", seed=0, jobs=min(2, os.cpu_count() or 1), progress=False)
    return path


@pytest.fixture
def speechssl_logs(caplog: pytest.LogCaptureFixture):
    """caplog that sees ``speechssl`` records at INFO even after ``setup_logging`` stopped propagation."""
    logger = logging.getLogger("speechssl")
    old_level = logger.level
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.INFO)
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.setLevel(old_level)
