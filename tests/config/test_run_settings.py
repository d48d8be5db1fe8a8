"""The one list of run-control settings, and what reads it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

import mammoth
from mammoth.config.run_settings import RUN_CONTROL_KEYS, RunConfig, is_run_control_override, override_key
from mammoth.reporting.sweep_tables import NOT_A_CONFIGURATION


def test_the_run_control_keys_are_the_marked_run_settings():
    assert RUN_CONTROL_KEYS == ("resume", "stop_after_task", "output_dir", "threads", "compile", "optimized_metric", "logger")
    assert set(RUN_CONTROL_KEYS) < {field.name for field in dataclasses.fields(RunConfig)}


def test_the_primary_config_leaves_them_out_of_override_dirname():
    primary = yaml.safe_load((Path(mammoth.__file__).parent / "app" / "conf" / "config.yaml").read_text())
    assert tuple(primary["hydra"]["job"]["config"]["override_dirname"]["exclude_keys"]) == RUN_CONTROL_KEYS


def test_a_summary_groups_jobs_regardless_of_them_and_the_seed():
    assert NOT_A_CONFIGURATION == ("seed", *RUN_CONTROL_KEYS)


def test_an_override_is_run_control_by_its_key():
    assert override_key("++threads=2") == "threads"
    assert [is_run_control_override(text) for text in ("threads=2", "~logger", "logger.csv.flush=1", "seed=3", "model=er")] \
        == [True, True, True, False, False]
