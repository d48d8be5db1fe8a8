"""``import mammoth`` is cheap; the public names, the built-ins and the ``mammoth.plugins`` entry
points load on first use, once (mammoth/__init__.py, mammoth/plugins.py). Each test of what loads
when runs a fresh interpreter, where nothing of mammoth is imported yet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fake_plugins import install_plugin

REPO = Path(__file__).resolve().parents[1]


def child_environment(cwd: Path) -> dict[str, str]:
    """This environment without Hydra's variables; ``cwd`` then this checkout (its ``mammoth``, also
    when the environment's editable install points at another checkout) on ``PYTHONPATH``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HYDRA_")}
    env["PYTHONPATH"] = os.pathsep.join([str(cwd), str(REPO)])
    return env


def run_code(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter in ``cwd`` (on its sys.path, before this checkout); the last
    stdout line is JSON."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=child_environment(cwd),
                          capture_output=True, text=True, timeout=300)


def run_mammoth(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python -m mammoth ARGS`` in ``cwd`` (on its sys.path, before this checkout)."""
    return subprocess.run([sys.executable, "-m", "mammoth", *args], cwd=cwd, env=child_environment(cwd),
                          capture_output=True, text=True, timeout=300)


def last_json(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


HEAVY = ("torch", "omegaconf", "hydra", "mammoth.backbones", "mammoth.models", "mammoth.datasets", "plugpkg")


def test_import_mammoth_imports_neither_torch_nor_the_builtins_and_they_load_on_first_use(tmp_path: Path) -> None:
    install_plugin(tmp_path)
    seen = last_json(run_code(f'''
        import json, sys
        import mammoth
        after_import = sorted(name for name in {HEAVY!r} if name in sys.modules)
        import mammoth.plugins as plugins
        calls = []
        load = plugins.load_plugins
        plugins.load_plugins = lambda strict=True: calls.append(strict) or load(strict)
        backbones = mammoth.list_backbones()
        models, datasets = mammoth.list_models(), mammoth.list_datasets()
        net = mammoth.build_backbone("plug-net", num_classes=3, input_shape=(1, 2, 2))
        print(json.dumps({{"after_import": after_import, "dir": dir(mammoth), "all": mammoth.__all__,
                           "backbones": backbones, "models": models, "datasets": datasets, "calls": calls,
                           "net": type(net).__name__, "torch": "torch" in sys.modules}}))
    ''', tmp_path))
    assert seen["after_import"] == []
    assert seen["dir"] == sorted([*seen["all"], "__version__"]) and "register_backbone" in seen["all"]
    assert {"resnet18", "mnistmlp", "plug-net"} <= set(seen["backbones"])
    assert {"sgd", "er", "der"} <= set(seen["models"]) and "seq-digits" in seen["datasets"]
    assert seen["calls"] == [False]  # the entry points were imported once, at the first lookup
    assert seen["net"] == "PlugNet" and seen["torch"] is True


def test_an_unknown_public_name_is_an_attribute_error() -> None:
    # the package's __getattr__ is a pure function of the name: in process (importing mammoth here is no test)
    import mammoth

    with pytest.raises(AttributeError) as error:
        mammoth.list_backbone  # noqa: B018
    assert str(error.value) == "module 'mammoth' has no attribute 'list_backbone'" and hasattr(mammoth, "run")


def test_a_broken_plugin_is_a_warning_at_the_first_library_lookup_and_stops_python_m_mammoth(tmp_path: Path) -> None:
    install_plugin(tmp_path, "raise RuntimeError('boom')\n")
    result = run_code('''
        import json, warnings
        import mammoth
        with warnings.catch_warnings(record=True) as at_import:
            warnings.simplefilter("always")
            import mammoth.backbones
        with warnings.catch_warnings(record=True) as at_lookup:
            warnings.simplefilter("always")
            names = mammoth.list_backbones()
            mammoth.list_models()
        print(json.dumps({"at_import": [str(w.message) for w in at_import],
                          "at_lookup": [str(w.message) for w in at_lookup], "resnet18": "resnet18" in names}))
    ''', tmp_path)
    seen = last_json(result)
    assert seen["at_import"] == []
    assert seen["at_lookup"] == ["mammoth plugin 'plug' (plugpkg) failed to import: RuntimeError: boom"]
    assert seen["resnet18"] is True
    # python -m mammoth refuses to run without it: exit status 2, the plugin named
    refused = run_mammoth(["--cfg", "job"], tmp_path)
    assert refused.returncode == 2
    assert "mammoth plugin 'plug' (plugpkg) failed to import: RuntimeError: boom" in refused.stderr


def test_plugins_compose_in_an_app_that_opts_in_without_importing_mammoth_and_in_python_m_mammoth(tmp_path: Path) -> None:
    install_plugin(tmp_path)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text(
        "defaults:\n  - backbone: resnet18\n  - _self_\n\nhydra:\n  searchpath: [pkg://mammoth.conf]\n")
    seen = last_json(run_code('''
        import json
        from hydra import compose, initialize
        with initialize(config_path="conf", version_base="1.3"):
            builtin = compose("config", overrides=["backbone.width=4", "+model=er"])
            plugin = compose("config", overrides=["backbone=plug-net", "backbone.hidden=3"])
        print(json.dumps({"builtin": [builtin.backbone._target_, builtin.backbone.width, builtin.model._target_],
                          "plugin": [plugin.backbone._target_, plugin.backbone.hidden]}))
    ''', tmp_path))
    assert seen == {"builtin": ["mammoth.backbones.resnet.resnet18", 4, "mammoth.models.er.ER"],
                    "plugin": ["plugpkg.PlugNet", 3]}
    # and in python -m mammoth, under a loose spelling of its name
    selected = run_mammoth(["backbone=Plug_Net", "backbone.hidden=9", "--cfg", "job"], tmp_path)
    assert selected.returncode == 0, selected.stderr
    assert "_target_: plugpkg.PlugNet" in selected.stdout and "hidden: 9" in selected.stdout
