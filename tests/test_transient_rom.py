"""Reduced models of the transient heat block against the FEM and against mathematics.

- Space–time POD (hybrid/surrogate/spacetime.py): the weighted projection error equals the
  discarded singular values (Eckart–Young in the trapezoidal-in-time, M-in-space norm), with
  and without fixed vectors; the two-level basis obeys its stated error bound and matches
  the direct one.
- Galerkin time-stepping ROM (hybrid/surrogate/galerkin_time.py): with the full basis it is
  the FEM trajectory (BE, CN, BDF2) to round-off, and its bound vanishes; with a small
  space–time POD basis the bound is ≥ the true M-norm error at every step on held-out μ
  (effectivities asserted in a stated band); recursive doubling = the step-by-step loop.

FEM data: ``cases/heat_block.toml`` on a 12×12 mesh (169 DOFs), dt = 0.01, 20 steps.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest

import hybrid.fem  # noqa: F401  (MPI ordering)
from hybrid.core.case import parse_case
from hybrid.core.theta import AffineCoefficients
from hybrid.fem import MPI
from hybrid.fem.problems import create_problem
from hybrid.surrogate.errors import SurrogateError
from hybrid.surrogate.galerkin_time import GalerkinTimeROM, fill_recursion
from hybrid.surrogate.spacetime import (
    TwoLevelPOD,
    project,
    relative_spacetime_errors,
    spacetime_norms,
    spacetime_pod,
    time_weights,
)

ROOT = Path(__file__).resolve().parents[1]
SCHEMES = ("backward_euler", "crank_nicolson", "bdf2")


class HeatData:
    """FEM trajectories of the heat block and its static data (store ordering)."""

    def __init__(self, cells: int, scheme: str, dt: float, t_end: float, every: int = 1):
        text = (ROOT / "cases/heat_block.toml").read_text()
        for a, b in (("cells = 30", f"cells = {cells}"), ('"bdf2"', f'"{scheme}"'),
                     ("dt = 0.01", f"dt = {dt}"), ("t_end = 0.2", f"t_end = {t_end}"),
                     ("every = 2", f"every = {every}")):
            text = text.replace(a, b)
        self.case = parse_case(text, ROOT / "cases/heat_block.toml")
        self.problem = create_problem(self.case, MPI.COMM_SELF)
        self.static = self.problem.static_data()
        self.coefficients = AffineCoefficients.from_record(self.problem.model_record())
        self.lower = np.array(self.case.parameters.lower)
        self.upper = np.array(self.case.parameters.upper)
        self.scheme, self.dt = scheme, dt
        self.n_steps = round(t_end / dt)
        self._g = None

    def trajectory(self, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(times, U (n_t, N)) of the FEM at μ."""
        res = self.problem.solve_transient(np.asarray(mu, dtype=float), keep_fields=True)
        assert res.ok, res.reason
        o = self.problem.ordering
        return res.times, np.array([o.gather(f) for f in res.fields])

    def trajectories(self, mus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = [self.trajectory(m) for m in mus]
        return out[0][0], np.array([u for _, u in out])

    @property
    def shape(self) -> np.ndarray:
        """g with u0(μ) = μ_u0 · g (a first field divided by its amplitude)."""
        if self._g is None:
            mu = 0.5 * (self.lower + self.upper)
            _, U = self.trajectory(mu)
            self._g = U[0] / mu[-1]
        return self._g

    def sample(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return self.lower + (self.upper - self.lower) * rng.random((n, self.lower.size))

    def rom(self, modes: np.ndarray, bound: bool = True) -> GalerkinTimeROM:
        s, co = self.static, self.coefficients
        return GalerkinTimeROM(
            s.mass, s.affine_a, s.affine_f, s.dirichlet_dofs, modes, self.shape[None],
            theta_a=co.theta_a, theta_f=co.theta_f,
            theta_0=lambda mu: np.atleast_1d(np.asarray(mu)[..., -1]),
            scheme=self.scheme, dt=self.dt, n_steps=self.n_steps,
            mu_ref=np.sqrt(self.lower * self.upper) if bound else None)


@cache
def heat(scheme: str) -> HeatData:
    return HeatData(12, scheme, 0.01, 0.2)


@cache
def data(scheme: str):
    """30 training and 4 held-out trajectories."""
    h = heat(scheme)
    t, U = h.trajectories(h.sample(30, 1))
    mu_test = h.sample(4, 2)
    _, V = h.trajectories(mu_test)
    return t, U, mu_test, V


def m_norms(E: np.ndarray, M) -> np.ndarray:
    return np.sqrt(np.maximum(np.einsum("...i,...i->...", E, (M @ E.reshape(-1, E.shape[-1]).T)
                                        .T.reshape(E.shape)), 0.0))


# ----------------------------------------------------------------------------- space–time POD
def test_time_weights_integrate_linear_functions_exactly():
    t = np.array([0.0, 0.1, 0.25, 0.7, 1.0])
    w = time_weights(t)
    assert np.isclose(w.sum(), 1.0, rtol=1e-15)
    assert np.isclose(w @ (3 * t + 2), 1.5 + 2.0, rtol=1e-14)
    with pytest.raises(SurrogateError, match="strictly increasing"):
        time_weights(np.array([0.0, 0.2, 0.1]))


@pytest.mark.parametrize("fixed", [False, True])
def test_spacetime_pod_error_is_the_discarded_singular_values(fixed):
    """Σ_s ‖u_s − P u_s‖²_{M,T} = Σ_{k>n} σ_k² (direct), for every rank n."""
    t, U, _, _ = data("bdf2")
    h = heat("bdf2")
    M = h.static.mass
    g = h.shape[None] if fixed else None
    p = spacetime_pod(U, t, M, method="direct", fixed=g)
    assert p.n_fixed == (1 if fixed else 0)
    gram = p.modes @ (M @ p.modes.T)
    assert np.allclose(gram, np.eye(p.n_modes), atol=1e-10)
    total = float(np.sum(spacetime_norms(U, t, M) ** 2))
    s2 = p.singular_values ** 2
    for n in (p.n_fixed + 1, p.n_fixed + 3, p.n_fixed + 8, p.n_modes):
        Phi = p.modes[:n]
        R = U - project(Phi, U, M) @ Phi
        err2 = float(np.sum(spacetime_norms(R, t, M) ** 2))
        assert err2 == pytest.approx(np.sum(s2[n - p.n_fixed:]), rel=1e-6, abs=1e-13 * total)
    if fixed:   # the initial states are in the span: no error at t = 0
        c0 = project(p.modes[:1], U[:, 0], M) @ p.modes[:1]
        assert np.max(np.abs(c0 - U[:, 0])) < 1e-12 * np.max(np.abs(U[:, 0]))


def test_two_level_pod_obeys_its_bound_and_matches_direct():
    t, U, _, _ = data("crank_nicolson")
    M = heat("crank_nicolson").static.mass
    direct = spacetime_pod(U, t, M, method="direct", modes=10)
    two = spacetime_pod(U, t, M, method="two_level", modes=10, level1_rtol=1e-4)
    assert two.level1_tail > 0 and all(k < t.size for k in two.level1_ranks)
    total = float(np.sum(spacetime_norms(U, t, M) ** 2))
    assert two.total_energy == pytest.approx(total, rel=1e-12)
    for n in (2, 5, 10):
        e = {}
        for name, p in (("direct", direct), ("two", two)):
            R = U - project(p.modes[:n], U, M) @ p.modes[:n]
            e[name] = float(np.sqrt(np.sum(spacetime_norms(R, t, M) ** 2)))
        bound = np.sqrt(np.sum(two.singular_values[n:] ** 2)) + np.sqrt(two.level1_tail)
        assert e["two"] <= bound * (1 + 1e-8)
        assert e["direct"] <= e["two"] * (1 + 1e-9)          # direct is optimal
        assert e["two"] <= e["direct"] + 2 * np.sqrt(two.level1_tail)
    tight = spacetime_pod(U, t, M, method="two_level", modes=10, level1_rtol=1e-9)
    assert np.allclose(tight.singular_values[:10], direct.singular_values[:10], rtol=1e-6)


def test_spacetime_errors_and_shapes():
    t, U, _, _ = data("bdf2")
    M = heat("bdf2").static.mass
    assert np.allclose(relative_spacetime_errors(U, U, t, M), 0.0)
    assert np.allclose(relative_spacetime_errors(U, 0.5 * U, t, M), 0.5, rtol=1e-12)
    with pytest.raises(SurrogateError, match="shape"):
        spacetime_pod(U[:, :-1], t, M)
    with pytest.raises(SurrogateError, match="unknown space-time POD method"):
        spacetime_pod(U, t, M, method="svd")


# ----------------------------------------------------------------------------- Galerkin ROM
def full_basis(h: HeatData) -> np.ndarray:
    N = h.static.mass.shape[0]
    F = np.setdiff1d(np.arange(N), h.static.dirichlet_dofs)
    B = np.zeros((F.size, N))
    B[np.arange(F.size), F] = 1.0
    return B


@pytest.mark.parametrize("scheme", SCHEMES)
def test_full_basis_rom_is_the_fem_trajectory(scheme):
    h = heat(scheme)
    _, _, mu_test, V = data(scheme)
    rom = h.rom(full_basis(h))
    scale = np.max(np.abs(V))
    for mu, U in zip(mu_test[:2], V[:2], strict=True):
        c = rom.solve(mu)
        assert np.max(np.abs(rom.field(c) - U)) < 1e-10 * scale
        assert np.max(rom.bound(mu, c)) < 1e-10 * np.max(m_norms(U, h.static.mass))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_bound_holds_on_held_out_parameters(scheme):
    """Δ_n ≥ ‖u^n − u_r^n‖_M at every step; effectivity Δ/‖e‖ within [1, 50] after step 0."""
    h = heat(scheme)
    t, U, mu_test, V = data(scheme)
    p = spacetime_pod(U, t, h.static.mass, modes=5, fixed=h.shape[None])
    rom = h.rom(p.modes)
    M = h.static.mass
    effs = []
    for mu, Ut in zip(mu_test, V, strict=True):
        c = rom.solve(mu)
        err = m_norms(Ut - rom.field(c), M)
        b = rom.bound(mu, c)
        assert np.all(b[1:] >= err[1:] * (1 - 1e-10))
        # u0 is in the span of the basis (the FEM's u0 has sin(π) ≈ 1e-16 on the boundary)
        assert err[0] < 1e-12 * np.max(err) and b[0] < 1e-12 * np.max(err)
        effs.append(b[1:] / err[1:])
    effs = np.concatenate(effs)
    assert 1.0 <= effs.min() and effs.max() < 50.0, (effs.min(), effs.max())


def test_rom_error_is_quasi_optimal_and_decreases_with_the_basis():
    """Held-out space–time error of the ROM within 1.5× the best approximation in the basis
    (measured 1.1–1.35×) and decreasing with the rank."""
    h = heat("bdf2")
    t, U, mu_test, V = data("bdf2")
    M = h.static.mass
    p = spacetime_pod(U, t, M, fixed=h.shape[None])
    errs = []
    for n in (6, 20, 60):
        rom = h.rom(p.modes[:n], bound=False)
        C = np.array([rom.solve(m) for m in mu_test])
        e_rom = relative_spacetime_errors(V, rom.field(C), t, M)
        e_best = relative_spacetime_errors(V, project(p.modes[:n], V, M) @ p.modes[:n], t, M)
        assert np.all(e_best <= e_rom * (1 + 1e-12)) and np.all(e_rom <= 1.5 * e_best)
        errs.append(float(np.max(e_rom)))
    assert errs[0] > errs[1] > errs[2] and errs[2] < 5e-3, errs


@pytest.mark.parametrize("scheme", SCHEMES)
def test_doubling_equals_the_step_loop(scheme):
    h = heat(scheme)
    t, U, mu_test, _ = data(scheme)
    rom = h.rom(spacetime_pod(U, t, h.static.mass, modes=12).modes, bound=False)
    a, b = rom.solve(mu_test[0], "doubling"), rom.solve(mu_test[0], "sequential")
    assert np.max(np.abs(a - b)) < 1e-12 * np.max(np.abs(b))


def test_fill_recursion_is_matrix_powers():
    rng = np.random.default_rng(0)
    T = 0.3 * rng.standard_normal((4, 4))
    z = rng.standard_normal(4)
    Z = fill_recursion(z, T, 13)
    assert np.allclose(Z[12], z @ np.linalg.matrix_power(T, 12), rtol=1e-12, atol=1e-14)


def test_rom_refuses_bad_input():
    h = heat("bdf2")
    s, co = h.static, h.coefficients
    B = full_basis(h)[:4]
    kw = dict(theta_a=co.theta_a, theta_f=co.theta_f, theta_0=lambda m: m[-1:], dt=0.01,
              n_steps=3)
    with pytest.raises(SurrogateError, match="unknown time scheme"):
        GalerkinTimeROM(s.mass, s.affine_a, s.affine_f, s.dirichlet_dofs, B, h.shape[None],
                        scheme="rk4", **kw)
    with pytest.raises(SurrogateError, match="linearly dependent"):
        GalerkinTimeROM(s.mass, s.affine_a, s.affine_f, s.dirichlet_dofs, np.vstack([B, B]),
                        h.shape[None], scheme="bdf2", **kw)
    rom = GalerkinTimeROM(s.mass, s.affine_a, s.affine_f, s.dirichlet_dofs, B, h.shape[None],
                          scheme="bdf2", **kw)
    with pytest.raises(SurrogateError, match="without mu_ref"):
        rom.bound(h.sample(1, 0)[0])
    with pytest.raises(SurrogateError, match="unknown method"):
        rom.solve(h.sample(1, 0)[0], method="euler")


def test_two_level_keeps_the_projections_of_its_trajectories():
    t, U, _, _ = data("bdf2")
    h = heat("bdf2")
    M = h.static.mass
    tl = TwoLevelPOD(t, M, fixed=h.shape[None], level1_rtol=1e-9, keep_coefficients=True)
    for U_s in U:
        tl.add(U_s)
    p = tl.finish(modes=15)
    ref = project(p.modes, U, M)
    assert np.max(np.abs(tl.coefficients(p.modes) - ref)) < 1e-7 * np.max(np.abs(ref))


def test_bound_with_an_initial_projection_error():
    """u0 outside the basis: Δ_0 = ‖u0 − Φᵀc0‖_M exactly, and Δ_n ≥ ‖e^n‖_M for all n."""
    h = heat("backward_euler")
    t, U, mu_test, V = data("backward_euler")
    M = h.static.mass
    p = spacetime_pod(U[:, 1:], t[1:], M, modes=6)         # no fixed vector, no t0 rows
    rom = h.rom(p.modes)
    for mu, Ut in zip(mu_test[:2], V[:2], strict=True):
        c = rom.solve(mu)
        err = m_norms(Ut - rom.field(c), M)
        b = rom.bound(mu, c)
        assert err[0] > 1e-4 * np.max(err)
        assert b[0] == pytest.approx(err[0], rel=1e-8)
        assert np.all(b >= err * (1 - 1e-10))
