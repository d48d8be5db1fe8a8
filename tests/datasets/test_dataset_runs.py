"""The dataset settings and a streamed benchmark through whole runs: what results.json records,
and a resume refused when the streamed files changed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mammoth
from composing import compose_run
from mammoth.datasets.labels import class_order
from mammoth.errors import ConfigError, DatasetError


def test_the_settings_are_recorded_in_results(tmp_path: Path) -> None:
    cfg = compose_run(tmp_path, "dataset.validation=0.2", "dataset.class_order=permute", "dataset.noise_rate=0.1",
                      "dataset.fitting_mode=iters", "dataset.n_iters=2", "threads=1", seed=3)
    mammoth.run(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "complete"
    assert {key: results["dataset"][key] for key in ("class_order", "validation", "noise_type", "noise_rate", "n_iters")} == {
        "class_order": class_order("permute", 10, 3), "validation": 0.2, "noise_type": "symmetric", "noise_rate": 0.1,
        "n_iters": 2}


def write_folder(root: Path) -> None:
    for label in range(4):
        (root / f"c{label}").mkdir(parents=True)
        for index in range(5):
            pixels = np.random.default_rng(10 * label + index).integers(0, 256, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"c{label}" / f"{index}.jpg")


STREAMED = ("dataset=image-folder", "dataset.n_tasks=2", "dataset.n_epochs=1", "backbone=vit", "backbone.patch_size=56",
            "backbone.depth=1", "threads=1")


def test_a_streamed_benchmark_runs_and_resumes_only_on_the_same_files(tmp_path: Path) -> None:
    data = tmp_path / "images"
    write_folder(data)
    overrides = (*STREAMED, f"dataset.root={data}")
    mammoth.run(compose_run(tmp_path / "run", *overrides, "stop_after_task=1"))
    changed = data / "c0" / "0.jpg"
    contents = bytearray(changed.read_bytes())
    contents[len(contents) // 2] ^= 0xFF  # other contents, the same size
    changed.write_bytes(bytes(contents))
    with pytest.raises(ConfigError) as error:
        mammoth.run(compose_run(tmp_path / "run", *overrides, "resume=true"))
    message = str(error.value)
    assert message.startswith(f"resume=true on different data: the image-folder data under {data} changed")
    assert re.search(r": (train|test) files \(c0/0\.jpg has other contents: sha256 [0-9a-f]{12}\.\.\. then, "
                     r"[0-9a-f]{12}\.\.\. now\); resume with the data the run started on", message), message
    assert "\n" not in message and not (tmp_path / "run" / "results.json").exists()


def test_a_decompression_bomb_in_an_image_folder_stops_the_run_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "images"
    write_folder(data)
    bomb = data / "c1" / "9.png"
    Image.new("1", (14000, 14000)).save(bomb)  # 196,000,000 pixels in 24 KB
    with pytest.raises(DatasetError) as error:
        mammoth.run(compose_run(tmp_path / "run", *STREAMED, f"dataset.root={data}"))
    message = str(error.value)
    assert message.startswith(f"image {bomb} is too large to decode (") and "\n" not in message
    assert message.endswith("allowed: at most 178,956,970 pixels (Pillow's decompression-bomb limit, 2 x PIL.Image.MAX_IMAGE_PIXELS)")
    assert not (tmp_path / "run" / "results.json").exists()
