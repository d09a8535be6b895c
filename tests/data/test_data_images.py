"""Image folders (data/images.py): PNG/JPEG of any size, class subfolders as labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tiny import tiny_config
from vaelab.config import DataConfig
from vaelab.data import DataError, load_dataset
from vaelab.data.splits import split_rows

SIZES = [(20, 16), (24, 24), (30, 18), (16, 28)]  # (width, height): every image differs


def write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if path.suffix == ".jpg":
        image.save(path, quality=95)
    else:
        image.save(path)
    return path


def class_folder(root: Path, n_per_class: int = 20, seed: int = 0) -> Path:
    """Two classes, mixed sizes, PNG and JPEG: bright images in 'cats', dark in 'dogs'."""
    rng = np.random.default_rng(seed)
    for name, level in (("cats", 200), ("dogs", 40)):
        for i in range(n_per_class):
            w, h = SIZES[i % len(SIZES)]
            pixels = np.clip(level + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
            write(root / name / f"{i:02d}{'.jpg' if i % 2 else '.png'}", pixels)
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return class_folder(tmp_path / "pets")


def test_class_subfolders_become_labels_and_every_image_gets_the_configured_size(folder):
    options = DataConfig(image_size=12)
    data = load_dataset(str(folder), "all", options=options)
    assert data.x.shape == (40, 3, 12, 12) and data.is_8bit and data.event_shape == (3, 12, 12)
    assert data.y.tolist() == [0] * 20 + [1] * 20  # sorted paths: cats/00.. then dogs/00..
    assert data.info["classes"] == {"cats": 0, "dogs": 1}
    assert data.info["kind"] == "image-folder" and data.info["image_size"] == [12, 12]
    means = data.x.mean(dim=(1, 2, 3))
    assert means[:20].min() > 0.65 and means[20:].max() < 0.25  # pixels follow their label
    assert torch.equal(data.x * 255, (data.x * 255).round())  # 8-bit values k/255


def test_image_folder_splits_are_the_seeded_split(folder):
    options = DataConfig(image_size=8, split_fractions=[0.5, 0.25, 0.25], split_seed=2)
    every = load_dataset(str(folder), "all", options=options)
    for split in ("train", "valid", "test"):
        data = load_dataset(str(folder), split, options=options)
        rows = split_rows(40, split, [0.5, 0.25, 0.25], 2)
        assert torch.equal(data.x, every.x[rows]) and torch.equal(data.y, every.y[rows])
        assert data.info["split"]["sizes"] == {"train": 20, "valid": 10, "test": 10}


def test_center_crop_keeps_the_middle_and_resize_stretches_the_whole(tmp_path):
    pixels = np.zeros((20, 40), dtype=np.uint8)  # 40 wide, 20 high: white middle half
    pixels[:, 10:30] = 255
    write(tmp_path / "one" / "a.png", pixels)
    crop = load_dataset(str(tmp_path / "one"), "all",
                        options=DataConfig(image_size=10, image_fit="center-crop"))
    stretch = load_dataset(str(tmp_path / "one"), "all", options=DataConfig(image_size=10))
    assert crop.x.shape == stretch.x.shape == (1, 1, 10, 10)
    assert crop.x.mean() > 0.95  # only the white middle survives the crop
    assert abs(stretch.x.mean().item() - 0.5) < 0.06  # black sides squeezed in
    assert crop.y is None  # no class subfolders: no labels


def test_same_size_images_keep_their_size_and_channels_can_be_converted(tmp_path):
    rng = np.random.default_rng(1)
    write(tmp_path / "f" / "gray.png", rng.integers(0, 256, (6, 5), dtype=np.uint8))
    write(tmp_path / "f" / "rgb.png", rng.integers(0, 256, (6, 5, 3), dtype=np.uint8))
    with pytest.raises(DataError, match=r"images differ in channels: .*gray\.png is gray .*"
                                        r"rgb\.png is colour .* set data\.image_channels"):
        load_dataset(str(tmp_path / "f"), "all")
    gray = load_dataset(str(tmp_path / "f"), "all", options=DataConfig(image_channels="gray"))
    rgb = load_dataset(str(tmp_path / "f"), "all", options=DataConfig(image_channels="rgb"))
    assert gray.x.shape == (2, 1, 6, 5) and rgb.x.shape == (2, 3, 6, 5)
    stored = np.asarray(Image.open(tmp_path / "f" / "gray.png"))
    assert np.array_equal((gray.x[0, 0] * 255).round().byte().numpy(), stored)


def same_size_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("cats", "dogs"):
        for i in range(4):
            write(root / name / f"{i:02d}.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))


def corrupt(root: Path) -> Path:
    same_size_folder(root)
    (root / "cats" / "02.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG")
    return root / "cats" / "02.png"


def truncated(root: Path) -> Path:
    same_size_folder(root)
    path = root / "dogs" / "00.png"
    path.write_bytes(path.read_bytes()[:60])  # header intact, pixel data cut
    return path


def mixed_channels(root: Path) -> Path:
    write(root / "a" / "x.png", np.zeros((4, 4), dtype=np.uint8))
    return write(root / "b" / "y.png", np.zeros((4, 4, 3), dtype=np.uint8))


def mixed_sizes(root: Path) -> Path:
    write(root / "x.png", np.zeros((4, 4), dtype=np.uint8))
    return write(root / "y.png", np.zeros((5, 4), dtype=np.uint8))


def no_images(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "notes.txt").write_text("no pictures here")
    return root


def top_and_nested(root: Path) -> Path:
    write(root / "loose.png", np.zeros((4, 4), dtype=np.uint8))
    return write(root / "cls" / "a.png", np.zeros((4, 4), dtype=np.uint8))


def sixteen_bit(root: Path) -> Path:
    path = root / "deep.png"
    root.mkdir(parents=True)
    Image.fromarray(np.full((4, 4), 40000, dtype=np.uint16)).save(path)
    return path


BAD = {
    "corrupt": (corrupt, r"cats/02\.png: not a readable PNG/JPEG image .* replace or delete"),
    "truncated": (truncated, r"dogs/00\.png: not a readable PNG/JPEG image"),
    "mixed channels": (mixed_channels, r"differ in channels: .*x\.png is gray.*y\.png is colour"),
    "mixed sizes": (mixed_sizes, r"differ in size: .*x\.png is 4x4, .*y\.png is 4x5 .*"
                                 r"set data\.image_size=N"),
    "no images": (no_images, r"holds no PNG or JPEG images .* put \.png/\.jpg files in it"),
    "top and nested": (top_and_nested, r"both at its top level \(loose\.png\) and in subfolders"),
    "16-bit": (sixteen_bit, r"deep\.png is a I;16\w? image .* save it as an 8-bit PNG"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_folders_fail_in_one_line_naming_the_file_before_any_run_folder(case, tmp_path):
    import vaelab

    make, pattern = BAD[case]
    root = tmp_path / "images"
    make(root)
    with pytest.raises(DataError, match=pattern) as err:
        load_dataset(str(root), "train")
    assert "\n" not in str(err.value)
    config = tiny_config(root, "data.image_size=0")  # fit refuses it before writing anything
    with pytest.raises(DataError, match=pattern):
        vaelab.fit(config, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_folder_of_mixed_size_png_and_jpeg_trains_and_its_scatter_is_coloured_by_class(
        folder, tmp_path, monkeypatch):
    import vaelab
    from vaelab.viz import plots

    seen = {}
    original = plots.plot_scatter

    def spy(codes, labels, projection, path, **kwargs):
        seen["labels"] = labels
        return original(codes, labels, projection, path, **kwargs)

    monkeypatch.setattr(plots, "plot_scatter", spy)
    config = tiny_config(folder, "data.image_size=8", "data.split_fractions=[0.6, 0.2, 0.2]",
                         "train.epochs=2")
    run = vaelab.fit(config, out=tmp_path / "run")
    test = load_dataset(str(folder), "test", options=config.data)
    assert len(set(test.y.tolist())) == 2  # both classes are in the split the scatter shows
    assert np.array_equal(seen["labels"], test.y.numpy())
    summary = json.loads((run.path / "summary.json").read_text())
    assert "scatter.png" in summary["pictures"]
    colors, legend = plots.label_colors(seen["labels"], len(seen["labels"]))
    assert [k for k, _ in legend] == [0, 1] and len({tuple(c) for c in colors}) == 2
    meta = json.loads((run.path / "meta.json").read_text())
    assert meta["data"]["classes"] == {"cats": 0, "dogs": 1} and meta["is_8bit"]
    assert meta["event_shape"] == [3, 8, 8]
    assert "labels cats=0, dogs=1" in summary["data"]["line"]
