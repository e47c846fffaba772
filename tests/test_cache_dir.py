"""$SPEECHSSL_HOME resolution (speechssl/cache_dir.py), shared by the zoo and the kernel cache."""
from __future__ import annotations

from pathlib import Path

import pytest

from speechssl.cache_dir import cache_subdir, speechssl_home


def test_environment_order(monkeypatch, tmp_path):
    monkeypatch.setenv("SPEECHSSL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert speechssl_home() == tmp_path / "home"
    assert cache_subdir("kernels") == tmp_path / "home" / "kernels"
    monkeypatch.delenv("SPEECHSSL_HOME")
    assert speechssl_home() == tmp_path / "xdg" / "speechssl"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert speechssl_home() == Path("~/.cache/speechssl").expanduser()
    monkeypatch.setenv("SPEECHSSL_HOME", "")  # empty counts as unset, as before
    assert speechssl_home() == Path("~/.cache/speechssl").expanduser()


def test_zoo_reads_the_same_home(monkeypatch, tmp_path):
    from speechssl._hub.zoo import model_home, zoo_dir

    monkeypatch.setenv("SPEECHSSL_HOME", str(tmp_path))
    assert model_home() == speechssl_home() == tmp_path and zoo_dir() == tmp_path / "models"


@pytest.mark.parametrize("bad", ["", "a/b", "..", "."])
def test_subdir_is_one_name(bad):
    with pytest.raises(ValueError, match="one plain name"):
        cache_subdir(bad)
