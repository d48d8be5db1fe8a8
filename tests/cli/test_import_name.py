"""The import name ``mammoth`` is also the PyPI package ``mammoth``'s (a .docx converter): when
another distribution's ``__init__.py`` replaced mammoth-cl's, or uninstalling it left mammoth-cl a
namespace package, ``python -m mammoth`` says so in one line (which distribution, what to do)."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

DOCX_INIT = '"""Convert Word documents (.docx files) to HTML"""\n\ndef convert_to_html(fileobj, **kwargs):\n    raise NotImplementedError\n'


def record_hash(text: str) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()


def fake_distribution(site: Path, name: str, version: str, init_hash: str) -> None:
    """A dist-info directory in ``site`` whose RECORD claims mammoth/__init__.py (with ``init_hash``)."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "RECORD").write_text(f"mammoth/__init__.py,{init_hash},100\nmammoth/cli.py,,\n{info.name}/METADATA,,\n")


def clashing_site(tmp_path: Path) -> Path:
    """A site directory as pip leaves it after installing mammoth-cl, then the PyPI 'mammoth' 1.8.0."""
    site = tmp_path / "site"
    shutil.copytree(REPO / "mammoth", site / "mammoth", ignore=shutil.ignore_patterns("__pycache__"))
    (site / "mammoth" / "__init__.py").write_text(DOCX_INIT)
    fake_distribution(site, "mammoth-cl", "0.1.0", record_hash("mammoth-cl's own"))
    fake_distribution(site, "mammoth", "1.8.0", record_hash(DOCX_INIT))
    return site


def python_m_mammoth(tmp_path: Path, site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("HYDRA_")}
    env["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, "-m", "mammoth", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)


def test_another_distributions_init_is_named_with_what_to_do(tmp_path: Path):
    site = clashing_site(tmp_path)
    result = python_m_mammoth(tmp_path, site, "--help")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: the import name 'mammoth' ({site / 'mammoth' / '__init__.py'}) is the distribution 'mammoth' 1.8.0's, "
        "not mammoth-cl's: installing both into one environment wrote its mammoth/__init__.py over mammoth-cl's (the "
        "PyPI package 'mammoth' is a .docx converter); allowed: pip uninstall mammoth, then pip install "
        "--force-reinstall mammoth-cl, or the two in separate environments"]
    assert result.stdout == ""


def test_a_namespace_package_left_by_an_uninstall_is_named_with_what_to_do(tmp_path: Path):
    site = clashing_site(tmp_path)
    (site / "mammoth" / "__init__.py").unlink()  # what `pip uninstall mammoth` removes
    result = python_m_mammoth(tmp_path, site, "dataset.n_epochs=1")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: the import name 'mammoth' ({site / 'mammoth'}) has no __init__.py: uninstalling another distribution "
        "that installs 'mammoth' (such as the PyPI package 'mammoth', a .docx converter) removed mammoth-cl's; allowed: "
        "pip install --force-reinstall mammoth-cl, and that other distribution in an environment of its own"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["site"]  # no run directory


def test_the_owner_is_the_distribution_whose_record_matches_the_file(tmp_path: Path, monkeypatch):
    from mammoth.app.import_name import import_name_problem, owning_distributions

    assert import_name_problem() is None  # this checkout's own package
    site = tmp_path / "site"
    (site / "mammoth").mkdir(parents=True)
    init = site / "mammoth" / "__init__.py"
    init.write_text(DOCX_INIT)
    fake_distribution(site, "mammoth-cl", "0.1.0", record_hash("mammoth-cl's own"))
    fake_distribution(site, "aaa-stale", "0.1", record_hash("an older file"))
    fake_distribution(site, "mammoth", "1.8.0", record_hash(DOCX_INIT))
    monkeypatch.syspath_prepend(str(site))
    assert owning_distributions(init) == [("mammoth", "1.8.0"), ("aaa-stale", "0.1")]
