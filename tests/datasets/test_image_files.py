"""ImageFileSource: small image folders in the real layout (PNG and JPEG files written here),
decoded per batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from mammoth.datasets.image_files import Decode, ImageFileSource, decode_image, decode_resized, list_image_folder
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


LIMIT = "at most 178,956,970 pixels"  # Pillow's decompression-bomb limit: 2 x PIL.Image.MAX_IMAGE_PIXELS


def test_an_image_too_wide_to_resize_is_one_line_naming_it_its_size_and_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    Image.new("RGB", (300000, 1)).save(path)  # seq-cub200's Resize(256) would make it 76,800,000 x 256: 59 GB
    with pytest.raises(DatasetError) as error:
        decode_image(path, Decode(256, crop=224))
    assert str(error.value) == (
        f"image {path} is 300000x1 pixels (width x height): resized to 256 pixels on its shorter side it would be "
        "76800000x256 (19,660,800,000 pixels, 59.0 GB); allowed: " + LIMIT + " once resized (Pillow's "
        "decompression-bomb limit), an aspect ratio up to 1:2730")
    with pytest.raises(DatasetError) as error:
        decode_resized(path, 224)
    assert str(error.value).startswith(f"image {path} is 300000x1 pixels (width x height): resized to 224 pixels on "
                                       "its shorter side it would be 67200000x224 (15,052,800,000 pixels, 45.2 GB); "
                                       "allowed: " + LIMIT)
    tall = tmp_path / "tall.png"
    Image.new("RGB", (2, 300)).save(tall)  # 256 x 38,400 once resized: within the limit, decoded
    assert decode_image(tall, Decode(256, crop=224)).shape == (3, 224, 224)


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24 KB PNG of 14000 x 14000 pixels (196,000,000: over Pillow's limit), 1 bit each."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("1", (14000, 14000)).save(path)
    return path


def test_a_decompression_bomb_is_one_line_naming_it(bomb: Path) -> None:
    for decode in (lambda: decode_image(bomb, Decode((224, 224))), lambda: decode_resized(bomb, 224)):
        with pytest.raises(DatasetError) as error:
            decode()
        message = str(error.value)
        assert message.startswith(f"image {bomb} is too large to decode (") and "196000000" in message
        assert message.endswith("allowed: " + LIMIT + " (Pillow's decompression-bomb limit, 2 x PIL.Image.MAX_IMAGE_PIXELS)")
        assert "\n" not in message


def test_the_pixel_limit_holds_when_pillows_own_check_is_off(bomb: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # Pillow then decodes anything; mammoth still refuses
    with pytest.raises(DatasetError) as error:
        decode_image(bomb, Decode((224, 224)))
    assert str(error.value) == (f"image {bomb} is 14000x14000 pixels (width x height, 196,000,000 pixels), too large to "
                                "decode; allowed: " + LIMIT + " (Pillow's decompression-bomb limit, 2 x PIL.Image.MAX_IMAGE_PIXELS)")
