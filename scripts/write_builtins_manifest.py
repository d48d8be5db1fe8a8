"""Write ``mammoth/config/builtins.json`` from the registries (run it after changing a built-in
backbone, dataset or model; ``tests/config/test_options.py`` fails until it is rerun).

Usage: ``python scripts/write_builtins_manifest.py``.
"""

from __future__ import annotations

from pathlib import Path

from mammoth.config import manifest
from mammoth.engine.rundir import open_nofollow


def main() -> int:
    path = Path(manifest.__file__).with_name(manifest.MANIFEST_FILE)
    with open_nofollow(path, "w", encoding="utf-8") as file:
        file.write(manifest.manifest_text(manifest.registries_manifest()))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
