"""Benchmark the start-up time of ``python -m mammoth --cfg job``.

Compares the wall time of ``python -m mammoth --cfg job`` (composes and prints the config,
runs nothing) with the floor ``python -c "import torch, hydra"``, interleaved, N runs each
(default 7, ``--quick`` 3), in a temporary directory; the target is a ratio of at most 1.3x.
Then lists the slowest imports of mammoth / hydra_zen modules (``python -X importtime``),
the third-party imports that mammoth modules trigger directly, and checks that composing a
config leaves ``torchvision`` and ``sklearn`` unimported.

Then Hydra's own screens side by side with plain Hydra apps of the same size (one YAML file per
built-in option in ``backbone/``, ``dataset/`` and ``model/``, the same fields and defaults, a
primary config selecting the same defaults; for ``python -m mammoth`` also a copy of its
``experiment/``, ``hparams_search/`` and ``logger/``): ``--help`` and a completion query
(``backbone=<TAB>``) of ``python -m mammoth`` and of an app that opted in (``pkg://mammoth.conf``);
the target is at most 1.5x its plain app's, and neither imports torch.

Last, the cost of ``import mammoth`` itself, side by side with the bare interpreter
(``python -c pass``), ``import torch, hydra`` and the first use (``mammoth.list_backbones()``,
which imports torch, the built-ins and the plugins): ``import mammoth`` should cost about
nothing over the bare interpreter (it imports neither torch nor the built-ins).

Usage: ``python scripts/bench_startup.py [--quick] [--runs N] [--override '~model' ...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _timing  # noqa: E402

TARGET = 1.3
#: Target of ``--help`` and a completion query, over a plain Hydra app of the same size.
HYDRA_TARGET = 1.5
MUST_NOT_IMPORT = ("torchvision", "sklearn")
ALSO_REPORTED = ("scipy", "PIL", "pandas", "matplotlib", "timm", "numba", "tqdm")
OWN_PREFIXES = ("mammoth", "hydra_zen")

COMPOSE_SNIPPET = """
import json, sys, time
start = time.perf_counter()
import mammoth
from hydra import compose, initialize_config_module
with initialize_config_module(config_module="mammoth.app.conf", version_base="1.3"):
    cfg = compose(config_name="config", overrides={overrides!r})
print(json.dumps({{"seconds": time.perf_counter() - start,
                  "present": sorted(m for m in {names!r} if m in sys.modules)}}))
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 runs each and one importtime run")
    parser.add_argument("--runs", type=int, default=None, help="runs of each command (default 7, --quick 3)")
    parser.add_argument(
        "--override", action="append", default=[],
        help="extra Hydra override for the mammoth command, e.g. '~model' (repeatable)",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="accepted for symmetry with bench_flat.py; start-up runs no device work")
    return parser.parse_args()


def run_once(command: list[str], cwd: str) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - start, result


