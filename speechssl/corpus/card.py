"""The corpus card: ``corpus.json`` (machine-readable) and ``README.md`` (for people).

:data:`LAYOUT` is the authoritative description of the files; ``speechssl.corpus``'s module
docstring carries the same text.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from speechssl.atomic import atomic_write_text
from speechssl.corpus.speakers import STYLES

if TYPE_CHECKING:
    from speechssl.corpus.plan import Plan

__all__ = ["LAYOUT", "write_card"]

LAYOUT = """\
OUT/
  corpus.json        corpus card: preset, seed, versions, hours, counts per subset/split,
                     phone inventory, topics, styles, keywords (written last: marks completion)
  README.md          this description, with the numbers of this build
  speakers.json      every speaker: id, espeak accent/variant, gender, pitch, range, rate,
                     word gap, timbre EQ gains, held-out flag, and "in": subset -> its splits
  read/              topical read speech (pretraining, ASR, PR, SID, ER, topic models)
    wav/<uid>.wav    16 kHz mono 16-bit PCM; uid = <speaker>_read_<nnnnn>
    {train,valid,test}.tsv     manifest: first line "wav" (root, relative to the .tsv's folder),
                               then "<uid>.wav<TAB>num_samples"
    <split>.wrd      words, upper case ("THE STORM WILL ARRIVE ...")
    <split>.ltr      letters with "|" after every word ("T H E | S T O R M | ...")
    <split>.phn      espeak phones without stress marks, space-separated, pauses left out
    <split>.phn_ali  one phone id (line index in dict.phn.txt) per 10 ms frame; frames are
                     Kaldi snip-edges frames: T = 1 + (S - 400) // 160, frame t labelled with
                     the phone at sample 160 t + 200; pauses/silence = "sil" (id 0)
    <split>.spk      speaker id (same speakers in train, valid and test: utterance-disjoint)
    <split>.topic    topic (weather, cooking, sports, travel, music, gardening, astronomy, wildlife)
    <split>.style    speaking style (neutral, happy, sad, angry): prosody on top of the speaker
    dict.{wrd,ltr,phn,spk,topic,style}.txt   "symbol count" per line
  keywords/          Speech-Commands-like 1 s clips (exactly 16000 samples)
    wav/<uid>.wav    uid = <speaker>_keywords_<nnnnn>, or noise_keywords_<nnnnn> for silence
    {train,valid,test}.tsv     speaker-disjoint splits
    <split>.kw       yes no up down left right on off stop go | _unknown_ | _silence_
    <split>.wrd      the word spoken (empty line for _silence_ clips)
    <split>.spk      speaker id ("none" for _silence_ clips)
    dict.kw.txt      the 12 classes, 10 keywords first, then _unknown_, _silence_
    dict.spk.txt
  commands/          spoken commands (Fluent-Speech-Commands-like)
    wav/<uid>.wav    uid = <speaker>_commands_<nnnnn>
    {train,valid,test}.tsv     speaker-disjoint splits
    <split>.wrd, <split>.ltr   transcripts
    <split>.intent   action|object|location ("none" for an absent field),
                     e.g. activate|lights|kitchen, change_language|german|none
    <split>.slot     one BIO tag per word of .wrd: O, B-/I-object, B-/I-location, B-/I-time
    <split>.spk
    dict.{wrd,ltr,intent,slot,spk}.txt
  verification/      held-out speakers only (never in any other subset)
    wav/<uid>.wav    uid = <hld-speaker>_verification_<nnnnn>
    test.tsv, test.spk, test.wrd, dict.{spk,wrd}.txt
    trials.txt       "<label> <uid1> <uid2>": 1 = same speaker, 0 = different; balanced
  qbe/               query-by-example spoken term detection
    wav/<uid>.wav
    queries.tsv      isolated spoken terms, each term said by several speakers
    queries.wrd      the term; queries.spk
    docs.tsv         sentences that do or do not contain the terms; docs.wrd, docs.spk
    ground_truth.txt "<query_uid> <doc_uid> <0|1>" for every query x document pair
                     (1 = the document's transcript contains the query's term)
    occurrences.txt  "<query_uid> <doc_uid> <start_s> <end_s>" for every hit: the term's time
                     span in the document, from espeak's word events (it may include an
                     unstressed function word espeak attached to the term, e.g. "harp and")
    dict.{wrd,spk}.txt
  pretrain/          manifests only: the unlabelled audio for self-supervised pretraining
    train.tsv        every train utterance of read/, keywords/ and commands/ (in that order):
                     first line ".." (the corpus root), then "<subset>/wav/<uid>.wav<TAB>num_samples"
    valid.tsv        likewise their valid utterances
    test.tsv         read/'s test split, with test.phn_ali and dict.phn.txt (copies of read/'s):
                     held-out speech to score pseudo-labels against; never trained on
"""

_PLUG_IN = """\
## Using real corpora in the same formats

- Any folder of audio: `speechssl manifest DIR --dest OUT --ext flac --valid-percent 0.01`
  writes `OUT/train.tsv` and `OUT/valid.tsv` (fairseq `wav2vec_manifest.py` semantics: the
  fraction goes to valid at random with `--seed`; the root line is the absolute folder).
- LibriSpeech: `speechssl corpus import-librispeech ROOT --out OUT [--subsets train-clean-100=train
  dev-clean=valid test-clean=test]` writes `<split>.tsv`, `.wrd`, `.ltr`, `.spk` and
  `dict.{ltr,wrd,spk}.txt` from the `*.trans.txt` files: the layout of `read/` without phones.
