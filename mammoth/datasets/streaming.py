"""Benchmarks that stream 224-pixel images from disk: ``seq-imagenet-r``, ``seq-cub200`` and
``image-folder`` (a user's own ``root/<class>/*.jpg``).

Only paths and labels are held in memory; each batch is decoded when it is read (Pillow's
decoder, the original's transforms: :class:`~mammoth.datasets.image_files.Decode`), so peak
memory does not grow with the number of images. The random part of the original's training
transform (crop, flip) is drawn from the run's generator before the batch is read
(:meth:`ContinualDataset.draw_augmentation`) and applied while each file is decoded
(:meth:`ImageFileSource.read_augmented`, in the ``DataLoader`` workers when
``dataset.num_workers`` > 0); where that differs from the original, the benchmark's docstring says so.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional

import torch
from torch import Tensor

from mammoth.config.user_paths import launch_path
from mammoth.datasets import register_dataset
from mammoth.datasets.base import ContinualDataset, DatasetConfig, coerce_config
from mammoth.datasets.digits import stratified_split
from mammoth.datasets.image_files import IMAGE_SUFFIXES, Decode, ImageFileSource, list_image_folder
from mammoth.datasets.source import DataSource
from mammoth.errors import DatasetError

#: ImageNet's mean and std (the original's for seq-cifar100-224 and seq-cub200).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SPLITS = Path(__file__).with_name("splits")

Files = tuple[list[Path], Tensor, list[Path], Tensor]


def missing_data(dataset: str, where: Path, expected: str, how: str) -> DatasetError:
    """The one-line error for a benchmark whose files are absent (nothing is downloaded)."""
    return DatasetError(f"{dataset}: no {expected} in {where.absolute()}; to get it: {how}")


class StreamingImageBenchmark(ContinualDataset):
    """A class-IL benchmark of image files read per batch: subclasses implement :meth:`list_files`
    and set ``train_decode`` (what a training file becomes before the random crop: the examples'
    ``not_aug_inputs``) and ``test_decode``."""

    setting = "class-il"
    streaming = True
    input_shape = (3, 224, 224)
    default_backbone = "timm"
    train_decode: ClassVar[Decode]
    test_decode: ClassVar[Decode]

    def list_files(self) -> Files:
        """``(train paths, train labels, test paths, test labels)``, labels int64 in ``0..n_classes-1``."""
        raise NotImplementedError(f"{type(self).__name__} must implement list_files()")

    def load_sources(self) -> tuple[DataSource, DataSource]:
        train_paths, train_labels, test_paths, test_labels = self.list_files()
        return (ImageFileSource(train_paths, train_labels, decode=self.train_decode),
                ImageFileSource(test_paths, test_labels, decode=self.test_decode))

    def evaluation_view(self, train: DataSource) -> DataSource:
        """The training files decoded as test files (what ``dataset.validation`` evaluates on)."""
        assert isinstance(train, ImageFileSource)
        return train.with_decode(self.test_decode)


def read_imagenet_r_split(path: Path = SPLITS / "imagenet-r.txt.gz") -> tuple[list[str], list[str], list[str]]:
    """(wnids in label order, train files, test files) of the original's ImageNet-R split, files
    as ``<wnid>/<name>`` (see ``splits/imagenet-r.txt.gz``'s first line for its origin)."""
    sections: dict[str, list[str]] = {}
    current: Optional[list[str]] = None
    with gzip.open(path, "rt", encoding="utf-8") as file:
        for line in file:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            if line.startswith("[") and line.endswith("]"):
                current = sections.setdefault(line[1:-1], [])
            elif current is not None:
                current.append(line)
    return sections.get("classes", []), sections.get("train", []), sections.get("test", [])


@register_dataset
class SequentialImageNetR(StreamingImageBenchmark):
    """Sequential ImageNet-R: 200 classes in 10 class-IL tasks of 20, from ``root/imagenet-r/<wnid>/*.jpg``
    (the official archive, extracted). The train/test split (24,000 / 6,000 files) and the class
    numbering are the original's (its ``imagenet-r_train.yaml`` / ``_test.yaml``, shipped in
    ``splits/imagenet-r.txt.gz``). Transforms as the original: training files resized to 224x224
    (its ``not_aug_transform``), then ``RandomResizedCrop(224, BICUBIC)`` + flip; test files
    ``Resize((256, 256), BICUBIC)`` + ``CenterCrop(224)``; no normalisation (mean 0, std 1). The
    random crop is cut from the file at full resolution, as the original's; replayed examples get
    theirs from the 224x224 image, as the original's do."""

    name = "seq-imagenet-r"
    default_n_tasks = 10
    n_classes_per_task = 20
    mean = (0.0, 0.0, 0.0)
    std = (1.0, 1.0, 1.0)
    augmentation = "random-resized-crop-flip"
    default_batch_size = 128
    default_n_epochs = 50
    train_decode = Decode(resize=(224, 224))
    test_decode = Decode(resize=(256, 256), crop=224)
    split_file: ClassVar[Path] = SPLITS / "imagenet-r.txt.gz"

    def list_files(self) -> Files:
        folder = Path(self.config.root).expanduser() / "imagenet-r"
        how = ("download https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar and extract it in "
               f"{Path(self.config.root).expanduser().absolute()} (it creates imagenet-r/<wnid>/*.jpg)")
        if not folder.is_dir():
            raise missing_data(self.name, folder, "imagenet-r/ folder (<wnid>/*.jpg)", how)
        classes, train, test = read_imagenet_r_split(self.split_file)
        label_of = {wnid: label for label, wnid in enumerate(classes)}
        missing = [name for name in train + test if not (folder / name).is_file()]
        if missing:
            raise DatasetError(f"{self.name}: {len(missing)} of the split's {len(train) + len(test)} files are missing in "
                               f"{folder.absolute()} (first: {missing[0]}); to get them: {how}")

        def files(names: list[str]) -> tuple[list[Path], Tensor]:
            return ([folder / name for name in names],
                    torch.tensor([label_of[name.split("/", 1)[0]] for name in names], dtype=torch.int64))

        return (*files(train), *files(test))


@register_dataset
class SequentialCUB200(StreamingImageBenchmark):
    """Sequential CUB-200-2011: 200 bird classes in 10 class-IL tasks of 20, from the official
    layout ``root/CUB_200_2011/`` (``images.txt``, ``train_test_split.txt``,
    ``image_class_labels.txt``, ``images/<class>/*.jpg``) with its official split (5,994 / 5,794)
    and class ids (label = id - 1). The original reads preprocessed ``.npz`` files of the same
    split instead. Transforms as the original: training ``Resize((300, 300), BICUBIC)`` then
    ``RandomCrop(224)`` + flip; test ``Resize(256, BICUBIC)`` + ``CenterCrop(224)``; ImageNet's
    mean and std. The examples' ``not_aug_inputs`` are the 300x300 images."""

    name = "seq-cub200"
    default_n_tasks = 10
    n_classes_per_task = 20
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    augmentation = "random-crop-flip"
    default_batch_size = 128
    default_n_epochs = 50
    train_decode = Decode(resize=(300, 300))
    test_decode = Decode(resize=256, crop=224)
    LISTS = ("images.txt", "train_test_split.txt", "image_class_labels.txt")

    def list_files(self) -> Files:
        folder = Path(self.config.root).expanduser() / "CUB_200_2011"
        how = ("download CUB_200_2011.tgz from https://www.vision.caltech.edu/datasets/cub_200_2011/ and extract it "
               f"in {Path(self.config.root).expanduser().absolute()} (it creates CUB_200_2011/)")
        missing = [name for name in (*self.LISTS, "images") if not (folder / name).exists()]
        if missing:
            raise missing_data(self.name, folder, ", ".join(missing), how)
        images, split, labels = (self._read_list(folder / name) for name in self.LISTS)
        train: tuple[list[Path], list[int]] = ([], [])
        test: tuple[list[Path], list[int]] = ([], [])
        for image_id, relative in images.items():
            if image_id not in split or image_id not in labels:
                raise DatasetError(f"{self.name}: image id {image_id} of images.txt is missing from "
                                   f"train_test_split.txt or image_class_labels.txt in {folder.absolute()}")
            path = folder / "images" / relative
            if not path.is_file():
                raise DatasetError(f"{self.name}: {relative} listed in images.txt is missing from "
                                   f"{(folder / 'images').absolute()}; to get it: {how}")
            label = int(labels[image_id]) - 1
            if not 0 <= label < self.n_classes:
                raise DatasetError(f"{self.name}: image {image_id} has class {label + 1} in image_class_labels.txt; "
                                   f"allowed: 1..{self.n_classes}")
            chosen = train if split[image_id] == "1" else test
            chosen[0].append(path)
            chosen[1].append(label)
        return (train[0], torch.tensor(train[1], dtype=torch.int64), test[0], torch.tensor(test[1], dtype=torch.int64))

    def _read_list(self, path: Path) -> dict[int, str]:
        """``<id> <value>`` lines as {id: value}, in file order."""
        entries = {}
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split(maxsplit=1)
            if len(fields) != 2 or not fields[0].isdigit():
                raise DatasetError(f"{self.name}: corrupt line {number} of {path.absolute()}: {line[:80]!r}; "
                                   "expected '<image id> <value>'")
            entries[int(fields[0])] = fields[1].strip()
        return entries


#: image-folder's share of each class held out as test data when the root has no test/ folder.
TEST_FRACTION = 0.2


@register_dataset
class ImageFolder(StreamingImageBenchmark):
    """A user's own class-incremental benchmark: ``dataset.root`` holds ``<class>/*.jpg`` (JPEG,
    PNG, ...; classes numbered in sorted folder order), or ``train/<class>/*`` and
    ``test/<class>/*``. Without a ``test/`` folder, 20% of each class (rounded; a fixed draw,
    seed 0, whatever the run's seed) is the test data. The classes are split in ``dataset.n_tasks``
    tasks (default 5; it must divide the number of classes), or by ``dataset.base_classes`` /
    ``dataset.increment``, in ``dataset.class_order`` (class numbers or folder names, or ``permute``). Transforms as seq-imagenet-r."""

    name = "image-folder"
    default_n_tasks = 5
    n_classes_per_task = 1  # per run: the number of class folders / n_tasks
    classes_from_data = True
    mean = (0.0, 0.0, 0.0)
    std = (1.0, 1.0, 1.0)
    augmentation = "random-resized-crop-flip"
    default_batch_size = 32
    default_n_epochs = 5
    train_decode = Decode(resize=(224, 224))
    test_decode = Decode(resize=(256, 256), crop=224)

    def __init__(self, config: DatasetConfig | Mapping[str, Any] | None = None, seed: int = 0, **fields: Any) -> None:
        values = {**coerce_config({} if config is None else config), **coerce_config(fields)}
        self.folder = Path(launch_path(str(values.get("root", "data")))).expanduser()
        self.classes = self._class_names()
        order = values.get("class_order")
        if isinstance(order, (list, tuple)) and order and all(isinstance(c, str) for c in order):
            unknown = [c for c in order if c not in self.classes]
            if unknown:
                raise DatasetError(f"dataset.class_order names {', '.join(map(repr, unknown[:5]))}, not class folders "
                                   f"of {self.folder.absolute()}; allowed: {', '.join(self.classes[:20])}")
            values["class_order"] = [self.classes.index(c) for c in order]
        super().__init__(values, seed=seed)

    def _total_classes(self) -> int:
        return len(self.classes)

    def _split_folders(self) -> Optional[tuple[Path, Path]]:
        train, test = self.folder / "train", self.folder / "test"
        return (train, test) if train.is_dir() and test.is_dir() else None

    def _class_names(self) -> list[str]:
        if not self.folder.is_dir():
            raise DatasetError(f"image-folder: dataset.root={str(self.folder)!r} is not a directory; allowed: a folder of "
                               f"<class>/<image> files ({', '.join(IMAGE_SUFFIXES)}), or of train/<class>/ and test/<class>/")
        base = (self._split_folders() or (self.folder, None))[0]
        classes = sorted(entry.name for entry in base.iterdir() if entry.is_dir() and not entry.name.startswith("."))
        if not classes:
            raise DatasetError(f"image-folder: no class folder in {base.absolute()}; allowed: {base}/<class>/<image> files")
        return classes

    def list_files(self) -> Files:
        split = self._split_folders()
        if split is not None:
            train_paths, train_labels, train_classes = list_image_folder(split[0])
            test_paths, test_labels, test_classes = list_image_folder(split[1])
            if test_classes != train_classes:
                raise DatasetError(f"image-folder: test/ has classes {', '.join(test_classes[:5])}... that differ from "
                                   f"train/'s in {self.folder.absolute()}; allowed: the same class folders in both")
            return train_paths, train_labels, test_paths, test_labels
        paths, labels, classes = list_image_folder(self.folder)
        if classes != self.classes:
            raise DatasetError(f"image-folder: {self.folder.absolute()} has class folders without images "
                               f"({', '.join(sorted(set(self.classes) - set(classes))[:5])}); allowed: every class folder holds images")
        train, test = stratified_split(labels, TEST_FRACTION, 0)
        return [paths[i] for i in train.tolist()], labels[train], [paths[i] for i in test.tolist()], labels[test]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "root": str(self.folder), "classes": self.classes}
