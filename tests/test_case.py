"""Case-file validation: every error is one line naming the file, the key and what was wanted."""

from __future__ import annotations

import pytest

from hybrid.core.case import load_case, parse_case
from hybrid.errors import CaseError

from .conftest import ROOT, run_cli, small_case_text


def _err(text: str, tmp_path) -> str:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(CaseError) as ei:
        load_case(p)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith(str(p))
    return msg


def test_shipped_cases_load():
    for name in ("thermal_block.toml", "thermal_block_2x2.toml"):
        c = load_case(ROOT / "cases" / name)
        assert c.parameters.dim == c.physics.settings.blocks**2
        assert c.mesh.cells % c.physics.settings.blocks == 0


def test_valid_small_case(tmp_path):
    c = parse_case(small_case_text(), tmp_path / "c.toml")
    assert c.parameters.names == ["mu_0", "mu_1", "mu_2", "mu_3"]
    assert c.petsc_options["pc_type"] == "lu"
    assert c.qoi == ["mean", "block_mean_0"]


@pytest.mark.parametrize(
    "old,new,expect",
    [
        ('type = "unit_square"', 'type = "unit_square"\ncolour = 3', "mesh.colour: unknown key"),
        ("cells = 12", "", "mesh: mesh type 'unit_square' needs 'cells'"),
        ("cells = 12", 'cells = "twelve"', "mesh.cells: Input should be a valid integer"),
        ("cells = 12", "cells = 13", "mesh.cells: must be a multiple of physics.blocks=2"),
        ("mu_0 = { lower = 0.1, upper = 1.0 }", "mu_0 = { lower = 2.0, upper = 1.0 }",
         "parameters.mu_0: lower (2) must be < upper (1)"),
        ("mu_0 = { lower = 0.1, upper = 1.0 }", "mu_0 = { lower = 0.0, upper = 1.0, log = true }",
         "parameters.mu_0: log = true needs lower > 0"),
        ("mu_0 = { lower = 0.1, upper = 1.0 }", "mu_0 = { lower = 0.1 }",
         "parameters.mu_0.upper: missing required key"),
        ('model = "thermal_block"', 'model = "navier_stokes"',
         "physics.model: unknown physics model 'navier_stokes'"),
        ("blocks = 2", "blocks = 2\nwidth = 4", "physics.width: unknown key"),
        ("blocks = 2", "blocks = 3", "takes 9 parameters, the case declares 4"),
        ('method = "sobol"', 'method = "grid"', "sampling.method: Input should be"),
        ("seed = 3", "seed = 3.5", "sampling.seed: Input should be a valid integer"),
        ('qoi = ["mean", "block_mean_0"]', 'qoi = ["max"]', "outputs.qoi: unknown quantity 'max'"),
    ],
)
def test_errors_name_key(tmp_path, old, new, expect):
    text = small_case_text()
    assert old in text
    msg = _err(text.replace(old, new, 1), tmp_path)
    assert expect in msg, msg


def test_missing_section_and_bad_toml(tmp_path):
    text = small_case_text()
    start = text.index("[mesh]")
    end = text.index("[physics]")
    assert "mesh: missing required key" in _err(text[:start] + text[end:], tmp_path)
    assert "not valid TOML" in _err("[mesh\ncells=1", tmp_path)


def test_missing_mesh_file(tmp_path):
    text = small_case_text().replace('type = "unit_square"\ncells = 12',
                                     'type = "file"\nfile = "nowhere.msh"')
    msg = _err(text, tmp_path)
    assert "mesh.file: mesh file" in msg and "nowhere.msh" in msg and "does not exist" in msg


def test_cli_reports_one_line(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text(small_case_text().replace("cells = 12", "cells = -4"))
    r = run_cli(["campaign", p, "--no-progress"])
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "mesh.cells" in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize(
    "fluxes,expect",
    [
        ('{ left = "x2" }', "observations.fluxes.left: unknown side 'x2'; expected one of x0"),
        ('{ left = 3 }', "observations.fluxes.left: must be a side name or a list of side"),
        ('{ left = [] }', "observations.fluxes.left: must be a side name or a list"),
        ('{ left = ["x0", "x0"] }', "observations.fluxes.left: a side is listed twice"),
        ('{ left = ["x0", 1] }', "observations.fluxes.left: must be a side name"),
        ('{ deep = "z0" }', "observations.fluxes.deep: side 'z0' needs a 3D mesh"),
        ('{ p0 = "x0" }', "fluxes.p0: the name is already used by another observation"),
        ('"x0"', "observations.fluxes: Input should be a valid dictionary"),
    ],
)
def test_flux_errors_name_key(tmp_path, fluxes, expect):
    text = small_case_text() + f"\n[observations]\ngrid = 2\nfluxes = {fluxes}\n"
    msg = _err(text, tmp_path)
    assert expect in msg, msg


def test_fluxes_follow_sensors_and_averages(tmp_path):
    text = small_case_text() + ('\n[observations]\ngrid = 1\naverages = { a = [0, 0, 1, 1] }\n'
                                'fluxes = { out = ["x0", "x1", "y0", "y1"], left = "x0" }\n')
    obs = parse_case(text, tmp_path / "c.toml").observations
    assert obs.names() == ["p0", "a", "out", "left"]
    assert obs.fluxes == {"out": ["x0", "x1", "y0", "y1"], "left": ["x0"]}
    assert "fluxes" in obs.fingerprint()
    # cases without fluxes keep the store fingerprint they had before fluxes existed
    plain = parse_case(small_case_text() + "\n[observations]\ngrid = 1\n", tmp_path / "p.toml")
    assert plain.observations.fingerprint() == {"points": [], "grid": 1, "averages": {}}