def parse_importtime(stderr: str) -> list[tuple[str, float, float, list[str]]]:
    """``[(module, self_ms, cumulative_ms, direct children)]`` from ``-X importtime`` output."""
    nodes, pending = [], {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        try:
            self_us, cumulative_us, name = line[len("import time:"):].split("|", 2)
        except ValueError:
            continue
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        module = name.strip()
        children = pending.pop(depth + 1, [])
        nodes.append((module, int(self_us) / 1e3, int(cumulative_us) / 1e3, children))
        pending.setdefault(depth, []).append(module)
    return nodes


def importtime_report(command: list[str], cwd: str, runs: int) -> None:
    self_ms: dict[str, list[float]] = {}
    cumulative_ms: dict[str, list[float]] = {}
    children_of: dict[str, list[str]] = {}
    for _ in range(runs):
        result = subprocess.run([command[0], "-X", "importtime", *command[1:]], cwd=cwd, capture_output=True, text=True)
        for module, own, cumulative, children in parse_importtime(result.stderr):
            self_ms.setdefault(module, []).append(own)
            cumulative_ms.setdefault(module, []).append(cumulative)
            children_of[module] = children
    med = {m: statistics.median(v) for m, v in self_ms.items()}
    cum = {m: statistics.median(v) for m, v in cumulative_ms.items()}
    own = [m for m in med if m.split(".")[0] in OWN_PREFIXES]
    print(f"\n## `-X importtime`: top 10 self time under {'/'.join(OWN_PREFIXES)} (median of {runs} run(s))\n")
    print(_timing.markdown_table(
        ["module", "self ms", "cumulative ms"],
        [[m, f"{med[m]:.1f}", f"{cum[m]:.1f}"] for m in sorted(own, key=med.get, reverse=True)[:10]],
    ))
    print(f"\n## Top 10 cumulative under {'/'.join(OWN_PREFIXES)} (includes what they import)\n")
    print(_timing.markdown_table(
        ["module", "cumulative ms", "self ms"],
        [[m, f"{cum[m]:.1f}", f"{med[m]:.1f}"] for m in sorted(own, key=cum.get, reverse=True)[:10]],
    ))
    external = [
        (parent, child) for parent in own for child in children_of.get(parent, [])
        if child.split(".")[0] not in OWN_PREFIXES and child in cum
    ]
    print("\n## Top 10 third-party imports made directly by mammoth/hydra_zen modules (first importer)\n")
    print(_timing.markdown_table(
        ["imported module", "cumulative ms", "imported by"],
        [[c, f"{cum[c]:.1f}", p] for p, c in sorted(external, key=lambda pc: cum[pc[1]], reverse=True)[:10]],
    ))


#: What ``import mammoth`` costs, side by side (label -> ``python -c`` code); ratios are to the first.
IMPORT_COMMANDS = {
    "python -c pass": "pass",
    "import mammoth": "import mammoth",
    "import mammoth; mammoth.list_backbones()": "import mammoth; mammoth.list_backbones()",
    "import torch, hydra": "import torch, hydra",
}


def import_cost_report(python: str, cwd: str, runs: int) -> bool:
    """Time each of :data:`IMPORT_COMMANDS` ``runs`` times, interleaved; print medians and ratios
    to the bare interpreter, and whether ``import mammoth`` left torch unimported. False on a failure."""
    times: dict[str, list[float]] = {label: [] for label in IMPORT_COMMANDS}
    labels = list(IMPORT_COMMANDS)
    for index in range(runs + 1):  # the first round is an untimed warm-up
        shift = index % len(labels)
        for label in labels[shift:] + labels[:shift]:
            seconds, result = run_once([python, "-c", IMPORT_COMMANDS[label]], cwd)
            if result.returncode != 0:
                print(f"FAILED (exit {result.returncode}): python -c {IMPORT_COMMANDS[label]!r}\n{result.stderr[-3000:]}")
                return False
            if index:
                times[label].append(seconds)
    floor = statistics.median(times[labels[0]])
    print(f"\n## The cost of `import mammoth` (median of {runs} interleaved runs)\n")
    print(_timing.markdown_table(
        ["command", "median s", "min s", "over python -c pass s", "ratio vs python -c pass"],
        [[f"python -c {IMPORT_COMMANDS[label]!r}", f"{statistics.median(times[label]):.3f}", f"{min(times[label]):.3f}",
          f"{statistics.median(times[label]) - floor:.3f}", f"{statistics.median(times[label]) / floor:.2f}x"]
         for label in labels],
    ))
    check = subprocess.run([python, "-c", "import sys, mammoth; print('torch' in sys.modules)"], cwd=cwd,
                           capture_output=True, text=True)
    lazy = check.stdout.strip() == "False"
    print(f"\n- {'PASS' if lazy else 'MISS'}  `import mammoth` leaves torch unimported")
    importtime = subprocess.run([python, "-X", "importtime", "-c", "import mammoth"], cwd=cwd, capture_output=True, text=True)
    own = [node for node in parse_importtime(importtime.stderr) if node[0] == "mammoth"]
    if own:
        print(f"- info: `python -X importtime -c 'import mammoth'`: mammoth cumulative {own[-1][2]:.1f} ms")
    return lazy


PLAIN_APP = """
import sys

import hydra


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def app(cfg):
    print(cfg)


if __name__ == "__main__":
    app()
"""

#: Prints whether the command it runs (``python probe.py PROGRAM ARGS``) imported torch.
TORCH_PROBE = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_module("mammoth", run_name="__main__") if sys.argv[0] == "mammoth" else runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit:
    pass
print("TORCH", "torch" in sys.modules)
"""


def write_apps(root: str) -> None:
    """Two plain Hydra apps and an app that opted in (``optin/``). ``plain-options/`` has one YAML
    file per built-in option (``backbone/``, ``dataset/``, ``model/``, the same fields and defaults)
    and a primary config selecting the same defaults: the size of what an app that opts in gets.
    ``plain-app/`` has those and a copy of ``python -m mammoth``'s own groups (``experiment/``,
    ``hparams_search/``, ``logger/``): the size of mammoth's app."""
    import shutil

    import yaml

    import mammoth.app.conf
    from mammoth.config import manifest

    defaults = "defaults:\n  - dataset: seq-digits\n  - backbone: mnistmlp\n  - model: sgd\n  - _self_\n"
    settings = "seed: 0\ndevice: auto\nresume: false\nthreads: null\n"
    folders = {"plain-options": "", "plain-app": "", "optin": "hydra:\n  searchpath: [pkg://mammoth.conf]\n"}
    for folder, extra in folders.items():
        os.makedirs(os.path.join(root, folder, "conf"))
        with open(os.path.join(root, folder, "app.py"), "w") as file:
            file.write(PLAIN_APP)
        with open(os.path.join(root, folder, "conf", "config.yaml"), "w") as file:
            file.write(defaults + settings + extra)
        with open(os.path.join(root, folder, "probe.py"), "w") as file:
            file.write(TORCH_PROBE)
    for folder in ("plain-options", "plain-app"):
        for group, options in manifest.load_manifest().items():
            os.makedirs(os.path.join(root, folder, "conf", group))
            for name, description in options.items():
                values = {"_target_": description["target"]}
                values.update((field, list(default) if isinstance(default, tuple) else default)
                              for field, _, default in manifest.manifest_fields(description))
                with open(os.path.join(root, folder, "conf", group, f"{name}.yaml"), "w") as file:
                    yaml.safe_dump(values, file, sort_keys=False)
    app_conf = os.path.dirname(mammoth.app.conf.__file__)
    for group in ("experiment", "hparams_search", "logger"):
        shutil.copytree(os.path.join(app_conf, group), os.path.join(root, "plain-app", "conf", group))


