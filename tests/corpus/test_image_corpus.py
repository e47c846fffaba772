"""The embedded image corpus: determinism, formats read by the data layer, labels against the pixels, digits."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from speechssl.cli import main as cli_main
from speechssl.corpus.image import PRESETS, build_image_corpus, is_complete, read_mask
from speechssl.corpus.image.card import LAYOUT
from speechssl.corpus.image.render import COLOURS, POSITIONS, SHAPES, pixel_grid, render_scene, shape_mask
from speechssl.corpus.image.roads import ROAD_CLASSES, render_road_scene
from speechssl.data import ImageDataset, LabelSpec, read_dict, read_labels, read_manifest

FACTORS = ("shape", "colour", "texture", "size", "position", "background", "count")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("images")
    assert cli_main(["-q", "corpus", "images", "--preset", "tiny", "--out", str(out)]) == 0
    return out


def _objects(corpus, split):
    return [json.loads(line) for line in read_labels(corpus / "scenes" / f"{split}.objects.jsonl")]


def test_rendering_is_a_function_of_the_seed_only():
    a = render_scene(np.random.default_rng([0, 1, 2, 3]), 32, 3)
    b = render_scene(np.random.default_rng([0, 1, 2, 3]), 32, 3)
    c = render_scene(np.random.default_rng([0, 1, 2, 4]), 32, 3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.instance, b.instance) and a.objects == b.objects
    assert not np.array_equal(a.image, c.image)
    r1, r2 = (render_road_scene(np.random.default_rng([5]), 32) for _ in range(2))
    assert np.array_equal(r1.image, r2.image) and np.array_equal(r1.semantic, r2.semantic)


def test_rebuild_is_byte_identical_and_a_complete_corpus_is_left_alone(corpus, tmp_path):
    again = build_image_corpus(tmp_path / "again", "tiny", 0, digits=False)
    for sub in ("scenes", "roads"):
        for f in sorted((corpus / sub).rglob("*")):
            if f.is_file():
                assert f.read_bytes() == (again / f.relative_to(corpus)).read_bytes(), f
    assert is_complete(corpus, "tiny", 0) and not is_complete(corpus, "tiny", 1)
    stamp = (corpus / "corpus.json").stat().st_mtime_ns
    build_image_corpus(corpus, "tiny", 0)
    assert (corpus / "corpus.json").stat().st_mtime_ns == stamp


def test_card_and_layout(corpus):
    card = json.loads((corpus / "corpus.json").read_text())
    p = PRESETS["tiny"]
    assert card["subsets"]["scenes"] == dict(zip(("train", "valid", "test"), p.scenes))
    assert card["subsets"]["roads"] == dict(zip(("train", "valid", "test"), p.roads))
    assert sum(card["subsets"]["digits"].values()) == 1797
    assert card["factors"]["shape"] == list(SHAPES) and card["road_classes"] == list(ROAD_CLASSES)
    readme = (corpus / "README.md").read_text()
    assert all(line.strip() in readme for line in LAYOUT.splitlines() if line.strip())


def test_image_dataset_reads_scenes_with_every_factor_label(corpus):
    root = corpus / "scenes"
    specs = [LabelSpec(root / f"valid.{k}", "utterance", dictionary=root / f"dict.{k}.txt") for k in FACTORS]
    specs.append(LabelSpec(root / "valid.shapes", "sequence", dictionary=root / "dict.shape.txt"))
    ds = ImageDataset(root / "valid.tsv", specs, size=32, augment=False, crop_fraction=1.0)
    assert len(ds) == PRESETS["tiny"].scenes[1]
    objects = _objects(corpus, "valid")
    shape_dict = read_dict(root / "dict.shape.txt")
    assert shape_dict.symbols == list(SHAPES)
    batch = ds.collater()([ds[i] for i in range(4)])
    assert batch["image"].shape == (4, 3, 32, 32)
    for i in range(4):
        assert SHAPES[int(batch["shape"][i])] == objects[i][0]["shape"]
        assert int(read_dict(root / "dict.count.txt").symbols[int(batch["count"][i])]) == len(objects[i])
        assert [SHAPES[j] for j in batch["shapes"][i].tolist() if j >= 0] == [o["shape"] for o in objects[i]]


def test_labels_agree_with_the_pixels_and_masks(corpus):
    root = corpus / "scenes"
    m = read_manifest(root / "train.tsv")
    sem, inst = read_manifest(root / "train.sem.tsv"), read_manifest(root / "train.inst.tsv")
    objects = _objects(corpus, "train")
    positions = read_labels(root / "train.position")
    for row in range(len(m)):
        image = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(m.audio_path(row)).convert("RGB")) / 255.0
        s, n = read_mask(sem.audio_path(row)), read_mask(inst.audio_path(row))
        objs = objects[row]
        # every object is visible; the semantic id of its pixels is its shape
        assert sorted(torch.unique(n).tolist()) == list(range(len(objs) + 1)), row
        for i, o in enumerate(objs):
            assert bool((s[n == i + 1] == 1 + SHAPES.index(o["shape"])).all())
        assert bool(((s == 0) == (n == 0)).all())
        # position label = the 3 x 3 cell of the main object's centre (computed here from x, y)
        main = objs[0]
        cell = 3 * min(2, int(3 * main["y"] / 32)) + min(2, int(3 * main["x"] / 32))
        assert positions[row] == POSITIONS[cell] == main["position"]
        # the brightest pixels of the main object have its colour (texture only darkens it)
        pix = image[(n == 1).numpy()]
        bright = pix[pix.sum(1) >= np.quantile(pix.sum(1), 0.75)].mean(0)
        assert np.abs(bright - np.array(COLOURS[main["colour"]])).max() < 0.12, (row, main["colour"], bright)


@pytest.mark.parametrize("shape, area", [("circle", math.pi), ("square", 1.6 ** 2), ("diamond", 2 * 1.1 ** 2),
                                         ("triangle", 3 * math.sqrt(3) / 4)])
def test_shape_areas_match_geometry(shape, area):
    yy, xx = pixel_grid(200)
    r = 60.0
    mask = shape_mask(shape, xx - 100, yy - 100, r)
    assert abs(mask.sum() / (area * r * r) - 1) < 0.02  # pixel-grid discretisation at r = 60 px


def test_road_masks(corpus):
    root = corpus / "roads"
    assert read_dict(root / "dict.sem.txt").symbols == list(ROAD_CLASSES)
    m, sem = read_manifest(root / "train.tsv"), read_manifest(root / "train.sem.tsv")
    infos = [json.loads(x) for x in read_labels(root / "train.info.jsonl")]
    for row in range(len(m)):
        s = read_mask(sem.audio_path(row))
        assert int(s.max()) < len(ROAD_CLASSES) and bool((s == 1).any()), row
        assert (int((s == 3).sum()) > 0) == (infos[row]["vehicles"] > 0)


def test_digits_are_sklearns(corpus):
    from sklearn.datasets import load_digits

    d = load_digits()
    root = corpus / "digits"
    seen = []
    for split in ("train", "valid", "test"):
        ds = ImageDataset(root / f"{split}.tsv", [LabelSpec(root / f"{split}.digit", "utterance",
                                                            dictionary=root / "dict.digit.txt")],
                          size=8, augment=False, crop_fraction=1.0, channels=1, check_files=False)
        ids = [int(p.split("_")[1].split(".")[0]) for p in ds.manifest.paths]
        assert sorted(set(int(d.target[i]) for i in ids)) == list(range(10)), split
        for k in (0, len(ds) - 1):
            item = ds[k]
            expect = torch.from_numpy(np.round(d.images[ids[k]] * 255 / 16) / 255).float()
            torch.testing.assert_close(item["image"][0], expect, atol=1e-6, rtol=0)
            assert int(item["digit"]) == int(d.target[ids[k]])
        seen += ids
    assert sorted(seen) == list(range(1797))
