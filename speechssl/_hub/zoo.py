"""The local model zoo: named model directories under ``$SPEECHSSL_HOME/models/<name>/``.

``$SPEECHSSL_HOME`` defaults to ``$XDG_CACHE_HOME/speechssl`` (``~/.cache/speechssl``).
Nothing here downloads: models enter the zoo through ``speechssl hub export``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from speechssl._hub.modeldir import CONFIG_NAME, WEIGHTS_NAME
from speechssl.cache_dir import speechssl_home

__all__ = ["ZooEntry", "model_home", "zoo_dir", "check_name", "zoo_path", "list_zoo", "is_name"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class ZooEntry:
    """One model of the zoo as listed (nothing is hashed or loaded to list it).

    Attributes:
        name: the zoo name.
        path: its directory.
        method: registry name from its config.json, or None when unreadable.
        speechssl_version: the version that wrote it, or None.
        size_bytes: size of ``model.safetensors`` (0 when absent).
        problem: why the entry is unusable (missing or broken files), else None.
    """

    name: str
    path: Path
    method: str | None
    speechssl_version: str | None
    size_bytes: int
    problem: str | None = None


def model_home() -> Path:
    """``$SPEECHSSL_HOME``, else ``$XDG_CACHE_HOME/speechssl``, else ``~/.cache/speechssl``
    (:func:`speechssl.cache_dir.speechssl_home`)."""
    return speechssl_home()


def zoo_dir() -> Path:
    """``<model_home()>/models``."""
    return model_home() / "models"


def is_name(text: str) -> bool:
    """True when ``text`` is a valid zoo name (letters, digits, ``._-``; no path separators)."""
    return bool(_NAME_RE.match(text)) and text not in (".", "..")


def check_name(name: str) -> str:
    """``name`` if it is a valid zoo name, else ValueError explaining the rule."""
    if not is_name(name):
        raise ValueError(f"invalid model name {name!r}: use 1-128 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit (no '/')")
    return name


def zoo_path(name: str) -> Path:
    """The directory of zoo model ``name`` (which may not exist)."""
    return zoo_dir() / check_name(name)


def _entry(path: Path) -> ZooEntry:
    weights = path / WEIGHTS_NAME
    size = weights.stat().st_size if weights.is_file() else 0
    try:
        meta = json.loads((path / CONFIG_NAME).read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or "method" not in meta:
            raise ValueError("no 'method' key")
    except (OSError, ValueError) as exc:
        return ZooEntry(path.name, path, None, None, size, f"unreadable {CONFIG_NAME}: {exc}")
    problem = None if weights.is_file() else f"no {WEIGHTS_NAME}"
    return ZooEntry(path.name, path, str(meta["method"]), meta.get("speechssl_version"), size, problem)


def list_zoo() -> list[ZooEntry]:
    """Every directory under the zoo, sorted by name; broken ones carry a ``problem``."""
    root = zoo_dir()
    if not root.is_dir():
        return []
    return [_entry(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
