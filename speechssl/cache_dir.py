"""Where speechssl keeps its per-user files: ``$SPEECHSSL_HOME``.

``$SPEECHSSL_HOME`` if set, else ``$XDG_CACHE_HOME/speechssl``, else ``~/.cache/speechssl``
(read on every call, so a changed environment applies at once). The model zoo keeps its
models under ``<home>/models`` (:mod:`speechssl._hub.zoo`) and the selective scan its compiled
CPU kernel under ``<home>/kernels`` (:mod:`speechssl.nn.ssm.scan_native`); this module is the
one both read, so ``nn`` needs nothing from ``_hub``.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["speechssl_home", "cache_subdir"]


def speechssl_home() -> Path:
    """``$SPEECHSSL_HOME``, else ``$XDG_CACHE_HOME/speechssl``, else ``~/.cache/speechssl`` (not created)."""
    home = os.environ.get("SPEECHSSL_HOME")
    if home:
        return Path(home).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(cache).expanduser() / "speechssl"


def cache_subdir(name: str) -> Path:
    """``<speechssl_home()>/<name>`` (not created), e.g. ``cache_subdir("kernels")``."""
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"cache subdirectory must be one plain name, got {name!r}")
    return speechssl_home() / name