- Speech Commands: `speechssl corpus import-speech-commands ROOT --out OUT` writes
  `{train,valid,test}.tsv` + `.kw` (same 12 classes as `keywords/`), `.wrd`, `.spk`, using
  `validation_list.txt` / `testing_list.txt`, and cuts 1 s `_silence_` clips from
  `_background_noise_` into `OUT/_silence_/`.

Everything downstream reads manifests with `speechssl.data.read_manifest`, which resolves a
relative root line against the manifest's folder (so this corpus can be moved) and takes an
absolute one as is (as fairseq does).
"""


def write_card(out: Path, plan: "Plan", stats: dict[str, Any], *, espeak_version: str,
               speechssl_version: str) -> None:
    """Write ``speakers.json``, ``README.md`` and, last, ``corpus.json`` into ``out``."""
    from speechssl.corpus.text import TextBank

    bank = TextBank()
    spk_entries = []
    for spk in plan.speakers:
        entry = spk.to_dict()
        entry["in"] = {subset: [split for split, ids in splits.items() if spk.id in ids]
                       for subset, splits in plan.speaker_splits.items()}
        entry["in"] = {subset: splits for subset, splits in entry["in"].items() if splits}
        spk_entries.append(entry)
    atomic_write_text(out / "speakers.json", json.dumps(spk_entries, indent=1) + "\n")

    hours = stats["total_samples"] / 16000 / 3600
    subsets = {}
    for name, sub in stats["subsets"].items():
        subsets[name] = {
            "utterances": sum(s["utterances"] for s in sub["splits"].values()),
            "hours": round(sum(s["samples"] for s in sub["splits"].values()) / 16000 / 3600, 4),
            "labels": sub["labels"],
            "splits": {k: {"utterances": v["utterances"], "hours": v["hours"], "speakers": v["speakers"]}
                       for k, v in sub["splits"].items()},
        }
    card = {
        "name": "speechssl-espeak",
        "preset": plan.preset.name,
        "seed": plan.seed,
        "session_variability": plan.sessions,
        "preset_parameters": asdict(plan.preset),
        "speechssl_version": speechssl_version,
        "espeak_ng_version": espeak_version,
        "sample_rate": 16000,
        "label_rate": 100,
        "frames": "kaldi snip_edges: T = 1 + (S - 400) // 160; frame t -> phone at sample 160 t + 200",
        "hours": round(hours, 4),
        "utterances": len(plan.items),
        "speakers": {"train": sum(not s.heldout for s in plan.speakers),
                     "heldout": sum(s.heldout for s in plan.speakers)},
        "phone_inventory": stats["phones"],
        "num_phones": len(stats["phones"]) - 1,
        "silence_symbol": stats["phones"][0],
        "topics": list(bank.topics),
        "styles": [s.name for s in STYLES],
        "keywords": list(bank.keywords),
        "intents": len(bank.intents),
        "qbe_terms": plan.qbe_terms,
        "verification_trials": len(plan.trials),
        "subsets": subsets,
        "pretrain": stats["pretrain"],
    }
    atomic_write_text(out / "README.md", _readme(card))
    atomic_write_text(out / "corpus.json", json.dumps(card, indent=1) + "\n")


def _readme(card: dict[str, Any]) -> str:
    lines = [
        f"# speechssl embedded corpus: preset `{card['preset']}`, seed {card['seed']}",
        "",
        "Synthetic English speech made by `speechssl corpus synth` with espeak-ng "
        f"{card['espeak_ng_version']} (speechssl {card['speechssl_version']}). Texts come from "
        "grammars shipped with speechssl (`speechssl/corpus/texts/`); every label comes from the "
        "synthesizer itself, so it is exact. Rebuilding with the same preset and seed gives "
        "byte-identical files.",
        "",
        f"- {card['hours']:.3f} hours, {card['utterances']} utterances, 16 kHz mono 16-bit PCM",
        f"- {card['speakers']['train']} speakers (spk*) + {card['speakers']['heldout']} held-out "
        "speakers (hld*, verification only); details in `speakers.json`",
        f"- {card['num_phones']} phones + `{card['silence_symbol']}` (espeak-ng mnemonics, stress removed)",
        f"- topics: {', '.join(card['topics'])}; styles: {', '.join(card['styles'])}",
        "- session variability: " + ("on (every utterance has its own prosody jitter and channel equaliser)"
                                     if card["session_variability"] else
                                     "off (a speaker sounds the same in every utterance but for the style)"),
        "",
        "| subset | split | utterances | hours | speakers |",
        "|---|---|---|---|---|",
    ]
    for name, sub in card["subsets"].items():
        for split, s in sub["splits"].items():
            lines.append(f"| {name} | {split} | {s['utterances']} | {s['hours']:.4f} | {s['speakers']} |")
    pre = card["pretrain"]["splits"]
    lines += ["", "Pretraining view `pretrain/`: " + ", ".join(
        f"{split} {s['utterances']} utterances ({s['hours']:.4f} h, {'+'.join(s['subsets'])})" for split, s in pre.items())
        + "."]
    p = card["preset_parameters"]
    tr, va, te = p["read_per_speaker"]
    lines += [
        "",
        f"Preset `{card['preset']}`: read {tr}/{va}/{te} utterances per speaker (train/valid/test), "
        f"{p['keyword_clips_per_speaker']} keyword clips and {p['commands_per_speaker']} commands per speaker, "
        f"{p['verification_per_speaker']} utterances per held-out speaker "
        f"({card['verification_trials']} trials), {p['qbe_terms']} query terms x {p['qbe_queries_per_term']} "
        f"speakers, {p['qbe_docs_per_term']} documents per term + {p['qbe_negative_docs']} without any term.",
        "", "## Files", "", "```", LAYOUT.rstrip(), "```", "", _PLUG_IN]
    return "\n".join(lines)
