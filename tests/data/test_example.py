"""The synthetic example sets load with the data layer's own datasets, and the public names resolve."""
from __future__ import annotations

import speechssl.data
import speechssl.train
import speechssl.train.task
from speechssl.data.example import write_example_images, write_example_text
from speechssl.data.image import ImageDataset
from speechssl.data.text import TextDataset, train_sentencepiece


def test_every_public_name_resolves_and_sizeddataset_is_shared_with_train():
    for name in speechssl.data.__all__:
        assert getattr(speechssl.data, name) is not None
    assert speechssl.train.SizedDataset is speechssl.data.SizedDataset is speechssl.train.task.SizedDataset


def test_example_images_are_deterministic_and_load(tmp_path):
    shapes = write_example_images(tmp_path / "a", per_split=3, seed=1)
    write_example_images(tmp_path / "b", per_split=3, seed=1)
    for i in range(3):
        rel = f"img/train{i}.png"
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    ds = ImageDataset(tmp_path / "a" / "train.tsv", size=16)
    assert len(ds) == 3 and ds[0]["image"].shape == (3, 16, 16)
    assert all(24 <= h <= 40 and 24 <= w <= 40 for h, w in shapes["valid"])


def test_example_text_trains_a_model_and_loads(tmp_path):
    text = write_example_text(tmp_path / "train.txt", lines=100, seed=2)
    model = train_sentencepiece(text, tmp_path / "sp.model", vocab_size=30)
    ds = TextDataset(text, model)
    assert len(ds) == 100 and ds.vocab_size == 30
