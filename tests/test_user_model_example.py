"""The README's "Bring your own model" example, run as a user would, in a temporary directory.

docs/examples/my_pde/ holds the model file (models/my_pde.py:MyPDE, −∇·(μ0∇u) + μ1u = s)
and the case file that the README prints; this test checks the README still shows them
verbatim, then, next to a copy of them: campaign under ``mpirun -n 2`` → train → synth →
FEM-confirmed MAP → a changed model file refuses the resume → a model file that raises on
import does not stop ``Surrogate.load``, ``hybrid query``, ``hybrid info`` or ``hybrid serve``
(stores and surrogates never import model code), with one UM-Bridge Evaluate call.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np

from .conftest import ROOT, run_cli

EXAMPLE = ROOT / "docs" / "examples" / "my_pde"
TRUE = np.array([1.2, 2.5])

LOAD = r"""
import json, sys
import numpy as np
from hybrid.surrogate import Surrogate
s = Surrogate.load(sys.argv[1])
mu = np.array([1.2, 2.5])
bad = [m for m in sys.modules if m.startswith(("dolfinx", "ufl", "hybrid_model_"))]
print(json.dumps({"obs": s.observe(mu).tolist(), "qoi": s.qoi(mu).tolist(), "bad": bad,
                  "bound": float(s.error_estimate(mu))}))
"""


def test_the_readme_shows_the_example_files_verbatim():
    readme = (ROOT / "README.md").read_text()
    model = (EXAMPLE / "models" / "my_pde.py").read_text()
    case = (EXAMPLE / "my_pde.toml").read_text()
    assert f"```python\n{model}```\n" in readme
    assert f"```toml\n{case}```\n" in readme
    assert len(model.splitlines()) <= 30 and 'model = "models/my_pde.py:MyPDE"' in case


def test_the_example_campaign_train_infer_serve_and_model_changes(tmp_path):
    from .test_serve import served

    work = tmp_path / "my_pde"
    shutil.copytree(EXAMPLE, work)
    model = work / "models" / "my_pde.py"
    store = work / "runs" / "my_pde" / "store"
    sur = work / "sur"
    r = run_cli(["campaign", "my_pde.toml", "--no-progress"], ranks=2, cwd=work)
    assert r.returncode == 0, r.stderr
    assert "32/32 ok" in r.stdout and str(model) in r.stdout        # the user's code, named
    manifest = json.loads((store / "store.json").read_text())
    assert manifest["model"]["certified"] and manifest["model"]["theta_a"] != []
    r = run_cli(["train", store, "-o", sur, "--epochs", "100", "--lbfgs", "100", "--width",
                 "16", "--depth", "2", "--collocation", "256", "--no-plots", "--no-progress"],
                cwd=work)
    assert r.returncode == 0, r.stderr
    meta = json.loads((sur / "surrogate.json").read_text())
    assert meta["training"]["physics_informed"] and meta["affine"]
    r = run_cli(["synth", "my_pde.toml", "--mu", "1.2,2.5", "--noise", "0.01", "--seed", "3",
                 "--out", "y.csv"], cwd=work)
    assert r.returncode == 0, r.stderr
    r = run_cli(["infer", "my_pde.toml", "--surrogate", sur, "--data", "y.csv", "--method",
                 "map", "--starts", "4", "--no-plots", "--no-enrich", "-o", "inf"], cwd=work)
    assert r.returncode == 0, r.stderr
    s = json.loads((work / "inf" / "summary.json").read_text())
    est = np.array([s["estimate"]["mu0"], s["estimate"]["mu1"]])
    e = est - TRUE
    # Laplace covariance: d² = eᵀC⁻¹e ~ χ²(2), P(χ²(2) > 13.8) = 0.001; FEM confirmation ran
    assert float(e @ np.linalg.solve(np.array(s["map"]["cov"]), e)) < 13.8, est
    assert s["fem"]["solves"] >= 1 and s["misfit"]["chi2_fem"] < 27.9   # χ²(7) at 0.001

    # a changed model file: the resume is refused in one line naming the model file
    samples = sorted(p.name for p in (store / "samples").iterdir())
    original = model.read_text()
    model.write_text(original.replace("- s * v)", "- 2.0 * s * v)"))
    r = run_cli(["campaign", "my_pde.toml", "--samples", "40", "--no-progress"], cwd=work)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "models/my_pde.py" in lines[0], r.stderr
    assert "changed since the store was made" in lines[0]
    assert sorted(p.name for p in (store / "samples").iterdir()) == samples

    # a model file that raises on import: the saved surrogate and store still answer
    model.write_text("raise RuntimeError('the model code ran')\n")
    out = subprocess.run([sys.executable, "-c", LOAD, str(sur)], capture_output=True,
                         text=True, cwd=work, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout)
    assert loaded["bad"] == [] and len(loaded["obs"]) == 9 and loaded["bound"] > 0
    q = run_cli(["query", sur, "--mu", "1.2,2.5"], cwd=work)
    assert q.returncode == 0, q.stderr
    assert json.loads(q.stdout)["qoi"]["mean"] == loaded["qoi"][0]
    i = run_cli(["info", store, "--json"], cwd=work)
    assert i.returncode == 0, i.stderr
    assert json.loads(i.stdout)["ok"] == 32
    # … and served over UM-Bridge: one Evaluate call answers the surrogate's outputs
    import umbridge

    with served(sur) as (url, _, _):
        obs, qoi = umbridge.HTTPModel(url, "surrogate")([[1.2, 2.5]])
    assert np.allclose(obs, loaded["obs"], rtol=1e-12, atol=0)
    assert np.allclose(qoi, loaded["qoi"], rtol=1e-12, atol=0)
