"""`--help` says what the CLI has (issue 24): every verb's one-line help names its sub-verbs in
`backquotes`, all of them and no others; every verb and sub-verb renders its help with a
description; the README's verb table lists exactly the CLI's verbs and sub-verbs."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from speechssl import cli

README = Path(__file__).resolve().parents[2] / "README.md"


def _verb_parser(verb: str) -> argparse.ArgumentParser:
    parser = cli._build_parser([verb])
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices[verb]


def _sub_verbs(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    out: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            out.update(action.choices)
    return out


def _walk(prefix: list[str], parser: argparse.ArgumentParser):
    yield prefix, parser
    for name, child in _sub_verbs(parser).items():
        yield from _walk(prefix + [name], child)


VERBS = sorted(cli._VERBS)


@pytest.mark.parametrize("verb", VERBS)
def test_one_line_help_names_exactly_the_sub_verbs(verb):
    advertised = set(re.findall(r"`([a-z][a-z0-9-]*)`", cli._VERBS[verb][1]))
    actual = set(_sub_verbs(_verb_parser(verb)))
    assert advertised == actual, (f"`speechssl --help` for {verb!r} names sub-verbs {sorted(advertised)} but the "
                                  f"verb has {sorted(actual)}")


@pytest.mark.parametrize("verb", VERBS)
def test_every_help_renders_with_a_description(verb, capsys):
    for path, parser in _walk([verb], _verb_parser(verb)):
        assert parser.description and len(parser.description) > 20, f"speechssl {' '.join(path)} has no description"
        with pytest.raises(SystemExit) as exit_:
            cli.main(path + ["--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: speechssl {' '.join(path)}")
        for name, child in _sub_verbs(parser).items():  # each sub-verb listed with its help line
            assert re.search(rf"^\s+{re.escape(name)}\s", out, re.MULTILINE), f"{path}: {name} not listed"


def test_top_level_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    listed = set(re.findall(r"^    ([a-z][a-z0-9-]*)\s", out, re.MULTILINE))
    assert listed == set(cli._VERBS)


def _readme_verbs() -> set[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## The `speechssl` command", 1)[1].split("\n## ", 1)[0]
    out = set()
    for row in re.findall(r"^\| `([^`]+)` \|", section, re.MULTILINE):
        words = row.split()
        verb, rest = words[0], " ".join(words[1:])
        out.add(verb)
        for sub in re.split(r"\s*/\s*", rest):
            sub = sub.split()[0] if sub.split() else ""
            if re.fullmatch(r"[a-z][a-z0-9-]*", sub):
                out.add(f"{verb} {sub}")
    return out


def test_readme_verb_table_matches_the_cli():
    actual = set()
    for verb in cli._VERBS:
        actual.add(verb)
        actual |= {f"{verb} {sub}" for sub in _sub_verbs(_verb_parser(verb))}
    readme = _readme_verbs()
    assert readme <= actual, f"README names what the CLI lacks: {sorted(readme - actual)}"
    assert actual <= readme, f"README's verb table leaves out: {sorted(actual - readme)}"


def test_fbank_dimensions_are_stated_in_both_helps(capsys):
    for argv in (["features", "dump", "--help"], ["downstream", "--help"]):
        with pytest.raises(SystemExit):
            cli.main(argv)
        out = " ".join(capsys.readouterr().out.split())
        assert "80" in out and "240 dims" in out, argv
