"""What the corpus contains: presets and the deterministic plan of every utterance.

The plan is pure Python and cheap: speakers, texts, styles, splits and each item's seed are
drawn from ``(seed, subset, index)`` streams, so the same preset and seed always give the same
plan, and an item's audio depends only on its own entry.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from speechssl.corpus.render import Item
from speechssl.corpus.speakers import STYLES, Session, Speaker, make_speakers
from speechssl.corpus.labels import letters_of, words_of
from speechssl.corpus.text import TextBank

__all__ = ["Preset", "PRESETS", "Plan", "make_plan", "SUBSETS", "KW_UNKNOWN", "KW_SILENCE"]

SUBSETS = ("read", "keywords", "commands", "verification", "qbe")
KW_UNKNOWN = "_unknown_"
KW_SILENCE = "_silence_"
NO_SPEAKER = "none"  # .spk of noise-only clips
_SUBSET_CODE = {name: i + 1 for i, name in enumerate(SUBSETS)}


@dataclass(frozen=True)
class Preset:
    """Corpus size.

    Attributes:
        name: preset name.
        train_speakers: speakers of read/keywords/commands/qbe.
        heldout_speakers: verification-only speakers.
        read_per_speaker: read utterances per speaker in (train, valid, test).
        read_two_sentence_fraction: share of read utterances made of two sentences.
        keyword_clips_per_speaker: 1 s clips per speaker (classes dealt round-robin:
            10 keywords, 2 x unknown, 1 x silence per 13 clips).
        commands_per_speaker: spoken commands per speaker.
        verification_per_speaker: utterances per held-out speaker.
        qbe_terms: spoken-term queries' distinct terms.
        qbe_queries_per_term: isolated spoken queries per term (different speakers).
        qbe_docs_per_term: documents containing each term.
        qbe_negative_docs: documents containing none of the terms.
        max_trials: verification trials (half target, half non-target) at most.
    """

    name: str
    train_speakers: int
    heldout_speakers: int
    read_per_speaker: tuple[int, int, int]
    read_two_sentence_fraction: float
    keyword_clips_per_speaker: int
    commands_per_speaker: int
    verification_per_speaker: int
    qbe_terms: int
    qbe_queries_per_term: int
    qbe_docs_per_term: int
    qbe_negative_docs: int
    max_trials: int


PRESETS: dict[str, Preset] = {
    # ~10 min with every subset and 10 + 4 speakers (tests, quickstart): few utterances per
    # speaker, one keyword clip of each class per speaker, speaker-disjoint valid/test of 1 speaker.
    "tiny": Preset("tiny", 10, 4, (5, 1, 1), 0.0, 13, 4, 4, 6, 2, 2, 6, 100),
    # ~2.9 h; 60 commands per speaker (~40 training commands per intent): with 12 the ic and sf
    # heads saw 8 examples per intent and stayed at chance for every upstream
    "small": Preset("small", 40, 10, (14, 3, 3), 0.15, 24, 60, 15, 30, 3, 3, 60, 2000),
    # ~12 h
    "base": Preset("base", 100, 20, (40, 6, 6), 0.2, 36, 60, 25, 100, 3, 3, 200, 10000),
}


@dataclass
class Plan:
    """Every utterance of a corpus, plus what the manifests and the card need.

    Attributes:
        preset, seed, sessions: what it was made from.
        speakers: all speakers (train then held-out).
        speaker_splits: subset -> split -> speaker ids (read: every train speaker in every
            split; keywords/commands: speaker-disjoint splits).
        items: every utterance, in manifest order.
        trials: verification trials ``(label, uid1, uid2)``.
        qbe_terms: the query terms (upper case).
    """

    preset: Preset
    seed: int
    sessions: bool
    speakers: list[Speaker]
    speaker_splits: dict[str, dict[str, list[str]]]
    items: list[Item]
    trials: list[tuple[int, str, str]]
    qbe_terms: list[str]

    def subset(self, name: str) -> list[Item]:
        return [it for it in self.items if it.subset == name]

    def describe(self) -> dict[str, Any]:
        return {"preset": asdict(self.preset), "seed": self.seed, "sessions": self.sessions}


def _rng(seed: int, subset: str, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, _SUBSET_CODE[subset], stream])


def _item_seed(seed: int, subset: str, index: int) -> int:
    return int(np.random.SeedSequence([seed, _SUBSET_CODE[subset], index, 0x17E4]).generate_state(1, np.uint64)[0])


def _split_speakers(ids: list[str], rng: np.random.Generator) -> dict[str, list[str]]:
    """Speaker-disjoint 80/10/10 split (at least one speaker in valid and test)."""
    order = [ids[i] for i in rng.permutation(len(ids))]
    n_eval = max(1, round(0.1 * len(ids)))
    if len(ids) < 3:
        raise ValueError(f"speaker-disjoint splits need >= 3 speakers, got {len(ids)}")
    test, valid, train = order[:n_eval], order[n_eval:2 * n_eval], order[2 * n_eval:]
    return {"train": sorted(train), "valid": sorted(valid), "test": sorted(test)}


def _sentence_labels(text: str) -> dict[str, str]:
    words = words_of(text)
    return {"wrd": " ".join(words), "ltr": letters_of(words)}


def make_plan(preset: str | Preset, seed: int = 0, sessions: bool = True) -> Plan:
    """The plan of ``preset`` (a name of :data:`PRESETS` or a :class:`Preset`) with ``seed``.

    With ``sessions`` (the default) every spoken item also draws a :class:`Session` (prosody
    jitter and a channel equaliser, from the item's seed), so a speaker's utterances vary as a
    real speaker's recordings do; without it each speaker sounds the same in every utterance
    but for the style. The texts, speakers, splits and every other draw are the same either way.
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown corpus preset {preset!r}; choose one of {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    bank = TextBank()
    speakers = make_speakers(seed, preset.train_speakers, preset.heldout_speakers)
    train_spk = [s for s in speakers if not s.heldout]
    held_spk = [s for s in speakers if s.heldout]
    by_id = {s.id: s for s in speakers}
    items: list[Item] = []
    splits: dict[str, dict[str, list[str]]] = {}

    counters: dict[str, int] = {}

    def add(subset: str, split: str, kind: str, text: str, speaker: Speaker | None, style_idx: int,
            labels: dict[str, str]) -> Item:
        n = counters.get(subset, 0)
        counters[subset] = n + 1
        who = speaker.id if speaker is not None else "noise"
        item_seed = _item_seed(seed, subset, n)
        session = (Session.draw(np.random.default_rng([item_seed, 0x5E5510]))
                   if sessions and speaker is not None else Session())
        item = Item(uid=f"{who}_{subset}_{n:05d}", subset=subset, split=split, kind=kind, text=text,
                    speaker=speaker, style=STYLES[style_idx], session=session, seed=item_seed, labels=labels)
        items.append(item)
        return item

    # read: topical sentences, every speaker in every split (utterance-disjoint) ------------
    rng = _rng(seed, "read")
    seen: set[str] = set()
    n_tr, n_va, n_te = preset.read_per_speaker
    per_spk = n_tr + n_va + n_te
    topics = bank.topics
    splits["read"] = {s: [sp.id for sp in train_spk] for s in ("train", "valid", "test")}
    for k, spk in enumerate(train_spk):
        topic_seq = [topics[(k + j) % len(topics)] for j in range(per_spk)]
        topic_seq = [topic_seq[i] for i in rng.permutation(per_spk)]
        style_seq = [(k + j) % len(STYLES) for j in range(per_spk)]
        style_seq = [style_seq[i] for i in rng.permutation(per_spk)]
        for j in range(per_spk):
            split = "train" if j < n_tr else "valid" if j < n_tr + n_va else "test"
            n_sent = 2 if rng.random() < preset.read_two_sentence_fraction else 1
            for _ in range(100):  # unique texts, so no test sentence was heard in training
                text = bank.sentence(topic_seq[j], rng, sentences=n_sent)
                if text not in seen:
                    break
            seen.add(text)
            add("read", split, "sentence", text, spk, style_seq[j],
                {**_sentence_labels(text), "spk": spk.id, "topic": topic_seq[j], "style": STYLES[style_seq[j]].name})

    # keywords: 1 s clips, speaker-disjoint splits --------------------------------------------
    rng = _rng(seed, "keywords")
    splits["keywords"] = _split_speakers([s.id for s in train_spk], _rng(seed, "keywords", 1))
    cycle = list(bank.keywords) + [KW_UNKNOWN, KW_UNKNOWN, KW_SILENCE]
    for split in ("train", "valid", "test"):
        for spk_id in splits["keywords"][split]:
            spk = by_id[spk_id]
            k = train_spk.index(spk)
            for j in range(preset.keyword_clips_per_speaker):
                cls = cycle[(k * preset.keyword_clips_per_speaker + j) % len(cycle)]
                style = int(rng.integers(len(STYLES)))
                if cls == KW_SILENCE:
                    add("keywords", split, "noise_clip", "", None, 0, {"kw": KW_SILENCE, "wrd": "", "spk": NO_SPEAKER})
                    continue
                word = cls if cls != KW_UNKNOWN else bank.unknown_words[int(rng.integers(len(bank.unknown_words)))]
                add("keywords", split, "word_clip", word.capitalize() + ".", spk, style,
                    {"kw": cls, "wrd": word.upper(), "spk": spk.id})

    # commands: intents with slots, speaker-disjoint splits ------------------------------------
    rng = _rng(seed, "commands")
    splits["commands"] = _split_speakers([s.id for s in train_spk], _rng(seed, "commands", 1))
    intents = list(bank.intents)
    deck: list[tuple[str, str, str]] = []
    for split in ("train", "valid", "test"):
        for spk_id in splits["commands"][split]:
            spk = by_id[spk_id]
            for _ in range(preset.commands_per_speaker):
                if not deck:
                    deck = [intents[i] for i in rng.permutation(len(intents))]
                cmd = bank.command(deck.pop(), rng)
                add("commands", split, "sentence", cmd.text, spk, int(rng.integers(len(STYLES))),
                    {"wrd": " ".join(cmd.words), "ltr": letters_of(list(cmd.words)), "intent": cmd.intent,
                     "slot": " ".join(cmd.slots), "spk": spk.id})

    # verification: held-out speakers only ----------------------------------------------------
    rng = _rng(seed, "verification")
    splits["verification"] = {"test": [s.id for s in held_spk]}
    for spk in held_spk:
        for _ in range(preset.verification_per_speaker):
            topic = topics[int(rng.integers(len(topics)))]
            text = bank.sentence(topic, rng)
            add("verification", "test", "sentence", text, spk, int(rng.integers(len(STYLES))),
                {"wrd": " ".join(words_of(text)), "spk": spk.id})
    trials = _make_trials([it for it in items if it.subset == "verification"], preset.max_trials,
                          _rng(seed, "verification", 1))

    # qbe: isolated spoken terms and documents that do or do not contain them ------------------
    rng = _rng(seed, "qbe")
    splits["qbe"] = {"queries": [], "docs": []}
    pool = bank.term_pool()
    by_topic: dict[str, list[tuple[str, str, str]]] = {}
    for entry in pool:
        by_topic.setdefault(entry[0], []).append(entry)
    for topic in by_topic:
        by_topic[topic] = [by_topic[topic][i] for i in rng.permutation(len(by_topic[topic]))]
    terms: list[tuple[str, str, str]] = []
    while len(terms) < preset.qbe_terms:
        before = len(terms)
        for topic in topics:
            if by_topic.get(topic) and len(terms) < preset.qbe_terms:
                terms.append(by_topic[topic].pop())
        if len(terms) == before:
            raise ValueError(f"preset {preset.name}: only {len(terms)} query terms available, "
                             f"asked for {preset.qbe_terms}")
    term_words = {t[2].upper() for t in terms}
    docs: list[tuple[str, Speaker]] = []
    for topic, list_name, word in terms:
        q_spk = [train_spk[i] for i in rng.choice(len(train_spk), preset.qbe_queries_per_term, replace=False)]
        for spk in q_spk:
            add("qbe", "queries", "term", word.capitalize() + ".", spk, 0, {"wrd": word.upper(), "spk": spk.id})
        others = [s for s in train_spk if s not in q_spk] or train_spk
        for _ in range(preset.qbe_docs_per_term):
            docs.append((bank.sentence_with(topic, list_name, word, rng), others[int(rng.integers(len(others)))]))
    while sum(1 for d in docs if not term_words & set(words_of(d[0]))) < preset.qbe_negative_docs:
        text = bank.sentence(topics[int(rng.integers(len(topics)))], rng)
        if not term_words & set(words_of(text)):
            docs.append((text, train_spk[int(rng.integers(len(train_spk)))]))
    for i in rng.permutation(len(docs)):
        text, spk = docs[int(i)]
        add("qbe", "docs", "sentence", text, spk, 0, {"wrd": " ".join(words_of(text)), "spk": spk.id})
    for it in items:
        if it.subset == "qbe":
            splits["qbe"][it.split].append(it.labels["spk"])
    splits["qbe"] = {k: sorted(set(v)) for k, v in splits["qbe"].items()}

    return Plan(preset=preset, seed=seed, sessions=sessions, speakers=speakers, speaker_splits=splits, items=items,
                trials=trials, qbe_terms=sorted(term_words))


def _make_trials(items: list[Item], max_trials: int, rng: np.random.Generator) -> list[tuple[int, str, str]]:
    """Balanced verification trials: as many target (same speaker) as non-target pairs."""
    target, nontarget = [], []
    for i, a in enumerate(items):
        for b in items[i + 1:]:
            (target if a.labels["spk"] == b.labels["spk"] else nontarget).append((a.uid, b.uid))
    n = min(len(target), len(nontarget), max_trials // 2)
    pick_t = sorted(rng.choice(len(target), n, replace=False).tolist())
    pick_n = sorted(rng.choice(len(nontarget), n, replace=False).tolist())
    trials = [(1, *target[i]) for i in pick_t] + [(0, *nontarget[i]) for i in pick_n]
    return [trials[i] for i in rng.permutation(len(trials))]
