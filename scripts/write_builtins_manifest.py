"""Write ``mammoth/config/builtins.json`` from the registries (run it after changing a built-in
backbone, dataset or model; ``tests/config/test_options.py`` fails until it is rerun).

Usage: ``python scripts/write_builtins_manifest.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mammoth.backbones import BACKBONES
from mammoth.config import manifest
from mammoth.datasets import DATASETS
from mammoth.files import open_nofollow
from mammoth.models import MODELS
from mammoth.models.regularizers import REGULARIZERS


def registries_manifest() -> dict[str, dict[str, Any]]:
    """The manifest of the built-ins as their registries have them now (imports torch and the built-ins)."""
    described = {}
    for group, registry in zip(manifest.GROUPS, (BACKBONES, DATASETS, MODELS, REGULARIZERS)):
        entries = [registry.get(name) for name in registry.names()]
        described[group] = {entry.name: manifest.describe_entry(group, entry) for entry in entries
                            if entry.target_path.startswith("mammoth.")}
    return described


def main() -> int:
    path = Path(manifest.__file__).with_name(manifest.MANIFEST_FILE)
    with open_nofollow(path, "w", encoding="utf-8") as file:
        file.write(manifest.manifest_text(registries_manifest()))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
