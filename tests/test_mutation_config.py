"""The mutation-testing configuration stays consistent with the tree (runs without mutmut)."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((ROOT / "tests" / "mutation.toml").read_text())
CORE = {"store", "case", "parameters", "pod", "reductor", "artifact", "posterior", "mcmc",
        "diagnostics", "coupler", "proposal", "theta", "analysis"}


def driver():
    spec = importlib.util.spec_from_file_location("mutation", ROOT / "benchmarks" / "mutation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_core_module_is_configured_with_existing_fast_tests():
    mods = CONFIG["modules"]
    assert set(mods) == CORE
    for name, spec in mods.items():
        assert (ROOT / spec["source"]).is_file(), name
        assert spec["tests"], name
        for t in spec["tests"]:
            assert (ROOT / t.split("::")[0]).is_file(), (name, t)
            assert "test_campaign" not in t, "campaign tests run mpirun: far too slow per mutant"


def test_equivalent_mutants_are_recorded_once_with_a_change_and_a_reason():
    sources = {spec["source"][:-3].replace("/", ".") + "." for spec in CONFIG["modules"].values()}
    seen = set()
    for e in CONFIG.get("equivalent", []):
        assert set(e) == {"mutant", "change", "reason"}, e
        assert e["mutant"] not in seen, e["mutant"]
        seen.add(e["mutant"])
        assert any(e["mutant"].startswith(s) for s in sources), e["mutant"]
        assert e["change"].strip() and e["reason"].strip() and "\n" not in e["reason"]
    loaded_modules, loaded_eq = driver().load_config(ROOT / "tests" / "mutation.toml")
    assert set(loaded_modules) == CORE and set(loaded_eq) == seen


def test_changed_lines_reads_the_mutant_side_of_a_diff():
    diff = ("--- a.py\n+++ a.py\n@@ -1,3 +1,3 @@\n def f(x):\n-    return x < 1\n"
            "+    return x <= 1\n")
    assert driver().changed_lines(diff) == "return x <= 1"
    two = diff + "-    y = 2\n+    y = 3\n"
    assert driver().changed_lines(two) == "return x <= 1 | y = 3"


def test_a_sample_names_functions_as_mutmut_does_and_is_deterministic(tmp_path):
    d = driver()
    src = tmp_path / "m.py"
    src.write_text("def a():\n    pass\n\n\nclass C:\n    def __init__(self):\n        pass\n\n"
                   "    def m(self):\n        def inner():\n            pass\n\n\ndef b():\n"
                   "    pass\n")
    funcs = d.functions_of(src)
    assert funcs == ["a", "C.__init__", "C.m", "b"]           # source order, no nested ones
    assert d.mangled("hybrid.core.theta", "a") == "hybrid.core.theta.x_a"
    assert d.mangled("hybrid.core.theta", "C.__init__") == "hybrid.core.theta.xǁCǁ__init__"
    assert d.choose_functions(funcs, None, 2, 0) == ["a", "C.m"]
    assert d.choose_functions(funcs, None, 2, 1) == ["C.__init__", "b"]
    assert d.choose_functions(funcs, ["C.*"], None) == ["C.__init__", "C.m"]
    assert d.choose_functions(funcs, None, None) == funcs
    for bad in ((funcs, ["zz"], None), (funcs, None, 0), (funcs, None, 2, 2)):
        with pytest.raises(SystemExit):
            d.choose_functions(*bad)