def hydra_screens_report(python: str, root: str, runs: int) -> bool:
    """``--help`` and a completion query of ``python -m mammoth`` and of an app that opted in, each
    with a plain Hydra app of its size, interleaved; print medians and ratios to the plain app's;
    False on a failure or a MISS."""
    write_apps(root)
    env = {key: value for key, value in os.environ.items() if not key.startswith("HYDRA_")}
    #: label -> (folder, program, the label of the plain app it is compared with)
    programs = {"plain Hydra app, mammoth's size": ("plain-app", ["app.py"], None),
                "python -m mammoth": ("plain-app", ["-m", "mammoth"], "plain Hydra app, mammoth's size"),
                "plain Hydra app, options only": ("plain-options", ["app.py"], None),
                "app that opted in": ("optin", ["app.py"], "plain Hydra app, options only")}
    queries = {"--help": (["--help"], None), "completion `backbone=`": (["-sc", "query=bash"], "backbone=")}
    commands = {}
    for label, (folder, program, _) in programs.items():
        for query, (args, line) in queries.items():
            extra = {"COMP_LINE": f"prog {line}"} if line is not None else {}
            commands[(label, query)] = ([python, *program, *args], os.path.join(root, folder), {**env, **extra})
    times: dict[tuple[str, str], list[float]] = {key: [] for key in commands}
    keys = list(commands)
    for index in range(runs + 1):  # the first round is an untimed warm-up
        shift = index % len(keys)
        for key in keys[shift:] + keys[:shift]:
            command, cwd, command_env = commands[key]
            start = time.perf_counter()
            result = subprocess.run(command, cwd=cwd, env=command_env, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if result.returncode != 0 or (key[1] != "--help" and "backbone=resnet" not in result.stdout):
                print(f"FAILED (exit {result.returncode}): {' '.join(command)}\n{result.stdout[-1000:]}{result.stderr[-3000:]}")
                return False
            if index:
                times[key].append(seconds)
    print(f"\n## Hydra's screens against a plain Hydra app of the same size (median of {runs} interleaved runs)\n")
    rows, passed = [], True
    for query in queries:
        for label, (_, _, plain) in programs.items():
            median = statistics.median(times[(label, query)])
            ratio = median / statistics.median(times[(plain or label, query)])
            verdict = "" if plain is None else ("PASS" if ratio <= HYDRA_TARGET else "MISS")
            passed = passed and verdict != "MISS"
            rows.append([query, label, f"{median:.3f}", f"{min(times[(label, query)]):.3f}",
                         f"{ratio:.2f}x" if plain else "1.00x", verdict])
    print(_timing.markdown_table(["query", "program", "median s", "min s", "ratio vs its plain app",
                                  f"<= {HYDRA_TARGET}x"], rows))
    for label, (folder, program, plain) in programs.items():
        if plain is None:
            continue
        name = "mammoth" if program[0] == "-m" else "app.py"
        for query, (args, line) in queries.items():
            extra = {"COMP_LINE": f"prog {line}"} if line is not None else {}
            probe = subprocess.run([python, os.path.join(root, "optin", "probe.py"), name, *args],
                                   cwd=os.path.join(root, folder), env={**env, **extra}, capture_output=True, text=True)
            clean = probe.stdout.strip().splitlines()[-1:] == ["TORCH False"]
            passed = passed and clean
            print(f"- {'PASS' if clean else 'MISS'}  {label} {query} leaves torch unimported")
    return passed


def main() -> int:
    args = parse_args()
    runs = args.runs or (3 if args.quick else 7)
    python = sys.executable
    mammoth_cmd = [python, "-m", "mammoth", "--cfg", "job", *args.override]
    floor_cmd = [python, "-c", "import torch, hydra"]
    _timing.print_header(
        "Start-up time of `python -m mammoth --cfg job`",
        {
            "mammoth command": " ".join(mammoth_cmd),
            "floor command": " ".join(floor_cmd[:2]) + ' "import torch, hydra"',
            "runs": f"{runs} each, interleaved, after one untimed warm-up run each",
        },
    )
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as cwd:
        for command in (mammoth_cmd, floor_cmd):
            _, result = run_once(command, cwd)
            if result.returncode != 0:
                print(f"FAILED (exit {result.returncode}): {' '.join(command)}\n{result.stderr[-3000:]}")
                print("If the config does not compose yet, measure with e.g. --override '~model' and say so.")
                return 1
        times: dict[str, list[float]] = {"mammoth": [], "floor": []}
        for index in range(runs):
            order = [("mammoth", mammoth_cmd), ("floor", floor_cmd)]
            for label, command in order if index % 2 == 0 else order[::-1]:
                seconds, result = run_once(command, cwd)
                if result.returncode != 0:
                    print(f"FAILED (exit {result.returncode}): {' '.join(command)}\n{result.stderr[-3000:]}")
                    return 1
                times[label].append(seconds)
        ratio = statistics.median(times["mammoth"]) / statistics.median(times["floor"])
        paired = statistics.median(a / b for a, b in zip(times["mammoth"], times["floor"]))
        print(_timing.markdown_table(
            ["command", "median s", "min s", "max s", "ratio vs floor"],
            [
                [" ".join(["python", *mammoth_cmd[1:]]), f"{statistics.median(times['mammoth']):.3f}",
                 f"{min(times['mammoth']):.3f}", f"{max(times['mammoth']):.3f}", f"{ratio:.2f}x"],
                ['python -c "import torch, hydra"', f"{statistics.median(times['floor']):.3f}",
                 f"{min(times['floor']):.3f}", f"{max(times['floor']):.3f}", "1.00x"],
            ],
        ))
        print(f"\nratio of medians {ratio:.2f}x (median of paired ratios {paired:.2f}x); target <= {TARGET}x: "
              f"{'PASS' if ratio <= TARGET else 'MISS'}")

        importtime_report(mammoth_cmd, cwd, 1 if args.quick else 3)

        snippet = COMPOSE_SNIPPET.format(
            overrides=list(args.override), names=list(MUST_NOT_IMPORT + ALSO_REPORTED)
        )
        result = subprocess.run([python, "-c", snippet], cwd=cwd, capture_output=True, text=True)
        print("\n## Heavy modules in sys.modules after `import mammoth` + compose\n")
        if result.returncode != 0:
            print(f"FAILED (exit {result.returncode}):\n{result.stderr[-3000:]}")
            return 1
        report = json.loads(result.stdout.strip().splitlines()[-1])
        for name in MUST_NOT_IMPORT:
            print(f"- {'MISS' if name in report['present'] else 'PASS'}  {name} not imported")
        others = [m for m in ALSO_REPORTED if m in report["present"]]
        print(f"- info: also imported: {', '.join(others) or 'none'} (of {', '.join(ALSO_REPORTED)})")
        print(f"- info: import mammoth + compose took {report['seconds']:.2f} s in-process")
        hydra_ok = hydra_screens_report(python, os.path.join(cwd, "apps"), runs)
        if not import_cost_report(python, cwd, runs):
            return 1
    return 0 if hydra_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
