"""Naming a model: built-in, entry point, file next to the case, module; bad models refused."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

import hybrid.fem  # noqa: F401  (MPI ordering)
import hybrid.model as hm
from hybrid.errors import ModelError

GOOD = '''
import ufl
from dolfinx import fem

import hybrid.model as hm


class MyPDE(hm.Model):
    """−∇·(μ0 ∇u) + μ1 u = 1, u = 0 on ∂Ω."""

    name = "my_pde"

    class Settings(hm.Settings):
        """Settings."""

        degree: int = 1

    def parameters(self):
        return 2

    def qoi_names(self):
        return ["mean"]

    def build(self, ctx):
        V = fem.functionspace(ctx.mesh, ("Lagrange", self.settings.degree))
        u, v = fem.Function(V), ufl.TestFunction(V)
        F = (ctx.mu[0] * ufl.inner(ufl.grad(u), ufl.grad(v)) + ctx.mu[1] * u * v - v) * ufl.dx
        return hm.Problem(u=u, F=F, bcs=[hm.dirichlet_on_boundary(V, 0.0)],
                          qoi={"mean": u * ufl.dx})
'''


def _mesh():
    from dolfinx import mesh
    from mpi4py import MPI

    return mesh.create_unit_square(MPI.COMM_WORLD, 4, 4)


@pytest.fixture
def case_dir(tmp_path):
    (tmp_path / "case.toml").write_text("[physics]\nmodel = 'models/my_pde.py:MyPDE'\n")
    (tmp_path / "models").mkdir()
    return tmp_path


def _write(case_dir: Path, text: str, name: str = "my_pde.py") -> Path:
    p = case_dir / "models" / name
    p.write_text(textwrap.dedent(text))
    return p


def test_builtin_names():
    import hybrid.model.library.thermal_block as tbmod

    lm = hm.load_model("thermal_block")
    assert lm.cls.__name__ == "ThermalBlock" and lm.cls.name == "thermal_block"
    assert lm.sha256 == hashlib.sha256(Path(tbmod.__file__).read_bytes()).hexdigest()
    assert lm.info == {"reference": "thermal_block", "sha256": lm.sha256}
    assert hm.load_model("nonlinear_diffusion").cls.name == "nonlinear_diffusion"
    with pytest.raises(ModelError, match="not a built-in model") as info:
        hm.load_model("no_such_model")
    assert "\n" not in str(info.value)


def test_a_model_file_next_to_the_case(case_dir):
    from hybrid.fem.analysis import affine_decomposition
    from hybrid.fem.discretisation import Discretisation

    path = _write(case_dir, GOOD)
    lm = hm.load_model("models/my_pde.py:MyPDE", case_dir)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert lm.sha256 == sha and lm.reference == "models/my_pde.py:MyPDE"
    assert lm.cls.__module__ == f"hybrid_model_{sha[:16]}"
    assert lm.origin == str(path.resolve())
    assert hm.load_model("models/my_pde.py", case_dir).cls is lm.cls  # one class: no name
    model = lm.instantiate({"model": "models/my_pde.py:MyPDE", "degree": 1})
    pb, ctx = lm.build(model, _mesh(), ["k", "c"])
    assert list(ctx.mu) == ["k", "c"] and ctx.mu["c"] is ctx.mu[1]
    d = affine_decomposition(pb.F, pb.u, ctx.mu)
    assert d.affine and d.linear and len(d.a) == 2
    disc = Discretisation(pb, ctx.mu)
    assert disc.solve([1.0, 0.0]).ok
    # −Δu = 1 on the unit square: ∫u = 0.03514425… (Fourier series); coarse mesh
    assert disc.qoi()["mean"] == pytest.approx(0.0351, rel=0.25)
    # a changed file is a different module (sha256 in the name), the old one stays intact
    _write(case_dir, GOOD.replace('"my_pde"', '"my_pde_v2"'))
    lm2 = hm.load_model("models/my_pde.py:MyPDE", case_dir)
    assert lm2.cls.name == "my_pde_v2" and lm.cls.name == "my_pde" and lm2.sha256 != sha


def test_a_module_reference(tmp_path, monkeypatch):
    lm = hm.load_model("hybrid.model.library.nonlinear_diffusion:NonlinearDiffusion")
    assert lm.cls is hm.load_model("nonlinear_diffusion").cls
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "pde.py").write_text(GOOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    lm = hm.load_model("mypkg.pde:MyPDE")
    assert lm.cls.name == "my_pde"
    assert lm.sha256 == hashlib.sha256((tmp_path / "mypkg" / "pde.py").read_bytes()).hexdigest()
    with pytest.raises(ModelError, match="importing the model module raised"):
        hm.load_model("mypkg.nothere:MyPDE")


def test_an_entry_point(tmp_path, monkeypatch):
    (tmp_path / "epmodels.py").write_text(GOOD)
    dist = tmp_path / "epmodels-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: epmodels\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[hybrid.models]\nmy_ep_pde = epmodels:MyPDE\n"
                                           "my_ep_mod = epmodels\nmy_ep_bad = epmodels:Nope\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    lm = hm.load_model("my_ep_pde")
    assert lm.cls.name == "my_pde" and lm.reference == "my_ep_pde"
    assert lm.sha256 == hashlib.sha256((tmp_path / "epmodels.py").read_bytes()).hexdigest()
    assert hm.load_model("my_ep_mod").cls is lm.cls
    with pytest.raises(ModelError, match="loading entry point 'my_ep_bad'"):
        hm.load_model("my_ep_bad")


def test_the_thermal_block_plugin_checks_a_case():
    from hybrid.core.case import parse_case

    from .conftest import small_case_text

    lm = hm.load_model("thermal_block")
    case = parse_case(small_case_text(cells=12, blocks=2), Path("t.toml"))
    model = lm.instantiate({"blocks": 2})
    assert lm.check(model, case) == []
    assert lm.parameter_names(model, case.parameters.names) == case.parameters.names
    problems = lm.check(lm.instantiate({"blocks": 5}), case)
    assert [k for k, _ in problems] == ["mesh.cells"]


BAD = {
    "missing class": (GOOD, "models/my_pde.py:Other", "no class 'Other'"),
    "not a Model": (GOOD + "\nclass Plain:\n    name = 'x'\n", "models/my_pde.py:Plain",
                    "not a subclass of hybrid.model.Model"),
    "import raises": ("import math\nraise RuntimeError('bad\\nconfig, line two')\n",
                      "models/my_pde.py:MyPDE", "importing the model raised RuntimeError: bad "
                      "config, line two"),
    "syntax error": ("def broken(:\n", "models/my_pde.py:MyPDE", "SyntaxError"),
    "no name": (GOOD.replace('    name = "my_pde"\n', ""), "models/my_pde.py:MyPDE",
                "must set the class attribute name"),
}


@pytest.mark.parametrize("what", list(BAD))
def test_bad_model_files_give_one_line_naming_the_file(case_dir, what):
    text, ref, words = BAD[what]
    path = _write(case_dir, text)
    with pytest.raises(ModelError) as info:
        hm.load_model(ref, case_dir)
    msg = str(info.value)
    assert str(path.resolve()) in msg and words in msg, msg
    assert "\n" not in msg and "Traceback" not in msg


def test_a_missing_file(case_dir):
    with pytest.raises(ModelError) as info:
        hm.load_model("models/absent.py:MyPDE", case_dir)
    msg = str(info.value)
    assert str(case_dir / "models" / "absent.py") in msg and "does not exist" in msg
    assert "\n" not in msg


def _bad_build(case_dir, body: str) -> str:
    text = GOOD.replace(
        "        return hm.Problem(u=u, F=F, bcs=[hm.dirichlet_on_boundary(V, 0.0)],\n"
        "                          qoi={\"mean\": u * ufl.dx})\n", body)
    assert text != GOOD
    path = _write(case_dir, text)
    lm = hm.load_model("models/my_pde.py:MyPDE", case_dir)
    with pytest.raises(ModelError) as info:
        lm.build(lm.instantiate(), _mesh())
    msg = str(info.value)
    assert str(path.resolve()) in msg and "\n" not in msg and "Traceback" not in msg
    return msg


def test_build_errors_name_the_file(case_dir):
    assert "MyPDE.build raised ZeroDivisionError: division by zero" in _bad_build(
        case_dir, "        return 1 / 0\n")
    assert "no test function" in _bad_build(
        case_dir, "        return hm.Problem(u=u, F=u * u * ufl.dx, qoi={'mean': u * ufl.dx})\n")
    msg = _bad_build(case_dir, "        w = ufl.TrialFunction(V)\n"
                     "        F = ufl.inner(ufl.grad(w), ufl.grad(v)) * ufl.dx\n"
                     "        return hm.Problem(u=u, F=F, qoi={'mean': u * ufl.dx})\n")
    assert "not a TrialFunction" in msg
    assert "does not depend on u" in _bad_build(
        case_dir, "        return hm.Problem(u=u, F=v * ufl.dx, qoi={'mean': u * ufl.dx})\n")
    assert "qoi_names() says" in _bad_build(
        case_dir, "        return hm.Problem(u=u, F=F, qoi={'max': u * ufl.dx})\n")
    assert "must return a hybrid.model.Problem" in _bad_build(case_dir, "        return F\n")


def test_parameters_and_settings_are_checked(case_dir):
    path = str(_write(case_dir, GOOD).resolve())
    lm = hm.load_model("models/my_pde.py:MyPDE", case_dir)
    model = lm.instantiate()
    assert lm.parameter_names(model) == ["mu_0", "mu_1"]
    with pytest.raises(ModelError) as info:
        lm.parameter_names(model, ["a", "b", "c"])
    assert path in str(info.value) and "has 2 parameters" in str(info.value)
    nd = hm.load_model("nonlinear_diffusion")
    with pytest.raises(ModelError) as info:
        nd.parameter_names(nd.instantiate(), ["mu1", "mu0"])
    msg = str(info.value)
    assert "expects the parameters ['mu0', 'mu1']" in msg and "nonlinear_diffusion.py" in msg
    assert nd.parameter_names(nd.instantiate(), ["mu0", "mu1"]) == ["mu0", "mu1"]
    with pytest.raises(ModelError) as info:
        lm.instantiate({"degre": 2})
    assert path in str(info.value) and "physics.degre" in str(info.value)
    assert "\n" not in str(info.value)
