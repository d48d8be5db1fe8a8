"""The dataset config schema, the task container and the ``ContinualDataset`` base class.

A benchmark is a subclass of :class:`ContinualDataset` that declares its constants as class
attributes and implements :meth:`ContinualDataset.load_source` (tensors held in memory) or, for a
benchmark streamed from disk (``streaming = True``), :meth:`ContinualDataset.load_sources`
(DataSources that decode per batch). Everything else (the dataset settings on labels, task
splits, per-task transformations, augmentation, normalisation) lives here, the same for both.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, List, Optional

import torch
from omegaconf import MISSING, DictConfig, OmegaConf

from mammoth.config.stream import DEFAULT_BLURRY_FRACTION, blurry_leaks, check_stream
from mammoth.config.task_split import task_sizes
from mammoth.config.user_paths import launch_path
from mammoth.config.value_checks import check_positive_int
from mammoth.datasets import labels as label_settings, transforms
from mammoth.datasets.image_files import files_fingerprint
from mammoth.datasets.source import DataSource, InMemorySource, RelabeledSource, concat_sources
from mammoth.errors import DatasetError

#: ``augmentation`` values: what :meth:`ContinualDataset.train_transform` does before normalising.
AUGMENTATIONS = (None, "crop-flip", "random-resized-crop-flip", "random-crop-flip")

CROP_PADDING = 4


@dataclass
class DatasetConfig:
    """Typed Hydra schema of the ``dataset`` config group.

    ``n_tasks=None`` means the benchmark's default; a class-IL benchmark accepts any number of
    tasks that divides its classes evenly, a domain-IL one any number. ``base_classes`` /
    ``increment`` (class-IL): a first task of ``base_classes`` classes, then tasks of ``increment``
    (PyCIL's ``init_cls`` / ``increment``; :mod:`mammoth.config.task_split` has the rules). ``num_workers``: processes
    reading batches (0: the main process). ``validation``: the fraction of each class's training
    data held out and evaluated on instead of the test set. ``class_order``: ``permute`` (drawn
    from the seed) or the list of classes in the order they are trained. ``noise_type`` /
    ``noise_rate``: label noise on the training data. See :mod:`mammoth.datasets.labels`.
    ``fitting_mode``: ``epochs`` (``n_epochs`` per task) or ``iters`` (``n_iters`` steps per task).
    ``mean`` / ``std`` / ``augmentation``: the benchmark's normalisation and training augmentation,
    replaced (null: the benchmark's own).
    """

    name: str = MISSING
    root: str = "data"
    download: bool = False
    batch_size: int = MISSING
    n_epochs: int = MISSING
    n_tasks: Optional[int] = None
    #: The classes of the first task and of each later one (tasks of unequal size); null: n_tasks.
    base_classes: Optional[int] = None
    increment: Optional[int] = None
    num_workers: int = 0
    validation: Optional[float] = None
    class_order: Any = None
    noise_type: str = "symmetric"
    noise_rate: float = 0.0
    fitting_mode: str = "epochs"
    n_iters: Optional[int] = None
    #: The normalisation of the inputs, one value per channel (per leading feature); null: the
    #: benchmark's. The original's per-method dataset configs set it (l2p: mean 0, std 1).
    mean: Optional[List[float]] = None
    std: Optional[List[float]] = None
    #: The training augmentation: null = the benchmark's, or none, crop-flip,
    #: random-resized-crop-flip, random-crop-flip (see ContinualDataset.train_transform).
    augmentation: Optional[str] = None
    #: The online setting (docs/online.md, :mod:`mammoth.config.stream`): ``tasks`` (epochs per task)
    #: or ``online`` (one pass over the stream of segments); the other four need ``online``.
    stream: str = "tasks"
    boundaries: str = "sharp"
    blurry_fraction: float = DEFAULT_BLURRY_FRACTION
    task_free: bool = False
    eval_every: Optional[int] = None


@dataclass(frozen=True)
class PreparedLabels:
    """The dataset settings applied to labels and indices (see :meth:`ContinualDataset.prepared`):
    ``train_labels`` / ``eval_labels`` label every example of the training / evaluation source
    (the test set, or the training set when a validation split is held out), ``train_indices`` /
    ``eval_indices`` select the examples used, ``test_labels`` label the test set (what a
    validation run scores once at the end), ``order`` the class order (None: natural)."""

    train_labels: torch.Tensor
    train_indices: torch.Tensor
    eval_labels: torch.Tensor
    eval_indices: torch.Tensor
    eval_on_train: bool
    order: Optional[list[int]]
    test_labels: torch.Tensor


def random_crop_flip(
    x: torch.Tensor, padding: int = CROP_PADDING, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Randomly crop every image of the batch ``x`` (N, C, H, W) to H x W after zero padding
    ``padding`` pixels on each side, then flip it horizontally with probability 0.5.

    The whole batch is processed at once by tensor indexing. The random numbers are drawn on CPU
    from ``generator`` (the global RNG when None), in this order: top offsets (N,), left offsets
    (N,), flip draws (N,); they are then moved to ``x.device``.
    """
    if x.ndim != 4:
        raise DatasetError(f"crop-flip expects a batch of shape (N, C, H, W), got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    rows = top[:, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = left[:, None] + torch.arange(w, device=x.device)  # (N, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch_index = torch.arange(n, device=x.device)[:, None, None, None]
    channel_index = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch_index, channel_index, rows[:, None, :, None], cols[:, None, None, :]]


def coerce_config(config: DatasetConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Return ``config`` as a plain dict; MISSING values and absent keys are left out."""
    if isinstance(config, DatasetConfig):
        values = dataclasses.asdict(config)
    elif isinstance(config, DictConfig):
        values = OmegaConf.to_container(config, resolve=True, throw_on_missing=False)
    elif isinstance(config, Mapping):
        values = dict(config)
    else:
        raise DatasetError(
            f"dataset config of type {type(config).__name__} is not supported; expected a DatasetConfig or a mapping"
        )
    allowed = [f.name for f in dataclasses.fields(DatasetConfig)]
    unknown = sorted(str(key) for key in values if key not in allowed)
    if unknown:
        raise DatasetError(f"unknown dataset config key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    return {key: value for key, value in values.items() if value != MISSING}


def tensor_fingerprint(tensor: torch.Tensor) -> dict[str, Any]:
    """``{"shape": [...], "sha256": HEX}`` of a CPU tensor's contents (its shape and dtype hashed too)."""
    contiguous = tensor.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{contiguous.dtype} {tuple(contiguous.shape)}\n".encode())
    if contiguous.numel():
        digest.update(memoryview(contiguous.reshape(-1).view(torch.uint8).numpy()).cast("B"))
    return {"shape": list(contiguous.shape), "sha256": digest.hexdigest()}


def missing_files_error(
    dataset: str, missing: list[str], expected: list[str], directory: Path, how: str
) -> DatasetError:
    """A DatasetError for files of ``dataset`` that are absent from ``directory``."""
    also = "" if missing == expected else f" (expected: {', '.join(expected)})"
    return DatasetError(f"{dataset}: missing {', '.join(missing)} in {directory.absolute()}{also}\nTo get them: {how}")


def download_and_extract_privately(url: str, root: str | Path, folder: str, **options: Any) -> None:
    """torchvision's ``download_and_extract_archive(url, ..., **options)`` into a temporary
    directory of its own under ``root``, then ``folder`` (what the archive creates) moved into
    ``root``: in one rename when ``root/folder`` does not exist, else file by file for the files it
    lacks (never overwriting one). Runs downloading at once never write the same file, and a
    reader never sees a half-extracted file. The temporary directory is always removed."""
    from torchvision.datasets.utils import download_and_extract_archive  # lazy: torchvision (heavy), kept off import mammoth.datasets

    Path(root).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{folder}.", suffix=".tmp"))
    try:
        download_and_extract_archive(url, str(staging), **options)
        _move_missing(staging / folder, Path(root) / folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_missing(source: Path, target: Path) -> None:
    """Move ``source`` to ``target`` if it is not there; else move, recursively, what ``target`` lacks."""
    if not source.is_dir():
        try:
            os.link(source, target, follow_symlinks=False)  # whole or absent, and never over an existing file
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            if not os.path.lexists(target):
                os.replace(source, target)
        return
    try:
        os.rename(source, target)  # a directory: in one step unless target is a non-empty directory or a file
        return
    except OSError as error:
        if error.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
            raise
    if target.is_dir() and not target.is_symlink():
        for entry in source.iterdir():
            _move_missing(entry, target / entry.name)


class ContinualDataset:
    """Base class of the continual-learning benchmarks.

    Subclasses declare the class attributes below and implement :meth:`load_source`; domain-IL
    benchmarks also override :meth:`apply_task_transform`.
    """

    name: ClassVar[str]
    setting: ClassVar[str]  # "class-il" or "domain-il"
    default_n_tasks: ClassVar[int]
    # The classes of each task when the tasks are of equal size (an instance with tasks of unequal
    # size has None: task_classes(t) is what every task's classes are read from).
    n_classes_per_task: ClassVar[int]
    # Whether the number of classes is counted in the files (image-folder), not default_n_tasks x
    # n_classes_per_task: the pre-flight then cannot check the tasks' classes before the run.
    classes_from_data: ClassVar[bool] = False
    input_shape: ClassVar[tuple[int, ...]]  # (C, H, W) for images; any shape for float features
    mean: ClassVar[Optional[tuple[float, ...]]]  # None (with std None): no normalisation, inputs stay in [0, 1]
    std: ClassVar[Optional[tuple[float, ...]]]
    augmentation: ClassVar[Optional[str]] = None  # one of AUGMENTATIONS
    # The shape load_source's images have when it differs from input_shape (seq-cifar100-224: 32x32
    # images, resized to 224 by the transforms); None: input_shape.
    source_shape: ClassVar[Optional[tuple[int, ...]]] = None
    # RandomResizedCrop's scale for augmentation="random-resized-crop-flip".
    crop_scale: ClassVar[tuple[float, float]] = (0.08, 1.0)
    # Asymmetric label noise this benchmark defines (the original's): None, "cifar10" or "cifar100".
    asymmetric_noise: ClassVar[Optional[str]] = None
    # Whether load_sources streams from disk (no load_source tensors).
    streaming: ClassVar[bool] = False
    default_backbone: ClassVar[str]
    default_batch_size: ClassVar[int]
    default_n_epochs: ClassVar[int]
    # The learning-rate milestones a model uses when its lr_milestones is None (the original's dataset default).
    default_lr_milestones: ClassVar[tuple[int, ...]] = ()

    def __init__(self, config: DatasetConfig | Mapping[str, Any] | None = None, seed: int = 0, **fields: Any) -> None:
        """Validate ``config`` and the ``fields`` given as keywords (``root=...``, what Hydra's
        ``instantiate`` passes); absent batch_size / n_epochs take the benchmark's defaults.

        The source data is not read here but on first use (:meth:`task_source`, :meth:`sources`).
        """
        values = {**coerce_config({} if config is None else config), **coerce_config(fields)}
        name = values.get("name", self.name)
        if name != self.name:
            raise DatasetError(f"dataset.name={name!r} does not match the benchmark {self.name!r} being built")
        n_tasks, base_classes, increment = (values.get(key) for key in ("n_tasks", "base_classes", "increment"))
        self.task_sizes = self._check_tasks(n_tasks, base_classes, increment)
        noise = label_settings.check_noise(values.get("noise_type", "symmetric"), values.get("noise_rate", 0.0),
                                           self.asymmetric_noise, self.name)
        self.config = DatasetConfig(
            name=self.name,
            root=launch_path(str(values.get("root", "data"))),  # hydra.job.chdir=true: still where you run
            download=bool(values.get("download", False)),
            batch_size=check_positive_int("dataset.batch_size", values.get("batch_size", self.default_batch_size), DatasetError),
            n_epochs=check_positive_int("dataset.n_epochs", values.get("n_epochs", self.default_n_epochs), DatasetError),
            n_tasks=n_tasks,
            base_classes=base_classes,
            increment=increment,
            num_workers=self._check_num_workers(values.get("num_workers", 0)),
            validation=label_settings.check_validation(values.get("validation")),
            class_order=label_settings.check_class_order(values.get("class_order"), self._total_classes()),
            noise_type=noise[0],
            noise_rate=noise[1],
            **self._check_fitting(values.get("fitting_mode", "epochs"), values.get("n_iters")),
            **self._check_normalization(values.get("mean"), values.get("std")),
            augmentation=self._check_augmentation(values.get("augmentation")),
            **check_stream(self.name, values, self.default_n_epochs, DatasetError),
        )
        if self.config.stream == "online":  # one pass: the benchmark's default n_epochs is not used
            self.config = dataclasses.replace(self.config, n_epochs=1)
        if self.config.mean is not None:  # the instance's normalisation replaces the benchmark's
            self.mean, self.std = tuple(self.config.mean), tuple(self.config.std)
        if self.config.augmentation is not None:
            self.augmentation = None if self.config.augmentation == "none" else self.config.augmentation
        self.seed = int(seed)
        self._source: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._sources: tuple[DataSource, DataSource] | None = None
        self._prepared: PreparedLabels | None = None
        self._fingerprint: dict[str, dict[str, Any]] | None = None

    def _check_normalization(self, mean: Any, std: Any) -> dict[str, Any]:
        """``mean`` and ``std`` as lists of floats, both given or both null: one value per channel
        (per leading feature), every std > 0."""
        if mean is None and std is None:
            return {"mean": None, "std": None}
        channels = self.input_shape[0]
        for key, values in (("mean", mean), ("std", std)):
            if (values is None or isinstance(values, (str, bytes)) or not hasattr(values, "__len__")
                    or len(values) != channels
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
                raise DatasetError(
                    f"dataset.{key}={values!r} is not allowed for {self.name}; allowed: null (the benchmark's) or "
                    f"{channels} number(s), one per channel, with dataset.mean and dataset.std both set"
                )
        if min(std) <= 0:
            raise DatasetError(f"dataset.std={list(std)!r} is not allowed; allowed: numbers > 0")
        return {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}

    def _check_augmentation(self, augmentation: Any) -> Optional[str]:
        """``augmentation`` if it names one (or ``none``); null keeps the benchmark's."""
        allowed = ["none", *(name for name in AUGMENTATIONS if name is not None)]
        if augmentation is not None and augmentation not in allowed:
            raise DatasetError(
                f"dataset.augmentation={augmentation!r} is not allowed; allowed: null (the benchmark's), {', '.join(allowed)}"
            )
        if augmentation not in (None, "none") and not self._is_image():
            raise DatasetError(f"dataset.augmentation={augmentation} is not allowed for {self.name}: its examples "
                               "are not images; allowed: null, none")
        return augmentation

    def _total_classes(self) -> int:
        """The number of classes of the benchmark, whatever its number of tasks."""
        total = type(self).benchmark_classes()
        assert total is not None, f"{type(self).__name__} counts its classes in its files: it overrides _total_classes"
        return total

    @staticmethod
    def _check_fitting(mode: Any, n_iters: Any) -> dict[str, Any]:
        """``fitting_mode`` and ``n_iters``: ``iters`` needs ``n_iters`` >= 1, ``epochs`` takes none."""
        if mode not in ("epochs", "iters"):
            raise DatasetError(f"dataset.fitting_mode={mode!r} is not allowed; allowed: epochs, iters")
        if mode == "iters":
            if n_iters is None:
                raise DatasetError("dataset.n_iters=None is not allowed with dataset.fitting_mode=iters; "
                                   "allowed: an integer >= 1 (training steps per task)")
            check_positive_int("dataset.n_iters", n_iters, DatasetError)
        elif n_iters is not None:
            raise DatasetError(f"dataset.n_iters={n_iters!r} is not allowed with dataset.fitting_mode=epochs; "
                               "allowed: null, or dataset.fitting_mode=iters")
        return {"fitting_mode": mode, "n_iters": n_iters}

    @staticmethod
    def _check_num_workers(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise DatasetError(f"dataset.num_workers={value!r} is not allowed; allowed: an integer >= 0 "
                               "(0: batches are read in the main process)")
        return value

    def _check_tasks(self, n_tasks: Any, base_classes: Any, increment: Any) -> tuple[int, ...]:
        """The classes of each task (:func:`mammoth.config.task_split.task_sizes`: ``n_tasks`` equal
        tasks, or ``base_classes`` then ``increment`` per task); sets this run's
        ``n_classes_per_task`` (None when the tasks differ in size)."""
        sizes = task_sizes(self.name, self.setting, self._total_classes(), self.default_n_tasks,
                           n_tasks, base_classes, increment, DatasetError)
        assert sizes is not None  # the classes are known here
        if self.setting == "class-il":
            per_task = sizes[0] if len(set(sizes)) == 1 else None
            if per_task != self.n_classes_per_task:
                self.n_classes_per_task = per_task
        return sizes

    @classmethod
    def benchmark_classes(cls) -> Optional[int]:
        """The number of classes of the benchmark before any file is read; None for one that counts
        them in its files (``classes_from_data``)."""
        if cls.classes_from_data:
            return None
        return cls.default_n_tasks * cls.n_classes_per_task if cls.setting == "class-il" else cls.n_classes_per_task

    @property
    def uneven_tasks(self) -> bool:
        """Whether the tasks have different numbers of classes (``dataset.base_classes`` / ``increment``)."""
        return len(set(self.task_sizes)) > 1

    @property
    def n_tasks(self) -> int:
        """Number of tasks of this run."""
        return len(self.task_sizes)

    @property
    def n_classes(self) -> int:
        """Total number of classes the model must output."""
        if self.setting == "class-il":
            return sum(self.task_sizes)
        return self.n_classes_per_task

    def _check_task(self, task: int) -> int:
        """Return ``task`` if it is a valid task index."""
        if isinstance(task, bool) or not isinstance(task, int) or not 0 <= task < self.n_tasks:
            raise DatasetError(f"task {task!r} is out of range for {self.name}; allowed: 0..{self.n_tasks - 1}")
        return task

    def task_classes(self, task: int) -> range:
        """Classes of ``task``: its own block of classes (class-IL; blocks of unequal size with
        ``dataset.base_classes`` / ``increment``) or all classes (domain-IL)."""
        self._check_task(task)
        if self.setting == "class-il":
            start = sum(self.task_sizes[:task])
            return range(start, start + self.task_sizes[task])
        return range(self.n_classes_per_task)

    def load_source(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Read the whole benchmark: ``(train_x, train_y, test_x, test_y)``, x uint8 images (N, C, H, W)
        or float features ``(N, *input_shape)``, y int64."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_source()")

    def load_sources(self) -> tuple[DataSource, DataSource]:
        """The whole benchmark as ``(train, test)`` DataSources, labels in ``0..n_classes-1``.
        In-memory benchmarks get :class:`InMemorySource` views of :meth:`source`; a streaming
        benchmark (``streaming = True``) overrides this to read files per batch."""
        train_x, train_y, test_x, test_y = self.source()
        return InMemorySource(train_x, train_y), InMemorySource(test_x, test_y)

    def evaluation_view(self, train: DataSource) -> DataSource:
        """The training source read as evaluation data (what a validation split evaluates on);
        a streaming benchmark returns its training files with the test decoding."""
        return train

    def sources(self) -> tuple[DataSource, DataSource]:
        """``(train, test)`` of :meth:`load_sources`, read on first use and cached."""
        if self._sources is None:
            train, test = self.load_sources()
            for split, source in (("train", train), ("test", test)):
                labels = source.labels
                if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self._n_labels()):
                    raise DatasetError(f"{self.name} {split} labels span {int(labels.min())}..{int(labels.max())}; "
                                       f"expected 0..{self._n_labels() - 1} (the files are corrupt)")
            self._sources = (train, test)
        return self._sources

    def source(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The source data of an in-memory benchmark, read on first use and cached."""
        if self.streaming:
            raise DatasetError(f"{self.name} streams its images from disk and holds no tensors; "
                               "allowed: task_source(t) / test_source(t) / sources()")
        if self._source is None:
            self._source = self._check_source(self.load_source())
        return self._source

    def train_labels(self) -> torch.Tensor:
        """The labels of the whole training set as read (before any dataset setting)."""
        return self.sources()[0].labels

    def fingerprint(self) -> dict[str, dict[str, Any]]:
        """What the source data is, for a checkpoint to record. In memory: for each of ``train
        images``, ``train labels``, ``test images`` and ``test labels``, the tensor's shape and the
        sha256 of its bytes (the decoded uint8 images and int64 labels of :meth:`source`, before
        any task transformation; about 0.2 s for CIFAR-100's 184 MB of images). Streaming: for
        ``train files`` and ``test files``, their count, one row (path relative to
        ``dataset.root``, label, sha256 of the file's bytes) per file and the sha256 over the rows
        (every file is read once, no image is decoded; see :meth:`stream_fingerprint`). Computed once."""
        if self._fingerprint is None:
            if self.streaming:
                self._fingerprint = self.stream_fingerprint()
            else:
                names = ("train images", "train labels", "test images", "test labels")
                self._fingerprint = {name: tensor_fingerprint(tensor) for name, tensor in zip(names, self.source())}
        return self._fingerprint

    def stream_fingerprint(self) -> dict[str, dict[str, Any]]:
        """The fingerprint of a streaming benchmark whose sources are ImageFileSources."""
        train, test = self.sources()
        return {f"{split} files": files_fingerprint(self.config.root, source.paths, source.labels)
                for split, source in (("train", train), ("test", test))}

    def _n_labels(self) -> int:
        return self.n_classes

    def prepared(self) -> PreparedLabels:
        """The dataset settings applied to the labels, computed once, in the original's order:
        the class order relabels train and test data, then the validation split holds out part of
        every class of the training data (evaluated on instead of the test set), then label noise
        changes the remaining training labels."""
        if self._prepared is None:
            train, test = self.sources()
            order = label_settings.class_order(self.config.class_order, self.n_classes, self.seed)
            mapping = None if order is None else label_settings.label_mapping(order)
            train_labels = train.labels if mapping is None else mapping[train.labels]
            test_labels = test.labels if mapping is None else mapping[test.labels]
            train_indices = torch.arange(len(train_labels))
            eval_labels, eval_indices = test_labels, torch.arange(len(test_labels))
            if self.config.validation is not None:
                train_indices, eval_indices = label_settings.validation_split(train_labels, self.config.validation, self.seed)
                eval_labels = train_labels
            if self.config.noise_rate > 0:
                noisy = label_settings.noisy_labels(train_labels[train_indices], self.config.noise_type,
                                                    self.config.noise_rate, self.seed, self.asymmetric_noise)
                train_labels = train_labels.clone()
                train_labels[train_indices] = noisy
            n_labels = self._n_labels()
            self._check_every_task_has_examples("train", train_labels[train_indices], n_labels)
            self._check_every_task_has_examples("validation" if self.config.validation else "test",
                                                eval_labels[eval_indices], n_labels)
            self._prepared = PreparedLabels(train_labels, train_indices, eval_labels, eval_indices,
                                            self.config.validation is not None, order, test_labels)
        return self._prepared

    def _check_source(
        self, source: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Check the shapes, dtypes and labels :meth:`load_source` returned."""
        train_x, train_y, test_x, test_y = source
        n_labels = self._n_labels()
        shape = self.source_shape or self.input_shape
        for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
            if not (x.dtype == torch.uint8 or x.is_floating_point()) or tuple(x.shape[1:]) != tuple(shape):
                raise DatasetError(
                    f"{self.name} {split} images have dtype {x.dtype} and shape {tuple(x.shape)}; "
                    f"expected uint8 images or float features (N, {', '.join(map(str, shape))})"
                )
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise DatasetError(
                    f"{self.name} {split} labels have dtype {y.dtype} and shape {tuple(y.shape)}; "
                    f"expected int64 ({x.shape[0]},)"
                )
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= n_labels):
                raise DatasetError(
                    f"{self.name} {split} labels span {int(y.min())}..{int(y.max())}; expected 0..{n_labels - 1} "
                    "(the files are corrupt)"
                )
            self._check_every_task_has_examples(split, y, n_labels)
        return train_x, train_y, test_x, test_y

    def _check_every_task_has_examples(self, split: str, y: torch.Tensor, n_labels: int) -> None:
        """Refuse data that leaves a task without examples (fewer classes than the tasks need)."""
        per_class = torch.bincount(y, minlength=n_labels)
        per_task = per_class.split(list(self.task_sizes)) if self.setting == "class-il" else (per_class,)
        empty = [task for task, counts in enumerate(per_task) if int(counts.sum()) == 0]
        if empty:
            present = int((per_class > 0).sum())
            tasks = (f"{self.n_tasks} tasks x {self.n_classes_per_task} classes" if not self.uneven_tasks
                     else f"{self.n_tasks} tasks of {', '.join(map(str, self.task_sizes))} classes")
            raise DatasetError(
                f"{self.name} has no {split} examples for task {empty[0] + 1} of {self.n_tasks}: its {split} data has "
                f"{present} class(es), and {tasks} need {n_labels}"
            )

    def apply_task_transform(self, task: int, x: torch.Tensor) -> torch.Tensor:
        """Domain-IL: the input transformation of ``task`` applied to a whole uint8 tensor (identity here)."""
        return x

    def task_source(self, task: int) -> DataSource:
        """The training data of ``task``, served batch by batch (what the harness trains on)."""
        return self._split_source(task, "train")

    def test_source(self, task: int) -> DataSource:
        """The evaluation data of ``task`` (its test data, or its validation split with
        ``dataset.validation``), served batch by batch (what the harness evaluates on)."""
        return self._split_source(task, "eval")

    def final_test_source(self, task: int) -> DataSource:
        """The test data of ``task``, also when ``dataset.validation`` evaluates on a validation
        split instead (what such a run scores once, after the last task)."""
        return self._split_source(task, "test")

    def _task_indices(self, task: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(labels of every example of the ``split``'s source, the positions of ``task``'s examples);
        ``split`` is ``train``, ``eval`` (what the run evaluates on) or ``test``."""
        self._check_task(task)
        prepared = self.prepared()
        labels, indices = {
            "train": (prepared.train_labels, prepared.train_indices),
            "eval": (prepared.eval_labels, prepared.eval_indices),
            "test": (prepared.test_labels, torch.arange(len(prepared.test_labels))),
        }[split]
        if self.setting == "class-il":
            classes = self.task_classes(task)
            chosen = labels.index_select(0, indices)
            indices = indices[(chosen >= classes.start) & (chosen < classes.stop)]
        return labels, indices

    def _split_source(self, task: int, split: str) -> DataSource:
        """The ``split`` data of ``task`` (see :meth:`_task_indices`): a view of the source
        (class-IL), or the task's transformation of it (domain-IL), with the prepared labels."""
        labels, indices = self._task_indices(task, split)
        train_source, test_source = self.sources()
        if split == "train":
            base = train_source
        elif split == "eval" and self.prepared().eval_on_train:
            base = self.evaluation_view(train_source)
        else:
            base = test_source
        if self.setting == "domain-il":
            base = InMemorySource(self.apply_task_transform(task, base.x), base.y)  # domain-IL benchmarks are in memory
        if labels is not base.labels and not torch.equal(labels, base.labels):
            base = self._relabeled(base, labels)
        if self.setting == "domain-il" and len(indices) == len(base) and torch.equal(indices, torch.arange(len(base))):
            return base
        return base.subset(indices)

    def _relabeled(self, base: DataSource, labels: torch.Tensor) -> DataSource:
        """``base`` with ``labels``: one wrapper per source of :meth:`sources` and labels (so the tasks'
        subsets share a parent, which joint's concatenation uses); a new one for a domain-IL task's
        transformed data (made per call, never cached)."""
        if not any(base is source for source in self.sources()):
            return RelabeledSource(base, labels)
        cache = self.__dict__.setdefault("_relabeled_cache", {})
        key = (id(base), id(labels))
        if key not in cache:
            cache[key] = (base, labels, RelabeledSource(base, labels))
        return cache[key][2]

    def _is_image(self) -> bool:
        """Whether the examples are images (N, C, H, W), which crop-flip and per-channel statistics need."""
        return len(self.input_shape) == 3

    def _check_batch(self, x: torch.Tensor) -> None:
        """Check that ``x`` is a float batch of this benchmark's examples: (N, C, H, W) with its
        channel count for images, (N, *input_shape) for features."""
        if self._is_image():
            if x.ndim != 4 or x.shape[1] != self.input_shape[0] or not x.is_floating_point():
                raise DatasetError(
                    f"{self.name} expects a float batch of shape (N, {self.input_shape[0]}, H, W), "
                    f"got dtype {x.dtype} and shape {tuple(x.shape)}"
                )
        elif tuple(x.shape[1:]) != tuple(self.input_shape) or not x.is_floating_point():
            raise DatasetError(
                f"{self.name} expects a float batch of shape (N, {', '.join(map(str, self.input_shape))}), "
                f"got dtype {x.dtype} and shape {tuple(x.shape)}"
            )

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Subtract the per-channel mean and divide by the per-channel std, on ``x``'s device
        (``x`` itself when the benchmark has no normalisation, ``mean is None``, or mean 0 and
        std 1: an identity)."""
        if self.mean is None or (all(value == 0 for value in self.mean) and all(value == 1 for value in self.std)):
            return x
        key = (x.dtype, x.device)
        cache = self.__dict__.setdefault("_normalization", {})  # (dtype, device) -> (mean, std)
        if key not in cache:
            shape = (1, -1, *([1] * (len(self.input_shape) - 1)))  # per channel (images) or per leading feature
            cache[key] = tuple(torch.tensor(values, dtype=x.dtype, device=x.device).view(shape)
                               for values in (self.mean, self.std))
        mean, std = cache[key]
        return (x - mean) / std

    def draw_augmentation(self, n: int, generator: torch.Generator | None) -> Optional[transforms.CropDraws]:
        """The random numbers of ``n`` examples' training augmentation when it is a crop and a flip
        (``random-resized-crop-flip``, ``random-crop-flip``: :func:`~mammoth.datasets.transforms.draw_crops`
        to the input size, from ``generator``); None, drawing nothing, for any other augmentation.
        The context draws them before the batch is read so that a source of files applies them
        while it decodes (:meth:`DataSource.read_augmented`)."""
        if not self._is_image() or self.augmentation not in transforms.CROP_AUGMENTATIONS:
            return None
        return transforms.draw_crops(self.augmentation, n, tuple(self.input_shape[1:]), generator, scale=self.crop_scale)

    def train_transform(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training transform of a float batch on any device: augmentation (if any; images only,
        random numbers from ``generator``), then normalisation. ``crop-flip``: pad 4, crop, flip;
        ``random-resized-crop-flip``: the original's ``RandomResizedCrop(input size, crop_scale,
        BICUBIC)`` + flip; ``random-crop-flip``: ``RandomCrop(input size)`` + flip (see
        :mod:`mammoth.datasets.transforms`; the draws of :meth:`draw_augmentation`)."""
        self._check_batch(x)
        if self._is_image() and self.augmentation == "crop-flip":
            x = random_crop_flip(x, CROP_PADDING, generator)
        else:
            draws = self.draw_augmentation(len(x), generator)
            if draws is not None:
                x = draws.apply(x)
        return self.normalize(x)

    def test_transform(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluation transform of a float batch in [0, 1]: images of another size than the input
        are resized to it (bicubic, as the original's ``Resize``), then normalised."""
        self._check_batch(x)
        if self._is_image() and tuple(x.shape[-2:]) != tuple(self.input_shape[1:]):
            x = transforms.resize(x, tuple(self.input_shape[1:]))
        return self.normalize(x)

    def describe(self) -> dict[str, Any]:
        """A summary for the datasets table (docs/datasets.md) and the results file (plain, YAML/JSON-serialisable values)."""
        return {
            "name": self.name,
            "setting": self.setting,
            "n_tasks": self.n_tasks,
            "n_classes_per_task": self.n_classes_per_task,
            "n_classes": self.n_classes,
            "input_shape": list(self.input_shape),
            "augmentation": self.augmentation,
            "default_backbone": self.default_backbone,
            **self._describe_settings(),
        }

    def _describe_settings(self) -> dict[str, Any]:
        """The dataset settings a run changed from the defaults, as recorded in results.json:
        ``class_order`` (the classes in training order), ``validation``, ``noise_type`` and
        ``noise_rate``, ``num_workers``, ``streaming`` for benchmarks read from disk, and with
        ``base_classes`` / ``increment`` those two and ``classes_per_task`` (each task's number of classes)."""
        settings: dict[str, Any] = {}
        if self.streaming:
            settings["streaming"] = True
        if self.config.base_classes is not None or self.config.increment is not None:
            settings.update(base_classes=self.task_sizes[0], increment=self.config.increment,
                            classes_per_task=list(self.task_sizes))
        if self.config.class_order is not None:
            settings["class_order"] = label_settings.class_order(self.config.class_order, self.n_classes, self.seed)
        if self.config.validation is not None:
            settings["validation"] = self.config.validation
        if self.config.noise_rate > 0:
            settings["noise_type"], settings["noise_rate"] = self.config.noise_type, self.config.noise_rate
        if self.config.num_workers:
            settings["num_workers"] = self.config.num_workers
        if self.config.fitting_mode == "iters":
            settings["fitting_mode"], settings["n_iters"] = "iters", self.config.n_iters
        if self.online:
            settings.update(stream="online", boundaries=self.config.boundaries, task_free=self.config.task_free,
                            eval_every=self.config.eval_every)
            if self.config.boundaries == "blurry":
                settings["blurry_fraction"] = self.config.blurry_fraction
        return settings

    @property
    def online(self) -> bool:
        """Whether the run is one pass over a stream (``dataset.stream=online``)."""
        return self.config.stream == "online"

    def stream_segments(self) -> list[DataSource]:
        """The training data of each segment of the stream (docs/online.md): with
        ``boundaries=sharp`` task ``t``'s data; with ``blurry``, :func:`~mammoth.config.stream.blurry_leaks`
        examples of each task, drawn from a generator seeded with the run's seed (so a resumed run
        builds the same segments, whatever the training drew), moved to the neighbouring segment
        and appended after its own. The harness shuffles each segment with the run's generator."""
        sources = [self.task_source(task) for task in range(self.n_tasks)]
        if self.config.boundaries == "sharp":
            return sources
        generator = torch.Generator().manual_seed(self.seed)
        kept: list[DataSource] = []
        moved: list[list[DataSource]] = [[] for _ in sources]
        for source, (count, segment) in zip(sources, blurry_leaks([len(s) for s in sources], self.config.blurry_fraction)):
            order = torch.randperm(len(source), generator=generator)
            leaked, own = order[:count].sort().values, order[count:].sort().values
            kept.append(source.subset(own))
            moved[segment].append(source.subset(leaked))
        return [concat_sources([own, *extra]) for own, extra in zip(kept, moved)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, n_tasks={self.n_tasks}, seed={self.seed})"
