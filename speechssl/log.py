"""Logging set-up for the command line; library modules only call ``logging.getLogger(__name__)``."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Iterable

__all__ = ["setup_logging", "add_file_handler", "progress_bar"]

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_DATEFMT = "%Y-%m-%d %H:%M:%S"


def setup_logging(level: int = logging.INFO) -> None:
    """Log to stderr with timestamps (idempotent: replaces handlers of the ``speechssl`` logger)."""
    logger = logging.getLogger("speechssl")
    for h in list(logger.handlers):
        if getattr(h, "_speechssl_console", False):
            logger.removeHandler(h)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(_FORMAT, _DATEFMT))
    handler._speechssl_console = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def add_file_handler(path: str | Path) -> logging.Handler:
    """Also write ``speechssl`` logs to ``path`` (appending); returns the handler to remove later."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT, _DATEFMT))
    logging.getLogger("speechssl").addHandler(handler)
    return handler


# Seconds between progress-bar refreshes when stderr is not a terminal: a redirected log gets a
# progress line now and then instead of one every 0.1 s.
_NON_TTY_INTERVAL = 30.0


def progress_bar(iterable: Iterable[Any] | None = None, **kwargs: Any) -> Any:
    """A ``tqdm`` bar on stderr (same arguments) that refreshes rarely when stderr is redirected."""
    from tqdm import tqdm

    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", _NON_TTY_INTERVAL)
        kwargs.setdefault("maxinterval", _NON_TTY_INTERVAL * 2)
    return tqdm(iterable, **kwargs)
