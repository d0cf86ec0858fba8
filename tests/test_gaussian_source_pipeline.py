"""cases/gaussian_source.toml end to end: campaign (mpirun -n 2) → train → synth → MAP.

The model is linear but not affine, so the surrogate is data-only POD-NN; on this tiny
store (48 snapshots of a moving bump) its validation error is large (≈ 20 %), and the
surrogate's own MAP is off by ≈ 0.02 in the source position. The FEM confirmation (a
trust-region loop on the FEM value and tangent-linear Jacobian) must remove that bias: the
answer is then the FEM's MAP, whose error is the noise's alone. For a Gaussian posterior
the squared Mahalanobis distance of the truth from the MAP, d² = eᵀ C⁻¹ e with the
Gauss–Newton (Laplace) covariance C, is χ²(3) distributed, and P(χ²(3) > 16.27) = 0.001.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from .conftest import ROOT, run_cli

TRUE = np.array([0.35, 0.6, 1.3])

NO_MODEL_CODE = r"""
import importlib.abc, json, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.startswith(("hybrid.model", "hybrid.fem", "dolfinx", "ufl", "petsc4py")):
            raise ImportError(f"{name} must not be imported to use a surrogate")
        return None

sys.meta_path.insert(0, Refuse())
import numpy as np
from hybrid.surrogate import Surrogate

s = Surrogate.load(sys.argv[1])
y = s.observe(np.array([0.35, 0.6, 1.3]))
print(json.dumps({"y": [float(v) for v in y], "model": s.meta["model"]["reference"],
                  "names": s.observation_names}))
"""


def test_campaign_train_synth_map_recovers_the_source_position(tmp_path):
    text = (ROOT / "cases" / "gaussian_source.toml").read_text()
    text = text.replace("cells = 32", "cells = 16").replace("grid = 4", "grid = 3")
    text = text.replace('store = "runs/gaussian_source/store"', f'store = "{tmp_path / "store"}"')
    case = tmp_path / "gs.toml"
    case.write_text(text)
    r = run_cli(["campaign", case, "--samples", "48", "--no-progress"], ranks=2, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "48/48 ok, 0 failed" in r.stdout
    store = json.loads((tmp_path / "store" / "store.json").read_text())
    assert store["model"]["linear"] and not store["model"]["affine"]
    assert store["model"]["theta_a"] == [] and not store["model"]["certified"]
    r = run_cli(["train", tmp_path / "store", "-o", tmp_path / "sur", "--epochs", "300",
                 "--lbfgs", "300", "--width", "32", "--depth", "2", "--no-plots",
                 "--no-progress"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "physics-informed term was skipped" in r.stdout
    r = run_cli(["synth", case, "--mu", ",".join(map(str, TRUE)), "--noise", "0.01",
                 "--seed", "2", "--out", tmp_path / "y.csv"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run_cli(["infer", case, "--surrogate", tmp_path / "sur", "--data", tmp_path / "y.csv",
                 "--method", "map", "--starts", "4", "--no-plots", "--no-enrich",
                 "-o", tmp_path / "inf"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "inf" / "summary.json").read_text())
    names = ["x0", "y0", "kappa"]
    est = np.array([s["estimate"][n] for n in names])
    cheap = np.array([s["surrogate_map"]["mu"][n] for n in names])
    cov = np.array(s["map"]["cov"])
    err = est - TRUE
    d2 = float(err @ np.linalg.solve(cov, err))
    # the FEM confirmation ran and moved the answer from the surrogate's MAP to the FEM's
    assert s["fem"]["solves"] >= 2 and s["map"]["converged"], s["map"]["message"]
    assert s["misfit"]["chi2_fem"] < s["misfit"]["chi2_surrogate"]
    # χ² of the FEM fit: 11 observations − 3 parameters, P(χ²(8) > 26.1) = 0.001
    assert s["misfit"]["chi2_fem"] < 26.1, s["misfit"]
    assert d2 < 16.27, (est, d2)                            # noise-limited (module docstring)
    assert np.abs(err[:2]).max() < 0.01, est                 # ≈ 8 posterior std at most
    assert np.abs(err[:2]).max() < np.abs(cheap - TRUE)[:2].max(), (est, cheap)
    # the field at the estimate was written by the FEM
    assert (tmp_path / "inf" / "field" / "solution.xdmf").exists()

    # the surrogate answers in a process that cannot import model, FEM or UFL code
    out = subprocess.run([sys.executable, "-c", NO_MODEL_CODE, str(tmp_path / "sur")],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["model"] == "gaussian_source" and len(res["y"]) == 11
    # … and agrees with the CLI's query of the same surrogate
    q = run_cli(["query", tmp_path / "sur", "--mu", ",".join(map(str, TRUE))], cwd=tmp_path)
    assert q.returncode == 0, q.stderr
    obs = json.loads(q.stdout)["observations"]
    assert np.allclose([obs[n] for n in res["names"]], res["y"], rtol=1e-12)
