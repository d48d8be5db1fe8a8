"""Benchmarks streamed from image files (seq-imagenet-r, seq-cub200, image-folder) on small
folders in the real layouts, written here as JPEG and PNG files of a few pixels."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import v2

from mammoth.datasets import build_dataset, get_dataset_class
from mammoth.datasets.image_files import Decode, ImageFileSource, decode_image, files_change
from mammoth.datasets.streaming import read_imagenet_r_split
from mammoth.datasets.transforms import draw_crops
from mammoth.errors import DatasetError


def write_image(path: Path, seed: int, size: tuple[int, int] = (18, 26)) -> None:
    """A random RGB image, PNG or JPEG by ``path``'s suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def image_folder(root: Path, n_classes: int = 5, per_class: int = 5) -> Path:
    for label in range(n_classes):
        for index in range(per_class):
            write_image(root / f"class{label}" / f"{index}.{'png' if index % 2 else 'jpg'}", 10 * label + index)
    return root


def write_smooth_image(path: Path, seed: int, size: tuple[int, int], mode: str = "RGB") -> None:
    """Smooth random content (a 6x6 grid of random colours, bicubic-upscaled): what photos look like to a resize."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    Image.fromarray(pixels).resize((size[1], size[0]), Image.BICUBIC).convert(mode).save(path)


DECODES = [  # (Decode, the original's PIL transform)
    (Decode((16, 16)), transforms.Resize((16, 16), transforms.InterpolationMode.BICUBIC)),
    (Decode((20, 20), crop=16), transforms.Compose([transforms.Resize((20, 20), transforms.InterpolationMode.BICUBIC),
                                                    transforms.CenterCrop(16)])),
    (Decode(17, crop=15), transforms.Compose([transforms.Resize(17, transforms.InterpolationMode.BICUBIC),
                                              transforms.CenterCrop(15)])),
    (Decode((64, 48)), transforms.Resize((64, 48), transforms.InterpolationMode.BICUBIC)),
]


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_decode_is_torchvisions_tensor_transform_and_within_two_levels_of_the_originals_pil_one(
        tmp_path: Path, mode: str) -> None:
    """Files are resized by torchvision's tensor Resize(BICUBIC) on uint8 (torch's antialiased
    bicubic): exactly, for grayscale files too (one channel resized, then repeated, is the RGB
    conversion resized); the original's PIL resize rounds its two passes differently, at most 2
    of 255 levels apart on smooth content (docs/differences.md)."""
    path = tmp_path / "a.png"
    write_smooth_image(path, 0, (30, 44), mode)
    with Image.open(path) as file:
        image = file.convert("RGB")
    tensor = transforms.functional.pil_to_tensor(image)
    for decode, original in DECODES:
        resize = v2.Resize(decode.resize, transforms.InterpolationMode.BICUBIC, antialias=True)
        expected = resize(tensor) if decode.crop is None else v2.CenterCrop(decode.crop)(resize(tensor))
        decoded = decode_image(path, decode)
        assert decoded.dtype == torch.uint8 and torch.equal(decoded, expected)
        pil = transforms.functional.pil_to_tensor(original(image))
        assert (decoded.int() - pil.int()).abs().max() <= 2


def file_tensor(path: Path) -> torch.Tensor:
    with Image.open(path) as file:
        return transforms.functional.pil_to_tensor(file.convert("RGB"))


def mixed_files(root: Path) -> list[Path]:
    """Smooth JPEG and PNG files of several sizes, RGB and grayscale."""
    sizes = [(30, 44), (52, 20), (25, 25), (40, 61), (33, 47), (28, 36)]
    paths = [root / f"{index}.{'jpg' if index % 2 else 'png'}" for index in range(len(sizes))]
    for index, (path, size) in enumerate(zip(paths, sizes)):
        write_smooth_image(path, index, size, "L" if index in (1, 2) else "RGB")
    return paths


def test_a_random_resized_crop_is_cut_from_the_file_and_resized_once(tmp_path: Path) -> None:
    """read_augmented: the not-augmented images are read()'s; each crop is torchvision's
    resized_crop (BICUBIC, antialiased, on the file's uint8 pixels) of the box its draws give for
    that file's own size, then flipped as drawn: the original's RandomResizedCrop + flip on the file."""
    paths = mixed_files(tmp_path)
    source = ImageFileSource(paths, torch.zeros(len(paths), dtype=torch.int64), decode=Decode((24, 24)))
    indices = torch.tensor([3, 0, 5, 1, 2])
    draws = draw_crops("random-resized-crop-flip", len(indices), (16, 16), torch.Generator().manual_seed(3))
    examples, augmented = source.read_augmented(indices, "cpu", draws)
    assert torch.equal(examples, source.read(indices, "cpu"))
    assert augmented.shape == (5, 3, 16, 16) and augmented.dtype == torch.float32
    assert bool(draws.flips.any()) and not bool(draws.flips.all())
    for row, index in enumerate(indices.tolist()):
        pixels = file_tensor(paths[index])
        (top, left, h, w), = draws.select(torch.tensor([row])).boxes(*pixels.shape[-2:]).tolist()
        expected = v2.functional.resized_crop(pixels, top, left, h, w, [16, 16], transforms.InterpolationMode.BICUBIC,
                                              antialias=True)
        expected = expected.flip(-1) if draws.flips[row] else expected
        assert torch.equal(augmented[row], expected.float() / 255), row
    threaded = ImageFileSource(paths, source.labels, workers=2, decode=Decode((24, 24))).read_augmented(indices, "cpu", draws)
    assert torch.equal(threaded[0], examples) and torch.equal(threaded[1], augmented)


def test_a_random_crop_is_cut_from_the_decoded_image(tmp_path: Path) -> None:
    """seq-cub200's RandomCrop(224) after Resize((300, 300)): the crop comes from the decoded image."""
    paths = mixed_files(tmp_path)
    source = ImageFileSource(paths, torch.zeros(len(paths), dtype=torch.int64), decode=Decode((30, 30)))
    indices = torch.arange(len(paths))
    draws = draw_crops("random-crop-flip", len(paths), (24, 24), torch.Generator().manual_seed(0))
    examples, augmented = source.read_augmented(indices, "cpu", draws)
    assert torch.equal(augmented, draws.apply(examples)) and examples.shape == (6, 3, 30, 30)
    assert len({tuple(box) for box in draws.boxes(30, 30).tolist()}) > 1


def test_a_concatenation_of_sources_reads_each_part_with_its_own_draws(tmp_path: Path) -> None:
    from mammoth.datasets.source import ConcatSource, InMemorySource

    paths = mixed_files(tmp_path)
    labels = torch.zeros(3, dtype=torch.int64)
    first, second = (ImageFileSource(part, labels, decode=Decode((20, 20))) for part in (paths[:3], paths[3:]))
    indices = torch.tensor([4, 0, 2, 5])
    draws = draw_crops("random-resized-crop-flip", 4, (12, 12), torch.Generator().manual_seed(1))
    examples, augmented = ConcatSource([first, second]).read_augmented(indices, "cpu", draws)
    for rows, source, local in ((torch.tensor([1, 2]), first, torch.tensor([0, 2])),
                                (torch.tensor([0, 3]), second, torch.tensor([1, 2]))):
        part = source.read_augmented(local, "cpu", draws.select(rows))
        assert torch.equal(examples[rows], part[0]) and torch.equal(augmented[rows], part[1])
    # as uint8 (what the DataLoader's workers pass on), and with a source of tensors: floats where they mix
    raw = ConcatSource([first, second]).read_augmented(indices, "cpu", draws, uint8=True)
    assert raw[0].dtype == raw[1].dtype == torch.uint8 and torch.equal(raw[1].float() / 255, augmented)
    in_memory = InMemorySource((examples[:3] * 255).round().to(torch.uint8), labels)
    mixed = ConcatSource([first, in_memory]).read_augmented(torch.tensor([0, 4]), "cpu", draws.select(torch.tensor([0, 1])),
                                                            uint8=True)
    assert mixed[0].dtype == torch.float32 and torch.equal(mixed[0][1], examples[1])


def test_image_folder_training_batches_are_the_originals_transform_of_each_file(tmp_path: Path) -> None:
    """context.batches over image-folder: the order, then every batch's crop draws, from the run's
    generator; inputs are the files' random resized crops + flips (mean 0, std 1: no
    normalisation pass), not_aug_inputs the files resized to 224x224."""
    from mammoth.engine.context import build_context

    root = tmp_path / "data"
    for name in ("a", "b"):
        mixed_files(root / "train" / name)
        write_smooth_image(root / "test" / name / "0.png", 9, (20, 20))
    dataset = build_dataset({"name": "image-folder", "root": str(root), "n_tasks": 1, "batch_size": 5})
    context = build_context(dataset, "cpu", torch.Generator().manual_seed(4))
    source = dataset.task_source(0)
    batches = list(context.batches(source))
    replay = torch.Generator().manual_seed(4)
    order = torch.randperm(12, generator=replay)
    assert torch.equal(torch.cat([batch.indices for batch in batches]), order)
    all_draws = [draw_crops("random-resized-crop-flip", len(batch.indices), (224, 224), replay) for batch in batches]
    assert torch.equal(context.generator.get_state(), replay.get_state())
    for batch, draws in zip(batches, all_draws):
        for row, index in enumerate(batch.indices.tolist()):
            pixels = file_tensor(source.parent.paths[int(source.indices[index])])  # a task: a subset of the files
            (top, left, h, w), = draws.select(torch.tensor([row])).boxes(*pixels.shape[-2:]).tolist()
            crop = v2.functional.resized_crop(pixels, top, left, h, w, [224, 224], transforms.InterpolationMode.BICUBIC,
                                              antialias=True)
            crop = crop.flip(-1) if draws.flips[row] else crop
            assert torch.equal(batch.inputs[row], crop.float() / 255)
            resized = v2.functional.resize(pixels, [224, 224], transforms.InterpolationMode.BICUBIC, antialias=True)
            assert torch.equal(batch.not_aug_inputs[row], resized.float() / 255)


def test_identity_normalisation_is_skipped_and_others_are_applied(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "data", n_classes=2, per_class=5)
    x = torch.rand(2, 3, 8, 8)
    assert build_dataset({"name": "image-folder", "root": str(root), "n_tasks": 1}).normalize(x) is x
    dataset = build_dataset({"name": "image-folder", "root": str(root), "n_tasks": 1, "mean": [0.5, 0, 0], "std": [1, 1, 2]})
    expected = x.clone()
    expected[:, 0] -= 0.5
    expected[:, 2] /= 2
    torch.testing.assert_close(dataset.normalize(x), expected, rtol=0, atol=1e-7)


# ---- image-folder ----

def test_image_folder_splits_its_classes_into_tasks(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "data", n_classes=6, per_class=5)
    dataset = build_dataset({"name": "image-folder", "root": str(root), "n_tasks": 3})
    assert (dataset.n_tasks, dataset.n_classes_per_task, dataset.n_classes) == (3, 2, 6)
    train, test = dataset.sources()
    assert (len(train), len(test)) == (24, 6)  # 20% of each class (1 of 5) is test data
    task = dataset.task_source(1)
    assert set(task.labels.tolist()) == {2, 3} and len(task) == 8
    images = task.read(torch.arange(3), "cpu")
    assert images.shape == (3, 3, 224, 224) and images.dtype == torch.float32
    assert dataset.test_source(2).read(torch.arange(2), "cpu").shape == (2, 3, 224, 224)


def test_image_folder_splits_its_classes_unevenly_once_it_has_counted_them(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "data", n_classes=6, per_class=5)
    dataset = build_dataset({"name": "image-folder", "root": str(root), "base_classes": 3, "increment": 2})
    assert dataset.task_sizes == (3, 2, 1) and dataset.n_classes == 6  # the remainder, a smaller last task
    assert set(dataset.task_source(0).labels.tolist()) == {0, 1, 2} and set(dataset.task_source(2).labels.tolist()) == {5}
    # the pre-flight cannot count the folders; building the benchmark refuses what does not fit them
    with pytest.raises(DatasetError, match=r"^dataset.base_classes=7 is not allowed for image-folder; allowed: 1..6 "):
        build_dataset({"name": "image-folder", "root": str(root), "base_classes": 7, "increment": 2})
    described = dataset.describe()
    assert described["streaming"] is True and described["classes"] == [f"class{c}" for c in range(6)]


def test_image_folder_with_train_and_test_folders_and_named_class_order(tmp_path: Path) -> None:
    root = tmp_path / "data"
    image_folder(root / "train", n_classes=4, per_class=3)
    image_folder(root / "test", n_classes=4, per_class=1)
    dataset = build_dataset({"name": "image-folder", "root": str(root), "n_tasks": 2,
                             "class_order": ["class3", "class0", "class1", "class2"]})
    train, test = dataset.sources()
    assert (len(train), len(test)) == (12, 4)
    first = dataset.task_source(0)
    assert sorted(train.paths[i].parent.name for i in first.indices.tolist()) == ["class0"] * 3 + ["class3"] * 3
    assert sorted(first.labels.tolist()) == [0, 0, 0, 1, 1, 1]  # class3 is trained first, as class 0
    assert dataset.describe()["class_order"] == [3, 0, 1, 2]


def test_image_folder_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as error:
        build_dataset({"name": "image-folder", "root": str(tmp_path / "absent")})
    assert str(error.value).startswith(f"image-folder: dataset.root='{tmp_path / 'absent'}' is not a directory; allowed:")
    root = image_folder(tmp_path / "data", n_classes=3)
    with pytest.raises(DatasetError, match=r"^dataset.n_tasks=5 is not allowed for image-folder; allowed: .* 1, 3 \(default 5\)"):
        build_dataset({"name": "image-folder", "root": str(root)})
    with pytest.raises(DatasetError, match=r"^dataset.class_order names 'dog', not class folders"):
        build_dataset({"name": "image-folder", "root": str(root), "n_tasks": 3, "class_order": ["dog", "class0", "class1"]})


def test_validation_on_a_streaming_benchmark_reads_training_files_as_test_files(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "data", n_classes=5, per_class=5)
    dataset = build_dataset({"name": "image-folder", "root": str(root), "validation": 0.25}, seed=1)
    held_out = dataset.test_source(0)
    train = dataset.sources()[0]
    assert len(held_out) == 1 and len(dataset.task_source(0)) == 3  # ceil(4 * 0.25) of the 4 training images
    assert held_out.indices.tolist()[0] not in dataset.task_source(0).indices.tolist()
    expected = decode_image(train.paths[int(held_out.indices[0])], get_dataset_class("image-folder").test_decode)
    assert torch.equal(held_out.read(torch.tensor([0]), "cpu")[0], expected.float() / 255)


def test_fingerprint_hashes_paths_labels_and_contents_without_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = image_folder(tmp_path / "data", n_classes=5, per_class=5)
    monkeypatch.setattr("mammoth.datasets.image_files.decode_image", lambda *args: pytest.fail("decoded"))
    first = build_dataset({"name": "image-folder", "root": str(root)}).fingerprint()
    assert first["train files"]["count"] == 20 and first["test files"]["count"] == 5
    rows = dict(row.split("\t", 1) for row in first["train files"]["files"] + first["test files"]["files"])
    assert rows["class1/3.png"] == f"1\t{hashlib.sha256((root / 'class1' / '3.png').read_bytes()).hexdigest()}"
    assert first == build_dataset({"name": "image-folder", "root": str(root)}).fingerprint()
    changed = root / "class0" / "1.png"
    size = changed.stat().st_size
    data = bytearray(changed.read_bytes())
    data[size // 2] ^= 0xFF  # one byte of other contents, the same size
    changed.write_bytes(bytes(data))
    assert changed.stat().st_size == size
    second = build_dataset({"name": "image-folder", "root": str(root)}).fingerprint()
    part = next(part for part in second if second[part] != first[part])
    assert files_change(first[part], second[part]) == (
        f"class0/1.png has other contents: sha256 {rows['class0/1.png'].split()[1][:12]}... then, "
        f"{hashlib.sha256(bytes(data)).hexdigest()[:12]}... now")


def test_files_change_names_the_first_file_added_removed_or_relabelled() -> None:
    def fingerprint(*rows: str) -> dict:
        return {"count": len(rows), "sha256": "x", "files": list(rows)}

    before = fingerprint("a/1.png\t0\taa", "a/2.png\t0\tbb", "b/1.png\t1\tcc")
    assert files_change(before, fingerprint("a/1.png\t0\taa", "a/2.png\t0\tbb", "b/1.png\t1\tcc", "b/2.png\t1\tdd")) \
        == "b/2.png added"
    assert files_change(before, fingerprint("a/1.png\t0\taa", "b/1.png\t1\tcc")) == "a/2.png removed"
    assert files_change(before, fingerprint("a/1.png\t0\taa", "a/2.png\t1\tbb", "b/1.png\t1\tzz")) == \
        "a/2.png relabelled: class 0 then, 1 now and 1 more file(s)"
    assert files_change(before, fingerprint("a/2.png\t0\tbb", "a/1.png\t0\taa", "b/1.png\t1\tcc")) == \
        "the same files in another order"
    assert files_change({"count": 3, "sha256": "x"}, before) == (
        "the checkpoint records the files' sizes, not their contents (written by an earlier mammoth)")
    assert files_change(fingerprint("no tabs"), before).startswith("the checkpoint records")  # a crafted record
    assert files_change(fingerprint("a\tb.png\t0\taa"), fingerprint("a\tb.png\t0\tab")) == (
        "a\tb.png has other contents: sha256 aa... then, ab... now")


def test_a_streaming_benchmark_holds_no_tensors(tmp_path: Path) -> None:
    dataset = build_dataset({"name": "image-folder", "root": str(image_folder(tmp_path / "data"))})
    with pytest.raises(DatasetError, match="^image-folder streams its images from disk"):
        dataset.source()
    assert len(dataset.train_labels()) == 20


# ---- seq-imagenet-r ----

def test_the_shipped_imagenet_r_split_is_the_originals() -> None:
    classes, train, test = read_imagenet_r_split()
    assert (len(classes), len(set(classes)), len(train), len(test)) == (200, 200, 24000, 6000)
    assert not set(train) & set(test)
    # the first entries of the original's imagenet-r_train.yaml: data/imagenet-r/n02128757/sculpture_4.jpg, target 177, ...
    assert train[:2] == ["n02128757/sculpture_4.jpg", "n02268443/misc_113.jpg"]
    assert (classes.index("n02128757"), classes.index("n02268443")) == (177, 142)
    assert {name.split("/")[0] for name in train + test} == set(classes)


def fake_imagenet_r(root: Path, tmp_path: Path) -> Path:
    """A split file in the shipped format (200 fake wnids; 2 train + 1 test file for each of the
    first 10 classes, one per task) and the files it lists under root/imagenet-r/."""
    wnids = [f"n{index:08d}" for index in range(200)][::-1]  # label order is not sorted order
    lines = ["# fake split", "[classes]", *wnids, "[train]"]
    used = [wnids[task * 20] for task in range(10)]
    lines += [f"{wnid}/art_{index}.jpg" for wnid in used for index in range(2)]
    lines += ["[test]", *[f"{wnid}/sketch_0.png" for wnid in used]]
    split = tmp_path / "split.txt.gz"
    with gzip.open(split, "wt") as file:
        file.write("\n".join(lines) + "\n")
    for number, line in enumerate(lines):
        if "/" in line:
            write_image(root / "imagenet-r" / line, number)
    write_image(root / "imagenet-r" / used[0] / "not_in_split.jpg", 0)
    return split


def test_seq_imagenet_r_reads_the_originals_split_and_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    split = fake_imagenet_r(tmp_path / "data", tmp_path)
    cls = get_dataset_class("seq-imagenet-r")
    monkeypatch.setattr(cls, "split_file", split)
    dataset = build_dataset({"name": "seq-imagenet-r", "root": str(tmp_path / "data")})
    train, test = dataset.sources()
    assert (len(train), len(test)) == (20, 10)  # the file outside the split is not read
    assert train.labels.tolist() == [label for label in range(0, 200, 20) for _ in range(2)]
    assert train.paths[0] == tmp_path / "data" / "imagenet-r" / "n00000199" / "art_0.jpg"
    assert dataset.task_source(3).labels.tolist() == [60, 60]
    assert dataset.test_source(9).read(torch.tensor([0]), "cpu").shape == (1, 3, 224, 224)
    assert (dataset.config.batch_size, dataset.config.n_epochs, dataset.n_tasks) == (128, 50, 10)
    (tmp_path / "data" / "imagenet-r" / "n00000199" / "art_1.jpg").unlink()
    with pytest.raises(DatasetError) as error:
        build_dataset({"name": "seq-imagenet-r", "root": str(tmp_path / "data")}).sources()
    assert str(error.value).startswith("seq-imagenet-r: 1 of the split's 30 files are missing in ")
    assert "(first: n00000199/art_1.jpg); to get them: download https://people.eecs.berkeley.edu/" in str(error.value)


def test_missing_imagenet_r_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as error:
        build_dataset({"name": "seq-imagenet-r", "root": str(tmp_path)}).sources()
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"seq-imagenet-r: no imagenet-r/ folder (<wnid>/*.jpg) in {tmp_path}")
    assert "imagenet-r.tar" in message


# ---- seq-cub200 ----

def fake_cub(root: Path) -> Path:
    """CUB_200_2011's layout with 3 images of each of classes 1, 21, ..., 181 (one per task): 2 train, 1 test."""
    folder = root / "CUB_200_2011"
    images, split, labels = [], [], []
    for task in range(10):
        class_id = 1 + 20 * task
        for index in range(3):
            image_id = len(images) + 1
            relative = f"{class_id:03d}.Bird_{class_id}/Bird_{index}.jpg"
            write_image(folder / "images" / relative, image_id, (30, 20))
            images.append(f"{image_id} {relative}")
            split.append(f"{image_id} {int(index < 2)}")
            labels.append(f"{image_id} {class_id}")
    for name, lines in (("images.txt", images), ("train_test_split.txt", split), ("image_class_labels.txt", labels)):
        (folder / name).write_text("\n".join(lines) + "\n")
    return root


def test_seq_cub200_reads_the_official_layout(tmp_path: Path) -> None:
    root = fake_cub(tmp_path / "data")
    dataset = build_dataset({"name": "seq-cub200", "root": str(root)})
    train, test = dataset.sources()
    assert (len(train), len(test)) == (20, 10)
    assert train.labels.tolist() == [label for label in range(0, 200, 20) for _ in range(2)]
    first = dataset.task_source(0)
    x = first.read(torch.arange(2), "cpu")
    assert x.shape == (2, 3, 300, 300)  # the original's Resize((300, 300)) before RandomCrop(224)
    assert dataset.train_transform(x, torch.Generator().manual_seed(0)).shape == (2, 3, 224, 224)
    assert dataset.test_transform(x).shape == (2, 3, 224, 224)
    assert dataset.test_source(0).read(torch.tensor([0]), "cpu").shape == (1, 3, 224, 224)
    assert (dataset.config.batch_size, dataset.config.n_epochs, dataset.mean) == (128, 50, (0.485, 0.456, 0.406))


def test_a_cub_file_too_wide_for_the_test_resize_is_one_line(tmp_path: Path) -> None:
    root = fake_cub(tmp_path / "data")
    wide = root / "CUB_200_2011" / "images" / "001.Bird_1" / "Bird_2.jpg"  # the test image of task 1
    Image.new("RGB", (300000, 1)).save(wide, format="PNG")
    dataset = build_dataset({"name": "seq-cub200", "root": str(root)})
    with pytest.raises(DatasetError) as error:
        dataset.test_source(0).read(torch.tensor([0]), "cpu")
    assert str(error.value).startswith(f"image {wide} is 300000x1 pixels (width x height): resized to 256 pixels on its "
                                       "shorter side it would be 76800000x256 (19,660,800,000 pixels, 59.0 GB); allowed: "
                                       "at most 178,956,970 pixels once resized")


def test_missing_cub_files_are_one_line(tmp_path: Path) -> None:
    root = fake_cub(tmp_path / "data")
    (root / "CUB_200_2011" / "train_test_split.txt").unlink()
    with pytest.raises(DatasetError) as error:
        build_dataset({"name": "seq-cub200", "root": str(root)}).sources()
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"seq-cub200: no train_test_split.txt in {root / 'CUB_200_2011'}")
    assert "CUB_200_2011.tgz" in message


