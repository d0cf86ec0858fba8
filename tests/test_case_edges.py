"""Case files at their edges: defaults, sensor layout, messages, 3D flux sides, read errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybrid.core.case import SIDES, _loc, load_case, parse_case
from hybrid.core.parameters import Parameter, ParameterSpace
from hybrid.core.physics import REGISTRY, PhysicsSpec
from hybrid.errors import CaseError

from .conftest import small_case_text


class Toy(PhysicsSpec):
    """A model that accepts any mesh: two parameters, eight QoIs (more than a message lists)."""

    name = "toy"

    def n_parameters(self) -> int:
        return 2

    def qoi_names(self) -> list[str]:
        return [f"q{k}" for k in range(8)]


class Toy6(Toy):
    name = "toy6"

    def qoi_names(self) -> list[str]:
        return [f"q{k}" for k in range(6)]


class Toy7(Toy):
    name = "toy7"

    def qoi_names(self) -> list[str]:
        return [f"q{k}" for k in range(7)]


@pytest.fixture
def toy(monkeypatch):
    for cls in (Toy, Toy6, Toy7):
        monkeypatch.setitem(REGISTRY, cls.name, cls)


def toy_text(mesh: str = 'type = "unit_cube"\ncells = 2', model: str = "toy",
             extra: str = "") -> str:
    return (f'[mesh]\n{mesh}\n\n[physics]\nmodel = "{model}"\n\n'
            '[parameters]\na = { lower = 0.5, upper = 2.0 }\n'
            'b = { lower = 1e-3, upper = 1e3, log = true }\n\n'
            f'[outputs]\nqoi = ["q0"]\n{extra}')


def err(text: str, path: Path) -> str:
    with pytest.raises(CaseError) as ei:
        parse_case(text, path)
    return str(ei.value)


def test_defaults_and_parameter_space(toy, tmp_path):
    c = parse_case(toy_text(), tmp_path / "my_case.toml")
    assert c.name == "my_case"                         # no [case] name: the file's stem
    assert c.store == Path("runs/my_case/store")
    assert c.description == ""
    assert c.text == toy_text()
    assert c.parameters == ParameterSpace((Parameter("a", 0.5, 2.0, False),
                                           Parameter("b", 1e-3, 1e3, True)))
    assert (c.sampling.method, c.sampling.samples, c.sampling.seed) == ("sobol", 64, 0)
    assert c.petsc_options == {"ksp_type": "preonly", "pc_type": "lu",
                               "pc_factor_mat_solver_type": "mumps"}
    assert c.mesh_file is None
    named = parse_case('[case]\nname = "nm"\ndescription = "d"\n' + toy_text(),
                       tmp_path / "x.toml")
    assert (named.name, named.description, named.store) == ("nm", "d", Path("runs/nm/store"))
    s = parse_case(toy_text(extra='store = "/data/s"\n[sampling]\nmethod = "lhs"\n'
                            'samples = 5\nseed = 9\n'), tmp_path / "x.toml")
    assert s.store == Path("/data/s")
    assert (s.sampling.method, s.sampling.samples, s.sampling.seed) == ("lhs", 5, 9)


def test_flux_sides_follow_the_mesh_dimension(toy, tmp_path):
    cube = parse_case(toy_text(extra='[observations]\nfluxes = { top = ["z1", "x0"] }\n'),
                      tmp_path / "c.toml")
    assert cube.observations.fluxes == {"top": ["z1", "x0"]}
    msh = Path(__file__).resolve().parents[1] / "meshes" / "unit_square_3x3.msh"
    for gdim, ok in ((3, True), (2, False)):
        text = toy_text(mesh=f'type = "file"\nfile = "{msh}"\ngdim = {gdim}',
                        extra='[observations]\nfluxes = { deep = "z0" }\n')
        if ok:
            assert parse_case(text, tmp_path / "f.toml").mesh_file == msh
        else:
            assert f"side 'z0' needs a 3D mesh; this mesh is {gdim}D" in err(text,
                                                                           tmp_path / "f.toml")
    sq = toy_text(mesh='type = "unit_square"\ncells = 2',
                  extra='[observations]\nfluxes = { deep = "z1" }\n')
    assert "side 'z1' needs a 3D mesh; this mesh is 2D" in err(sq, tmp_path / "s.toml")
    # the unit square is 2D whatever gdim says (gdim describes mesh files)
    sq3 = sq.replace("cells = 2", "cells = 2\ngdim = 3")
    assert "side 'z1' needs a 3D mesh; this mesh is 2D" in err(sq3, tmp_path / "s.toml")


def test_unknown_qoi_lists_at_most_six_names(toy, tmp_path):
    msg = err(toy_text().replace('qoi = ["q0"]', 'qoi = ["zz"]'), tmp_path / "c.toml")
    assert msg.endswith("outputs.qoi: unknown quantity 'zz'; model 'toy' offers "
                        "['q0', 'q1', 'q2', 'q3', 'q4', 'q5']…")
    msg = err(toy_text(model="toy6").replace('qoi = ["q0"]', 'qoi = ["zz"]'), tmp_path / "c.toml")
    assert msg.endswith("model 'toy6' offers ['q0', 'q1', 'q2', 'q3', 'q4', 'q5']")
    msg = err(toy_text(model="toy7").replace('qoi = ["q0"]', 'qoi = ["zz"]'), tmp_path / "c.toml")
    assert msg.endswith("model 'toy7' offers ['q0', 'q1', 'q2', 'q3', 'q4', 'q5']…")


def test_sensors_points_then_grid_row_by_row(tmp_path):
    text = small_case_text() + ("\n[observations]\npoints = [[0.1, 0.2], [0.3, 0.4, 0.5]]\n"
                                "grid = 2\n")
    obs = parse_case(text, tmp_path / "c.toml").observations
    assert obs.sensors() == [("p0", [0.1, 0.2]), ("p1", [0.3, 0.4, 0.5]),
                             ("p2", [0.25, 0.25]), ("p3", [0.75, 0.25]),
                             ("p4", [0.25, 0.75]), ("p5", [0.75, 0.75])]
    assert obs.names() == ["p0", "p1", "p2", "p3", "p4", "p5"]


def test_messages_of_missing_model_parameters_and_sides(tmp_path):
    text = small_case_text()
    assert err(text.replace('model = "thermal_block"\n', ""), tmp_path / "c.toml") == \
        f"{tmp_path / 'c.toml'}: physics.model: missing required key"
    start, end = text.index("[parameters]"), text.index("[sampling]")
    assert err(text[:start] + "[parameters]\n\n" + text[end:], tmp_path / "c.toml") == \
        f"{tmp_path / 'c.toml'}: parameters: at least one [parameters.NAME] table is needed"
    msg = err(text + '\n[observations]\nfluxes = { f = 3 }\n', tmp_path / "c.toml")
    assert f"({', '.join(SIDES)})" in msg and "x0, x1, y0, y1, z0, z1" in msg
    msg = err(text + '\n[observations]\nfluxes = { f = "w1" }\n', tmp_path / "c.toml")
    assert msg.endswith("unknown side 'w1'; expected one of x0, x1, y0, y1, z0, z1 "
                        "(got 'w1')")


def test_the_offending_input_is_quoted_unless_it_is_a_table(tmp_path):
    text = small_case_text()
    msg = err(text.replace("cells = 12", 'cells = "twelve"'), tmp_path / "c.toml")
    assert msg.endswith("mesh.cells: Input should be a valid integer (got 'twelve')")
    msg = err(text.replace("cells = 12", ""), tmp_path / "c.toml")   # whole-table check
    assert msg.endswith("mesh: mesh type 'unit_square' needs 'cells' (cells per side)")


def test_loc():
    assert _loc(("mesh", "cells")) == "mesh.cells"
    assert _loc(("points", 0)) == "points.0"
    assert _loc(("__root__",)) == "(top level)"
    assert _loc(()) == "(top level)"
    assert _loc(("__root__", "x")) == "x"


def test_load_case_read_errors(tmp_path):
    with pytest.raises(CaseError, match=r"nope\.toml: case file does not exist$"):
        load_case(tmp_path / "nope.toml")
    with pytest.raises(CaseError, match=r": cannot read case file: "):
        load_case(tmp_path)                                   # a directory
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b"name = '\xe9'\n")
    with pytest.raises(CaseError, match=r"latin1\.toml: cannot read case file: .*utf-8"):
        load_case(bad)


def test_a_registered_spec_gets_its_settings_and_refuses_unknown_keys(toy, tmp_path):
    path = tmp_path / "c.toml"
    c = parse_case(toy_text(), path)
    assert type(c.physics) is Toy
    assert (c.physics.settings.model, c.physics.settings.degree) == ("toy", 1)
    fp = c.fingerprint()   # a hand-written spec has no model file: no "model" key
    assert "model" not in fp and fp["physics"] == {"model": "toy", "degree": 1}
    bad = toy_text().replace('model = "toy"', 'model = "toy"\ncolour = 1')
    assert err(bad, path) == f"{path}: physics.colour: unknown key"
    bad = toy_text().replace('model = "toy"', 'model = "toy"\ndegree = "two"')
    assert err(bad, path).startswith(f"{path}: physics.degree: ")


def test_the_coupler_section_reaches_the_case(toy, tmp_path):
    path = tmp_path / "c.toml"
    c = parse_case(toy_text(extra='\n[coupler]\ntrust = "indicator"\ntol = 0.5\n'), path)
    assert (c.coupler.trust, c.coupler.tol) == ("indicator", 0.5)
    assert parse_case(toy_text(), path).coupler.trust == "bound"


def test_a_bare_name_that_fails_to_load_reports_its_own_error(toy, tmp_path, monkeypatch):
    """Only a bare name that is no built-in gets "unknown physics model"; an entry point that
    fails to import keeps its own message."""
    import hybrid.model
    from hybrid.errors import ModelError

    def broken(reference, case_dir):
        raise ModelError(f"entry point {reference!r} of group hybrid.models: ImportError: x")

    monkeypatch.setattr(hybrid.model, "load_model", broken)
    with pytest.raises(ModelError, match="entry point 'shipped_model' of group"):
        parse_case(toy_text(model="shipped_model"), tmp_path / "c.toml")


def test_a_registered_spec_with_another_parameter_count_is_refused(toy, tmp_path):
    path = tmp_path / "c.toml"
    text = toy_text().replace("[outputs]", "c = { lower = 1.0, upper = 2.0 }\n\n[outputs]")
    assert err(text, path) == (f"{path}: parameters: physics model 'toy' with these settings "
                               "takes 2 parameters, the case declares 3")


INTERVAL = 'type = "interval"\ncells = 4'


def test_a_transient_case_carries_its_time_grid_and_output_stride(toy, tmp_path):
    path = tmp_path / "c.toml"
    c = parse_case(toy_text(mesh=INTERVAL + "\ninterval = [-1.0, 1.0]",
                            extra='every = 5\n\n[time]\nscheme = "bdf2"\nt_end = 1.0\n'
                                  'dt = 0.1\n'), path)
    assert c.every == 5 and c.time.scheme == "bdf2"
    assert (c.time.t0, c.time.t_end, c.time.dt) == (None, 1.0, 0.1)
    fp = c.fingerprint()
    assert fp["time"] == {"scheme": "bdf2", "t0": None, "t_end": 1.0, "dt": 0.1}
    assert fp["mesh"]["interval"] == [-1.0, 1.0] and fp["mesh"]["type"] == "interval"
    steady = parse_case(toy_text(), path)   # steady fingerprints keep their keys
    assert steady.time is None and steady.every == 1
    assert "time" not in steady.fingerprint() and "interval" not in steady.fingerprint()["mesh"]


def test_flux_sides_of_an_interval(toy, tmp_path):
    path = tmp_path / "c.toml"
    both = '[observations]\nfluxes = { ends = ["x0", "x1"] }\n'
    c = parse_case(toy_text(mesh=INTERVAL, extra=both), path)
    assert c.observations.fluxes == {"ends": ["x0", "x1"]}
    c = parse_case(toy_text(mesh=INTERVAL + "\ninterval = [0.0, 1.0]", extra=both), path)
    assert c.mesh.interval == [0.0, 1.0]
    assert err(toy_text(mesh=INTERVAL + "\ninterval = [-1.0, 1.0]", extra=both), path) == (
        f"{path}: observations.fluxes: sides x0/x1 are x = 0 and x = 1; this interval is "
        "[-1.0, 1.0]")
    assert err(toy_text(mesh=INTERVAL, extra='[observations]\nfluxes = { s = "y0" }\n'),
               path) == f"{path}: observations.fluxes.s: side 'y0' needs a 2D mesh; this mesh is 1D"
    sq = toy_text(mesh='type = "unit_square"\ncells = 2', extra=both)
    assert parse_case(sq, path).observations.fluxes == {"ends": ["x0", "x1"]}
