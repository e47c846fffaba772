"""VideoDataset: frames carry their index in channel 0, so a clip's temporal crop can be read off it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from speechssl.data.files import write_file_manifest
from speechssl.data.manifest import FormatError, write_manifest
from speechssl.data.video import VideoDataset

LENGTHS = [20, 5, 33]
H, W = 24, 20


def _frames(t: int) -> np.ndarray:
    """(T, H, W, 3) uint8: channel 0 of frame j is 7 * j everywhere; channels 1, 2 a fixed pattern."""
    pattern = np.random.default_rng(0).integers(0, 256, (H, W, 2), dtype=np.uint8)
    out = np.empty((t, H, W, 3), dtype=np.uint8)
    out[..., 0] = (7 * np.arange(t))[:, None, None]
    out[..., 1:] = pattern
    return out


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    for i, t in enumerate(LENGTHS):
        np.save(root / f"v{i}.npy", _frames(t))
        (root / f"d{i}").mkdir()
        for j, frame in enumerate(_frames(t)):
            Image.fromarray(frame).save(root / f"d{i}" / f"{j:05d}.png")
    write_file_manifest(root / "npy.tsv", root, [f"v{i}.npy" for i in range(3)], "video")
    write_file_manifest(root / "dir.tsv", root, [f"d{i}" for i in range(3)], "video")
    return root


def _marker(video: torch.Tensor) -> list[int]:
    """Frame indices read off channel 0 of a (C, T, H, W) clip."""
    return [int(round(float(v) * 255 / 7)) for v in video[0].mean(dim=(1, 2))]


def test_manifest_counts_frames(videos):
    for name in ("npy.tsv", "dir.tsv"):
        lines = (videos / name).read_text().splitlines()[1:]
        assert [int(ln.split("\t")[1]) for ln in lines] == LENGTHS


def test_temporal_crop_is_the_reported_frames(videos):
    ds = VideoDataset(videos / "npy.tsv", num_frames=4, frame_stride=3, size=8)
    starts = set()
    for epoch in range(1, 6):
        ds.set_epoch(epoch)
        for i, t in enumerate(LENGTHS):
            item = ds[i]
            assert item["video"].shape == (3, 4, 8, 8)
            frames = item["frames"].tolist()
            assert _marker(item["video"]) == frames
            if t >= 10:
                assert frames == list(range(frames[0], frames[0] + 12, 3)) and frames[-1] < t
                starts.add((i, frames[0]))
            else:  # 5 frames < span 10: from 0, the last frame repeated
                assert frames == [0, 3, 4, 4]
    assert len(starts) > 5


def test_the_crop_is_shared_by_all_frames_and_matches_pillow(videos):
    ds = VideoDataset(videos / "npy.tsv", num_frames=3, frame_stride=2, size=10)
    for i in range(3):
        item = ds[i]
        clip = item["video"]
        for j in range(1, clip.shape[1]):
            assert torch.equal(clip[1:, j], clip[1:, 0])
        top, left, h, w, flipped = item["crops"][0].tolist()
        frame = _frames(LENGTHS[i])[0]
        ref = Image.fromarray(frame).crop((left, top, left + w, top + h)).resize((10, 10), Image.BILINEAR)
        if flipped:
            ref = ref.transpose(Image.FLIP_LEFT_RIGHT)
        ref = torch.from_numpy(np.asarray(ref).astype(np.float32)).permute(2, 0, 1)
        assert (clip[1:, 0] * 255 - ref[1:]).abs().max() <= 1.0


def test_npy_and_frame_directory_give_the_same_items(videos):
    a = VideoDataset(videos / "npy.tsv", num_frames=4, frame_stride=2, size=12, seed=3)
    b = VideoDataset(videos / "dir.tsv", num_frames=4, frame_stride=2, size=12, seed=3)
    for i in range(3):
        x, y = a[i], b[i]
        assert torch.equal(x["frames"], y["frames"]) and torch.equal(x["crops"], y["crops"])
        assert torch.allclose(x["video"], y["video"], atol=1e-6)


def test_deterministic_and_independent_of_global_rng(videos):
    torch.manual_seed(0)
    a = VideoDataset(videos / "npy.tsv", num_frames=4, frame_stride=2, size=8)[2]
    torch.manual_seed(99)
    torch.rand(5)
    b = VideoDataset(videos / "npy.tsv", num_frames=4, frame_stride=2, size=8)[2]
    assert torch.equal(a["video"], b["video"]) and torch.equal(a["frames"], b["frames"])


def test_evaluation_centres_and_native_resolution(videos):
    ds = VideoDataset(videos / "npy.tsv", num_frames=4, frame_stride=3, size=None, augment=False)
    item = ds[0]
    assert item["frames"].tolist() == [5, 8, 11, 14]  # 20 frames, span 10: start (20 - 10) // 2
    assert item["video"].shape == (3, 4, H, W)
    expected = torch.from_numpy(_frames(20)[[5, 8, 11, 14]]).permute(3, 0, 1, 2).float() / 255
    assert torch.equal(item["video"], expected)
    batch = ds.collater()([ds[0], ds[2]])
    assert batch["video"].shape == (2, 3, 4, H, W) and batch["frames"].shape == (2, 4)


def test_errors_name_the_manifest_line(videos, tmp_path):
    np.save(tmp_path / "float.npy", np.zeros((4, 8, 8, 3), dtype=np.float32))
    np.save(tmp_path / "flat.npy", np.zeros((4, 8, 8), dtype=np.uint8))
    (tmp_path / "empty").mkdir()
    for name, rel, size, pattern in [
        ("a", "float.npy", 4, r"a\.tsv:2: .*float\.npy: expected a \(T, H, W, C\) uint8 array"),
        ("b", "flat.npy", 4, r"b\.tsv:2: .*flat\.npy: expected a \(T, H, W, C\) uint8"),
        ("c", "empty", 1, r"c\.tsv:2: .*empty: a video directory needs frame images"),
    ]:
        write_manifest(tmp_path / f"{name}.tsv", tmp_path, [(rel, size)])
        with pytest.raises(FormatError, match=pattern):
            VideoDataset(tmp_path / f"{name}.tsv")
    write_manifest(tmp_path / "d.tsv", videos, [("v0.npy", 20), ("v1.npy", 6)])
    with pytest.raises(FormatError, match=r"d\.tsv:3: .*v1\.npy: has size 5 but the manifest says 6 \(frames\)"):
        VideoDataset(tmp_path / "d.tsv")
    write_manifest(tmp_path / "e.tsv", tmp_path, [("gone.npy", 3)])
    with pytest.raises(FileNotFoundError, match=r"e\.tsv:2: video file not found"):
        VideoDataset(tmp_path / "e.tsv")
