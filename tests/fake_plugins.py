"""An installed ``mammoth.plugins`` distribution, written by the tests that need one."""

from __future__ import annotations

from pathlib import Path

#: A plugin module that registers the backbone ``plug-net`` through the public API at import time,
#: as the README's plugins do.
PLUG_NET = '''
from torch import nn

from mammoth import MammothBackbone, register_backbone


@register_backbone("plug-net")
class PlugNet(MammothBackbone):
    def __init__(self, num_classes: int, input_shape: tuple, hidden: int = 7):
        super().__init__()
        self.stages = nn.ModuleList([nn.Sequential(nn.Flatten(), nn.LazyLinear(hidden))])
        self.num_features, self.num_classes = hidden, num_classes
        self.classifier = nn.Linear(hidden, num_classes)
'''


def install_plugin(root: Path, source: str = PLUG_NET, name: str = "plugpkg") -> None:
    """A distribution in ``root`` (a sys.path entry) whose ``mammoth.plugins`` entry point is the
    module ``name`` with ``source``."""
    (root / f"{name}.py").write_text(source)
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[mammoth.plugins]\nplug = {name}\n")
