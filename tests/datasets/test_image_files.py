"""ImageFileSource: small image folders in the real layout (PNG and JPEG files written here),
decoded per batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from mammoth.datasets.image_files import ImageFileSource, decode_resized, list_image_folder
from mammoth.errors import DatasetError


def write_image(path: Path, image: torch.Tensor) -> None:
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path, quality=95)


def image_folder(root: Path, counts: dict[str, int], size: tuple[int, int] = (24, 24), seed: int = 0) -> dict[Path, torch.Tensor]:
    """``root/<class>/<i>.png`` files of random pixels; returns what each file holds."""
    generator = torch.Generator().manual_seed(seed)
    written = {}
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for index in range(count):
            image = torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=generator)
            path = root / name / f"{index}.png"
            write_image(path, image)
            written[path] = image
    return written


def test_the_folder_layout_gives_sorted_classes_and_labels(tmp_path: Path) -> None:
    image_folder(tmp_path, {"n02": 2, "n01": 3})
    (tmp_path / "n01" / "notes.txt").write_text("not an image")
    (tmp_path / ".cache").mkdir()
    paths, labels, classes = list_image_folder(tmp_path)
    assert classes == ["n01", "n02"]
    assert labels.tolist() == [0, 0, 0, 1, 1]
    assert [path.parent.name for path in paths] == ["n01"] * 3 + ["n02"] * 2


def test_png_images_read_back_exactly_at_their_own_size(tmp_path: Path) -> None:
    written = image_folder(tmp_path, {"a": 2, "b": 2})
    paths, labels, _ = list_image_folder(tmp_path)
    source = ImageFileSource(paths, labels, size=24)
    batch = source.read(torch.tensor([3, 0]), "cpu")
    assert batch.shape == (2, 3, 24, 24) and batch.dtype == torch.float32
    assert torch.equal(batch[0], written[paths[3]].float() / 255)
    assert torch.equal(batch[1], written[paths[0]].float() / 255)


def test_images_of_other_sizes_are_resized_and_centre_cropped(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    wide = torch.zeros(3, 20, 40, dtype=torch.uint8)
    wide[:, :, 6:34] = 255  # a white centre band wider than what the crop keeps
    write_image(tmp_path / "a" / "wide.png", wide)
    write_image(tmp_path / "a" / "photo.jpg", torch.full((3, 30, 30), 128, dtype=torch.uint8))
    paths, labels, _ = list_image_folder(tmp_path)
    batch = ImageFileSource(paths, labels, size=10, workers=2).read(torch.tensor([0, 1]), "cpu")
    assert batch.shape == (2, 3, 10, 10)
    assert (batch[0] - 128 / 255).abs().max() < 0.02  # JPEG of a flat grey stays grey
    assert batch[1].min() > 0.9  # only the white band survives the centre crop of the 10x20 resize


def test_subset_and_shard_read_the_same_files(tmp_path: Path) -> None:
    image_folder(tmp_path, {"a": 3, "b": 2})
    paths, labels, _ = list_image_folder(tmp_path)
    source = ImageFileSource(paths, labels, size=24)
    shards = [source.shard(rank, 2) for rank in range(2)]
    assert [len(shard) for shard in shards] == [3, 2]
    assert torch.equal(shards[1].read(torch.tensor([0]), "cpu"), source.read(torch.tensor([1]), "cpu"))
    assert shards[0].labels.tolist() == labels[0::2].tolist()


def test_bad_folders_and_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"image folder .*missing does not exist"):
        list_image_folder(tmp_path / "missing")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"has no images in class folders"):
        list_image_folder(tmp_path / "empty")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=rf"image {broken} cannot be decoded"):
        decode_resized(broken, 8)
    with pytest.raises(DatasetError, match=r"image size=0 is not allowed"):
        ImageFileSource([broken], torch.zeros(1, dtype=torch.int64), size=0)