def test_image_file_source_decodes_a_batch_in_threads_identically(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "data", n_classes=2, per_class=3)
    paths = sorted(root.rglob("*.*"))
    labels = torch.zeros(len(paths), dtype=torch.int64)
    decode = Decode((32, 32), crop=24)
    serial = ImageFileSource(paths, labels, decode=decode).read(torch.arange(6), "cpu")
    threaded = ImageFileSource(paths, labels, workers=2, decode=decode).read(torch.arange(6), "cpu")
    assert serial.shape == (6, 3, 24, 24) and torch.equal(serial, threaded)


class MeanScore(torch.nn.Module):
    """Scores every class by the image's mean pixel (what evaluation needs of a model)."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.n_classes = n_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))[:, None] * torch.arange(1, self.n_classes + 1, dtype=x.dtype)


def test_a_streamed_benchmark_is_evaluated_in_batches_of_its_batch_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mammoth.engine.context import build_context
    from mammoth.engine.evaluation import IN_MEMORY_EVAL_BATCH_SIZE, evaluate_tasks, evaluation_batch_size
    from hand_dataset import HandDataset

    root = image_folder(tmp_path / "data", n_classes=5, per_class=10)
    dataset = build_dataset({"name": "image-folder", "root": str(root), "n_tasks": 1, "batch_size": 4})
    context = build_context(dataset, "cpu", torch.Generator().manual_seed(0))
    assert context.streaming and evaluation_batch_size(context) == 4  # as the original evaluates every benchmark
    read, sizes = ImageFileSource.read, []
    monkeypatch.setattr(ImageFileSource, "read", lambda self, indices, device: sizes.append(len(indices)) or read(self, indices, device))
    accuracies = evaluate_tasks(MeanScore(5), context, [dataset.test_source(0)])
    assert sizes == [4, 4, 2] and accuracies["class_il"] == [20.0]  # 10 test images; every one predicted class 4
    in_memory = HandDataset("class-il", 2, 2).context()
    assert not in_memory.streaming and evaluation_batch_size(in_memory) == IN_MEMORY_EVAL_BATCH_SIZE == 512
