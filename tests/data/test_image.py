"""ImageDataset against Pillow: each item's reported crop and flip, redone on the PNG, gives the item."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from speechssl.data.files import write_file_manifest
from speechssl.data.image import ImageCollater, ImageDataset
from speechssl.data.labels import LabelSpec
from speechssl.data.manifest import FormatError, write_labels, write_manifest

SHAPES = [(40, 30), (32, 48), (50, 50), (24, 36)]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    (root / "img").mkdir()
    for i, (h, w) in enumerate(SHAPES):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"img/{i}.png")
    write_file_manifest(root / "train.tsv", root, [f"img/{i}.png" for i in range(len(SHAPES))], "image")
    write_labels(root / "train.cls", ["dog", "cat", "dog", "owl"])
    return root


def _pillow_view(path: Path, crop: torch.Tensor, size: int) -> torch.Tensor:
    """The view an item reports, redone with Pillow: crop, bilinear resize, flip; (C, S, S) in 0..255."""
    top, left, h, w, flipped = crop.tolist()
    im = Image.open(path).convert("RGB").crop((left, top, left + w, top + h)).resize((size, size), Image.BILINEAR)
    if flipped:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    return torch.from_numpy(np.asarray(im).astype(np.float32)).permute(2, 0, 1)


def test_manifest_sizes_are_pixels(images):
    lines = (images / "train.tsv").read_text().splitlines()
    assert [int(ln.split("\t")[1]) for ln in lines[1:]] == [h * w for h, w in SHAPES]


def test_items_match_pillow_and_crops_are_valid(images):
    ds = ImageDataset(images / "train.tsv", size=16, scale=(0.3, 1.0))
    assert ds.sizes.tolist() == [1, 1, 1, 1]
    flips = set()
    for epoch in (1, 2, 3):
        ds.set_epoch(epoch)
        for i, (h, w) in enumerate(SHAPES):
            item = ds[i]
            assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
            top, left, ch, cw, flipped = item["crops"][0].tolist()
            assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w
            flips.add(flipped)
            ref = _pillow_view(images / f"img/{i}.png", item["crops"][0], 16)
            assert (item["image"] * 255 - ref).abs().max() <= 1.0
    assert flips == {0, 1}


def test_deterministic_in_seed_epoch_index_not_global_rng(images):
    ds = ImageDataset(images / "train.tsv", size=12, seed=5)
    torch.manual_seed(0)
    np.random.seed(0)
    a = [ds[i]["crops"] for i in range(4)]
    torch.manual_seed(123)
    np.random.seed(123)
    torch.rand(10)
    b = [ImageDataset(images / "train.tsv", size=12, seed=5)[i]["crops"] for i in range(4)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert torch.equal(ds[2]["image"], ds[2]["image"])
    ds.set_epoch(2)
    assert any(not torch.equal(x, ds[i]["crops"]) for i, x in enumerate(a))
    other = ImageDataset(images / "train.tsv", size=12, seed=6)
    assert any(not torch.equal(x, other[i]["crops"]) for i, x in enumerate(a))


def test_two_views_are_independent_draws_and_the_first_is_the_single_view(images):
    single = ImageDataset(images / "train.tsv", size=16)
    pair = ImageDataset(images / "train.tsv", size=16, views=2)
    for i in range(4):
        item = pair[i]
        assert "image" not in item and len(item["views"]) == 2 and item["crops"].shape == (2, 5)
        assert torch.equal(item["views"][0], single[i]["image"])
        assert not torch.equal(item["crops"][0], item["crops"][1])
        for v in range(2):
            ref = _pillow_view(images / f"img/{i}.png", item["crops"][v], 16)
            assert (item["views"][v] * 255 - ref).abs().max() <= 1.0


def test_evaluation_is_a_centre_crop_every_epoch(images):
    ds = ImageDataset(images / "train.tsv", size=20, augment=False, crop_fraction=0.875)
    first = ds[0]
    ds.set_epoch(9)
    again = ds[0]
    assert torch.equal(first["image"], again["image"])
    h, w = SHAPES[0]
    side = round(min(h, w) * 0.875)
    assert first["crops"][0].tolist() == [(h - side) // 2, (w - side) // 2, side, side, 0]
    ref = _pillow_view(images / "img/0.png", first["crops"][0], 20)
    assert (first["image"] * 255 - ref).abs().max() <= 1.0


def test_normalisation_and_grey(images):
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    raw = ImageDataset(images / "train.tsv", size=8)[1]["image"]
    norm = ImageDataset(images / "train.tsv", size=8, mean=mean, std=std)[1]["image"]
    assert torch.allclose(norm, (raw - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None], atol=1e-6)
    grey = ImageDataset(images / "train.tsv", size=8, channels=1)[1]
    assert grey["image"].shape == (1, 8, 8)


def test_collater_stacks_views_crops_and_labels(images):
    ds = ImageDataset(images / "train.tsv", [LabelSpec(images / "train.cls", "utterance")], size=10, views=2)
    batch = ds.collater()([ds[i] for i in (3, 0, 1)])
    assert batch["id"] == ["img/3", "img/0", "img/1"] and batch["index"].tolist() == [3, 0, 1]
    assert len(batch["views"]) == 2 and batch["views"][1].shape == (3, 3, 10, 10)
    assert torch.equal(batch["views"][1][0], ds[3]["views"][1])
    assert batch["crops"].shape == (3, 2, 5)
    assert batch["cls"].tolist() == [2, 1, 0]  # classes: sorted distinct values cat, dog, owl
    single = ImageDataset(images / "train.tsv", size=10)
    assert ImageCollater()([single[0], single[1]])["image"].shape == (2, 3, 10, 10)
    items = [single[0], single[1]]
    items[1] = dict(items[1], image=torch.zeros(3, 9, 10))
    with pytest.raises(ValueError, match="different shapes"):
        ImageCollater()(items)


def test_errors_name_the_manifest_line(images, tmp_path):
    rows = [("img/0.png", 1200), ("img/missing.png", 100)]
    write_manifest(tmp_path / "a.tsv", images, rows)
    with pytest.raises(FileNotFoundError, match=r"a\.tsv:3: image file not found: .*missing\.png"):
        ImageDataset(tmp_path / "a.tsv")
    write_manifest(tmp_path / "b.tsv", images, [("img/0.png", 1200), ("img/1.png", 99)])
    with pytest.raises(FormatError, match=r"b\.tsv:3: .*1\.png: has size 1536 but the manifest says 99"):
        ImageDataset(tmp_path / "b.tsv")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    write_manifest(tmp_path / "c.tsv", tmp_path, [("junk.png", 10)])
    with pytest.raises(FormatError, match=r"c\.tsv:2: .*junk\.png: not an image"):
        ImageDataset(tmp_path / "c.tsv")
    # unchecked, the same file fails when loaded, naming the line too
    ds = ImageDataset(tmp_path / "c.tsv", check_files=False)
    with pytest.raises(FormatError, match=r"c\.tsv:2: .*junk\.png"):
        ds[0]
    (tmp_path / "d.tsv").write_text(f"{images}\nimg/0.png 1200\n")
    with pytest.raises(FormatError, match=r"d\.tsv:2: expected 2 tab-separated fields"):
        ImageDataset(tmp_path / "d.tsv")
    with pytest.raises(ValueError, match="frame labels go with audio only"):
        ImageDataset(images / "train.tsv", [LabelSpec(images / "train.cls", "frame", label_rate=50)])
    with pytest.raises(ValueError, match="reserved"):
        ImageDataset(images / "train.tsv", [LabelSpec(images / "train.cls", "utterance", name="image")])
