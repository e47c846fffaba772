"""The image corpus card: ``corpus.json`` (machine-readable, written last) and ``README.md``.

:data:`LAYOUT` is the authoritative description of the files of a built image corpus.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from speechssl.atomic import atomic_write_text

__all__ = ["LAYOUT", "CARD", "write_card"]

CARD = "corpus.json"

LAYOUT = """\
OUT/
  corpus.json          card: preset, seed, sizes, factor vocabularies, mask classes, counts
                       per subset and split (written last: marks completion)
  README.md            this description, with the numbers of this build
  scenes/              procedural scenes: 1..max_objects shapes on a textured background
    png/<uid>.png      RGB, S x S pixels; uid = scene_<split>_<nnnnn>
    mask/<uid>.sem.png semantic mask, 8-bit grey: pixel = id in dict.sem.txt
                       (0 background, 1 + shape index on an object's visible pixels)
    mask/<uid>.inst.png instance mask, 8-bit grey: 0 background, 1 + i on object i
                       (object 0 = the main object, drawn last, never occluded)
    {train,valid,test}.tsv      manifest: first line "png", then "<uid>.png<TAB>S*S"
    <split>.sem.tsv, <split>.inst.tsv   manifests of the masks, same rows (root "mask")
    <split>.shape      main object's shape     (circle square triangle diamond cross star)
    <split>.colour     main object's colour    (red green blue yellow cyan magenta orange white)
    <split>.texture    main object's texture   (solid stripes checker dots)
    <split>.size       main object's size      (small medium large)
    <split>.position   cell of a 3 x 3 grid holding the main object's centre (top-left ... bottom-right)
    <split>.background background kind        (flat gradient noise grid)
    <split>.count      number of objects       (1..max_objects)
    <split>.shapes, <split>.colours   every object's shape / colour, main first, space-separated
                       (sequence labels over dict.shape.txt / dict.colour.txt)
    <split>.objects.jsonl   per row: the list of objects {shape, colour, texture, size,
                       position, x, y, radius (pixels), angle (degrees)}, main first
    dict.{shape,colour,texture,size,position,background,count}.txt   "symbol count" per line;
                       every symbol listed (count 0 if absent), so ids agree across builds
    dict.sem.txt       mask classes in id order: background, then the shapes
  roads/               aerial road scenes for unsupervised segmentation
    png/<uid>.png      RGB, S x S; uid = road_<split>_<nnnnn>
    mask/<uid>.sem.png semantic mask: id in dict.sem.txt (terrain road marking vehicle tree building)
    {train,valid,test}.tsv, <split>.sem.tsv
    <split>.info.jsonl per row: road angles/offsets/bends/widths, vehicle/tree/building counts
    dict.sem.txt
  digits/              scikit-learn's handwritten digits (real images, the first probe set)
    png/<uid>.png      8-bit grey 8 x 8; uid = digit_<nnnn> (row of sklearn's load_digits)
    {train,valid,test}.tsv      stratified 70/15/15 split drawn from the seed
    <split>.digit      the digit 0-9; dict.digit.txt

Read images with speechssl.data.ImageDataset(manifest, labels=[LabelSpec("<split>.shape",
"utterance", dictionary="dict.shape.txt")], size=S, augment=False, crop_fraction=1.0), masks with
speechssl.corpus.image.read_mask (an (H, W) int64 tensor of ids).
"""


def write_card(out: Path, card: dict[str, Any]) -> None:
    """Write ``README.md`` and, last, ``corpus.json`` into ``out``."""
    atomic_write_text(out / "README.md", _readme(card))
    atomic_write_text(out / CARD, json.dumps(card, indent=1) + "\n")


def _readme(card: dict[str, Any]) -> str:
    p = card["preset_parameters"]
    lines = [
        f"# speechssl image corpus: preset `{card['preset']}`, seed {card['seed']}",
        "",
        f"Procedurally rendered images made by `speechssl corpus images` (speechssl {card['speechssl_version']}) "
        "with numpy and Pillow, plus scikit-learn's digits; nothing is downloaded. Every label comes from the "
        "renderer, so it is exact. Rebuilding with the same preset and seed gives byte-identical files.",
        "",
        f"- scenes: {p['size']} x {p['size']} px, 1-{p['max_objects']} objects; factors: "
        + "; ".join(f"{k} ({len(v)})" for k, v in card["factors"].items()),
        f"- roads: {p['road_size']} x {p['road_size']} px; classes: {', '.join(card['road_classes'])}",
        f"- digits: 8 x 8 grey, 10 classes (scikit-learn {card['sklearn_version']})",
        "",
        "| subset | split | images |",
        "|---|---|---|",
    ]
    for name, splits in card["subsets"].items():
        for split, n in splits.items():
            lines.append(f"| {name} | {split} | {n} |")
    lines += ["", "## Files", "", "```", LAYOUT.rstrip(), "```", ""]
    return "\n".join(lines)
