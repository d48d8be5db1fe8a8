"""Benchmark the start-up time of ``python -m mammoth --cfg job``.

Compares the wall time of ``python -m mammoth --cfg job`` (composes and prints the config,
runs nothing) with the floor ``python -c "import torch, hydra"``, interleaved, N runs each
(default 7, ``--quick`` 3), in a temporary directory; the target is a ratio of at most 1.3x.
Then lists the slowest imports of mammoth / hydra_zen modules (``python -X importtime``),
the third-party imports that mammoth modules trigger directly, and checks that composing a
config leaves ``torchvision`` and ``sklearn`` unimported.

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
MUST_NOT_IMPORT = ("torchvision", "sklearn")
ALSO_REPORTED = ("scipy", "PIL", "pandas", "matplotlib", "timm", "numba", "tqdm")
OWN_PREFIXES = ("mammoth", "hydra_zen")

COMPOSE_SNIPPET = """
import json, sys, time
start = time.perf_counter()
import mammoth
from hydra import compose, initialize_config_module
with initialize_config_module(config_module="mammoth.app_conf", version_base="1.3"):
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
        if not import_cost_report(python, cwd, runs):
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
