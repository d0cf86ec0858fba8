"""Mutation testing of the core modules with mutmut 3, one module at a time.

mutmut reads its settings from ``[tool.mutmut]`` in the pyproject.toml of the directory it runs
in, and mutates and tests one tree. To give each core module its own fast tests, this driver
copies the package, the tests and the data they read into a scratch directory per module
(``.mutation/<module>/``, git-ignored), writes there a pyproject.toml whose ``[tool.mutmut]``
mutates only that module's file and selects only that module's tests, runs ``mutmut run`` in it,
and reads mutmut's per-mutant exit codes back. The mutants recorded as equivalent in
``tests/mutation.toml`` (each with the changed line, so that a record which no longer matches
its mutant is reported as stale instead of silently excusing a different one) are set aside, and
a JSON summary is written: module -> killed / survived / equivalent / score, with every mutant
that was not killed listed with its diff.

    python benchmarks/mutation.py                      # all modules in tests/mutation.toml
    python benchmarks/mutation.py parameters pod       # some of them
    python benchmarks/mutation.py --list               # the modules and their tests
    python benchmarks/mutation.py analysis --sample-every 3      # a sample: every 3rd function
    python benchmarks/mutation.py analysis --functions _poly "Analysis.*"   # named functions

A *sample* (``--functions`` / ``--sample-every``, one module only) runs the mutants of some of
the module's functions (top-level functions and methods, ``Class.method``, in source order;
every k-th from ``--sample-offset``) through ``mutmut run <patterns>`` and scores those
mutants only; its JSON entry carries ``"sample"`` (the functions, how many of the module's
functions and mutants it covers) and replaces any earlier entry of the module, full or not.

Score = killed / (mutants - equivalent); "no tests" (a function no selected test calls) and
"suspicious" count as not killed, timeouts as killed. Exit status 1 when a module scores below
``--min-score`` (default 0, i.e. report only).
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import fnmatch
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "tests" / "mutation.toml"
SCRATCH = ROOT / ".mutation"
OUT = ROOT / "benchmarks" / "results" / "mutation.json"
COPY = ("hybrid", "tests", "cases", "meshes")  # what the tests import or read
KILLED = {"killed", "timeout", "segfault", "caught by type check"}


def load_config(path: Path) -> tuple[dict, dict]:
    cfg = tomllib.loads(path.read_text())
    modules = cfg["modules"]
    equivalent: dict[str, dict] = {}
    for e in cfg.get("equivalent", []):
        if e["mutant"] in equivalent:
            raise SystemExit(f"{path}: mutant {e['mutant']} recorded twice")
        if not e.get("reason", "").strip():
            raise SystemExit(f"{path}: equivalent mutant {e['mutant']} has no reason")
        equivalent[e["mutant"]] = e
    return modules, equivalent


def mutmut_toml(source: str, tests: list[str], extra: list[str]) -> str:
    q = json.dumps
    return (
        "[tool.mutmut]\n"
        'source_paths = ["hybrid/"]\n'
        f"only_mutate = [{q(source)}]\n"
        f"pytest_add_cli_args_test_selection = [{', '.join(q(t) for t in tests)}]\n"
        f'pytest_add_cli_args = ["-q", "-p", "no:cacheprovider", "-m", "not mpi"'
        f"{''.join(', ' + q(a) for a in extra)}]\n"
        f"also_copy = [{', '.join(q(c + '/') for c in COPY if c not in ('hybrid', 'tests'))}]\n"
        "use_git_change_detection = false\n"
    )


def changed_lines(diff: str) -> str:
    """The mutant's side of its diff, the lines it adds, stripped and joined."""
    return " | ".join(ln[1:].strip() for ln in diff.splitlines()
                      if ln.startswith("+") and not ln.startswith("+++"))


def functions_of(source: Path) -> list[str]:
    """Top-level functions and methods (``Class.method``) of a module, in source order."""
    out = []
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            out.append(node.name)
        elif isinstance(node, ast.ClassDef):
            out += [f"{node.name}.{m.name}" for m in node.body
                    if isinstance(m, ast.FunctionDef | ast.AsyncFunctionDef)]
    return out


