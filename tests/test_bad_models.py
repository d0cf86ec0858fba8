"""Bad model files through ``hybrid campaign`` and ``hybrid solve``: one line, exit 2, no output.

Each bad model (a file that does not exist, a class that is not a Model, a ``build`` that
raises, a residual without the test function, parameters that do not match the case) must
give exactly one stderr line ``hybrid: error: <model file>: …``, exit code 2, no traceback,
and no store or output directory. The loader's own messages are tested in
tests/test_model_loader.py; this is the command line around them.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from .conftest import run_cli

GOOD = '''
import ufl
from dolfinx import fem

import hybrid.model as hm


class MyPDE(hm.Model):
    name = "my_pde"

    def parameters(self):
        return 2

    def qoi_names(self):
        return ["mean"]

    def build(self, ctx):
        V = fem.functionspace(ctx.mesh, ("Lagrange", 1))
        u, v = fem.Function(V), ufl.TestFunction(V)
        F = (ctx.mu[0] * ufl.inner(ufl.grad(u), ufl.grad(v)) + ctx.mu[1] * u * v - v) * ufl.dx
        return hm.Problem(u=u, F=F, bcs=[hm.dirichlet_on_boundary(V, 0.0)],
                          qoi={"mean": u * ufl.dx})
'''

RESIDUAL = next(ln + "\n" for ln in GOOD.splitlines() if ln.strip().startswith("F = "))

# what: (file text or None for no file, class name, words the one line must contain)
BAD = {
    "missing file": (None, "MyPDE", "model file does not exist"),
    "not a Model": (GOOD + "\n\nclass Plain:\n    name = 'plain'\n", "Plain",
                    "Plain is not a subclass of hybrid.model.Model"),
    "build raises": (GOOD.replace(RESIDUAL, RESIDUAL + "        raise ValueError('no tags')\n"),
                     "MyPDE", "MyPDE.build raised ValueError: no tags"),
    "no test function": (GOOD.replace(RESIDUAL, "        F = u * u * ufl.dx\n"), "MyPDE",
                         "the residual F has no test function"),
    "parameters do not match": (GOOD.replace("return 2", "return ['kappa', 'rate', 'source']"),
                                "MyPDE", "expects the parameters ['kappa', 'rate', 'source'], "
                                         "the case declares ['mu0', 'mu1']"),
}


def _case(tmp_path: Path, what: str) -> tuple[Path, Path]:
    text, cls, _ = BAD[what]
    (tmp_path / "models").mkdir()
    model = tmp_path / "models" / "my_pde.py"
    if text is not None:
        model.write_text(textwrap.dedent(text))
    case = tmp_path / "case.toml"
    case.write_text(textwrap.dedent(f"""\
        [mesh]
        type = "unit_square"
        cells = 6
        [physics]
        model = "models/my_pde.py:{cls}"
        [parameters]
        mu0 = {{ lower = 0.5, upper = 2.0 }}
        mu1 = {{ lower = 0.0, upper = 1.0 }}
        [sampling]
        samples = 4
        [outputs]
        store = "{tmp_path / 'store'}"
        qoi = ["mean"]
        [observations]
        grid = 2
        """))
    return case, model


def _one_line(r, model: Path, words: str, case: Path | None = None) -> None:
    """Exit 2 and one line naming the model file (after the case and key, when given)."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    where = f"{case}: parameters: {model}: " if case else f"{model}: "
    assert lines[0].startswith(f"hybrid: error: {where}"), lines[0]
    assert words in lines[0], (words, lines[0])
    assert "Traceback" not in r.stderr + r.stdout


@pytest.mark.parametrize("what", list(BAD))
def test_a_bad_model_is_one_line_naming_its_file_and_nothing_is_written(tmp_path, what):
    case, model = _case(tmp_path, what)
    words = BAD[what][2]
    # a parameter mismatch is a problem of the case with this model: both files are named
    named = case if what == "parameters do not match" else None
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    r = run_cli(["campaign", case, "--no-progress"], cwd=tmp_path)
    _one_line(r, model, words, named)
    r = run_cli(["solve", case, "--mu", "1.0,0.5", "--out", tmp_path / "one"], cwd=tmp_path)
    _one_line(r, model, words, named)
    assert not (tmp_path / "store").exists() and not (tmp_path / "one").exists()
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")
                   if "__pycache__" not in p.parts)
    assert after == before


def test_under_mpirun_the_line_is_printed_once_and_every_rank_stops(tmp_path):
    """A build that fails on 2 ranks: rank 0 prints the line, no rank hangs or writes."""
    case, model = _case(tmp_path, "no test function")
    r = run_cli(["campaign", case, "--no-progress"], ranks=2, cwd=tmp_path, timeout=120)
    _one_line(r, model, BAD["no test function"][2])
    r = run_cli(["solve", case, "--mu", "1.0,0.5", "--out", tmp_path / "one"], ranks=2,
                cwd=tmp_path, timeout=120)
    _one_line(r, model, BAD["no test function"][2])
    assert not (tmp_path / "store").exists() and not (tmp_path / "one").exists()