def mangled(module: str, function: str) -> str:
    """mutmut's name of a function (``module.x_f``) or method (``module.xǁClassǁm``)."""
    cls, _, f = function.rpartition(".")
    return f"{module}.xǁ{cls}ǁ{f}" if cls else f"{module}.x_{f}"


def choose_functions(functions: list[str], patterns: list[str] | None, every: int | None,
                     offset: int = 0) -> list[str]:
    """The sampled functions: those matching a pattern, or every k-th from ``offset``."""
    if patterns:
        chosen = [f for f in functions if any(fnmatch.fnmatchcase(f, p) for p in patterns)]
        if not chosen:
            raise SystemExit(f"no function matches {patterns}; functions: {functions}")
        return chosen
    if every is not None:
        if every < 1 or not 0 <= offset < every:
            raise SystemExit("--sample-every needs k >= 1 and 0 <= --sample-offset < k")
        return functions[offset::every]
    return functions


def run_module(name: str, spec: dict, equivalent: dict, jobs: int, quiet: bool,
               sample: list[str] | None = None) -> dict:
    tests = [t for t in spec["tests"] if (ROOT / t.split("::")[0]).exists()]
    if not tests:  # mutmut would fall back to the whole suite
        raise SystemExit(f"{name}: none of its tests {spec['tests']} exists")
    work = SCRATCH / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for c in COPY:
        if (ROOT / c).exists():
            shutil.copytree(ROOT / c, work / c, ignore=ignore)
    (work / "pyproject.toml").write_text(
        mutmut_toml(spec["source"], tests, spec.get("pytest_args", [])))
    # mutmut puts mutants/ first on sys.path of its own process; a subprocess a test starts
    # (the CLI) would import the installed package instead, so such tests kill nothing here
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    mutmut = Path(sys.executable).parent / "mutmut"
    module = spec["source"][:-3].replace("/", ".")
    selected = None if sample is None else {mangled(module, f) for f in sample}
    patterns = [] if selected is None else sorted(m + "__mutmut_*" for m in selected)
    t0 = time.perf_counter()
    proc = subprocess.run([str(mutmut), "run", "--max-children", str(jobs), *patterns],
                          cwd=work, env=env,
                          stdout=subprocess.DEVNULL if quiet else None, stderr=subprocess.PIPE,
                          text=True)
    seconds = time.perf_counter() - t0
    meta = work / "mutants" / (spec["source"] + ".meta")
    if proc.returncode != 0 or not meta.exists():
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"mutmut failed on {name} (exit {proc.returncode}); see {work}")

    # mutmut's own status table and diffs, read in the scratch directory it ran in
    cwd = os.getcwd()
    os.chdir(work)
    try:
        from mutmut.configuration import reset_config
        from mutmut.mutation.diff_apply import get_diff_for_mutant
        from mutmut.stats import status_by_exit_code

        reset_config()
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        in_file = len(codes)
        if selected is not None:
            codes = {k: c for k, c in codes.items() if k.partition("__mutmut_")[0] in selected}
        counts: dict[str, int] = {}
        not_killed, stale, excused = [], [], []
        for mutant, code in codes.items():
            status = status_by_exit_code[code]
            if status in KILLED:
                counts["killed"] = counts.get("killed", 0) + 1
                if mutant in equivalent:
                    stale.append({"mutant": mutant, "why": "recorded equivalent, but killed"})
                continue
            diff = get_diff_for_mutant(mutant)
            e = equivalent.get(mutant)
            if e is not None and e["change"].strip() == changed_lines(diff):
                counts["equivalent"] = counts.get("equivalent", 0) + 1
                excused.append(mutant)
                continue
            if e is not None:
                stale.append({"mutant": mutant, "why": "recorded change no longer matches",
                              "recorded": e["change"], "now": changed_lines(diff)})
            key = "survived" if status == "survived" else status.replace(" ", "_")
            counts[key] = counts.get(key, 0) + 1
            not_killed.append({"mutant": mutant, "status": status, "diff": diff})
    finally:
        os.chdir(cwd)
    prefix = spec["source"][:-3].replace("/", ".") + "."
    for mutant in equivalent:
        if selected is not None and mutant.partition("__mutmut_")[0] not in selected:
            continue
        if mutant.startswith(prefix) and mutant not in codes:
            stale.append({"mutant": mutant, "why": "no such mutant any more"})
    total = len(codes)
    killed = counts.get("killed", 0)
    eq = counts.get("equivalent", 0)
    score = killed / (total - eq) if total > eq else 1.0
    extra = {} if sample is None else {"sample": {
        "what": "a SAMPLE of the module's functions, not the whole module",
        "functions": sample, "of_functions": len(functions_of(ROOT / spec["source"])),
        "mutants_in_file": in_file}}
    return {
        **extra,
        "source": spec["source"], "tests": tests, "mutants": total, "killed": killed,
        "survived": total - killed - eq, "equivalent": eq,
        "not_killed_by_status": {k: v for k, v in counts.items()
                                 if k not in ("killed", "equivalent")},
        "score": round(score, 4), "seconds": round(seconds, 1),
        "survivors": not_killed, "stale_equivalents": stale,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", help="module names from the config (default: all)")
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--out", type=Path, default=OUT,
                    help="JSON summary; entries of modules not run this time are kept")
    ap.add_argument("--jobs", type=int, default=1, help="mutmut worker processes")
    ap.add_argument("--min-score", type=float, default=0.0)
    ap.add_argument("--list", action="store_true", help="print the modules and their tests")
    ap.add_argument("--functions", nargs="+", metavar="PATTERN",
                    help="a sample: only the functions matching these (fnmatch, Class.method)")
    ap.add_argument("--sample-every", type=int, metavar="K",
                    help="a sample: every K-th function of the module, in source order")
    ap.add_argument("--sample-offset", type=int, default=0, metavar="I",
                    help="with --sample-every: start at the I-th function (default 0)")
    ap.add_argument("--verbose", action="store_true", help="show mutmut's progress")
    a = ap.parse_args(argv)
    modules, equivalent = load_config(a.config)
    if a.list:
        for name, spec in modules.items():
            print(f"{name:12s} {spec['source']:32s} {' '.join(spec['tests'])}")
        return 0
    unknown = set(a.modules) - set(modules)
    if unknown:
        raise SystemExit(f"unknown module(s) {sorted(unknown)}; expected {list(modules)}")
    chosen = a.modules or list(modules)
    sampling = a.functions is not None or a.sample_every is not None
    if sampling and len(chosen) != 1:
        raise SystemExit("--functions / --sample-every sample one module: name exactly one")

    import mutmut

    summary = json.loads(a.out.read_text()) if a.out.exists() else {}
    summary.update({
        "tool": f"mutmut {mutmut.__version__}",
        "config": (str(a.config.relative_to(ROOT)) if a.config.is_relative_to(ROOT)
                   else str(a.config)),
        "score": "killed / (mutants - equivalent); 'no tests' and 'suspicious' count as survived",
    })
    results = summary.setdefault("modules", {})
    low = []
    for name in chosen:
        sample = None
        if sampling:
            sample = choose_functions(functions_of(ROOT / modules[name]["source"]),
                                      a.functions, a.sample_every, a.sample_offset)
        r = run_module(name, modules[name], equivalent, a.jobs, quiet=not a.verbose,
                       sample=sample)
        r["date"] = dt.date.today().isoformat()
        r["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, jobs={a.jobs}"
        results[name] = r
        stale = f"  STALE equivalents: {len(r['stale_equivalents'])}" * bool(r["stale_equivalents"])
        print(f"{name:12s} killed {r['killed']:4d}  survived {r['survived']:4d}  "
              f"equivalent {r['equivalent']:3d}  score {100 * r['score']:5.1f} %  "
              f"({r['seconds']:.0f} s){stale}"
              f"{f'  SAMPLE of {len(sample)} functions' if sample else ''}", flush=True)
        if r["score"] < a.min_score:
            low.append(name)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    print(f"summary: {a.out}")
    if low:
        print(f"below {a.min_score:.0%}: {', '.join(low)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
