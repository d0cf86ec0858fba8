"""Synthetic snapshot stores for the surrogate tests: a P1 thermal block in numpy/scipy.

The surrogate side must not need DOLFINx, so its tests build their stores with a small
finite-element assembly of their own: P1 triangles on a structured mesh of the unit square
(each cell split along its diagonal), conductivity μ_k on block k = ix + B·iy, u = 0 on the
boundary, source 1 — the same problem as ``hybrid/model/library/thermal_block.py``, with the
same affine decomposition (A_q = ∫_{Ω_q} ∇u·∇v, Σ_q A_q = stiffness) and QoIs. Boundary fluxes
are the residual-based ones of ``hybrid/fem/observations.py`` (outward, corner DOFs weighted
1/2 per side).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from hybrid.core.parameters import Parameter, ParameterSpace
from hybrid.core.store import Sample, StaticData, init_store, write_sample, write_static


@dataclass
class BlockFEM:
    """P1 thermal block on a cells×cells mesh with blocks×blocks conductivities."""

    cells: int = 16
    blocks: int = 2

    def __post_init__(self):
        m = self.cells
        h = 1.0 / m
        xs = np.linspace(0.0, 1.0, m + 1)
        X, Y = np.meshgrid(xs, xs)                         # row-major: index = i + (m+1) j
        self.points = np.column_stack([X.ravel(), Y.ravel()])
        idx = np.arange((m + 1) ** 2).reshape(m + 1, m + 1)
        a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
        c, d = idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
        self.cells_ = np.vstack([np.column_stack([a, b, d]), np.column_stack([a, d, c])])
        N = self.points.shape[0]
        mid = self.points[self.cells_].mean(axis=1)
        B = self.blocks
        ix = np.clip(np.floor(mid[:, 0] * B).astype(int), 0, B - 1)
        iy = np.clip(np.floor(mid[:, 1] * B).astype(int), 0, B - 1)
        block = ix + B * iy
        rows, cols, kv, mv, fv = [], [], [], [], np.zeros(N)
        area = 0.5 * h * h
        for t in self.cells_:
            p = self.points[t]
            M = np.array([[1, *p[0]], [1, *p[1]], [1, *p[2]]])
            grads = np.linalg.inv(M)[1:, :]                # columns: ∇φ_i
            kv.append(area * grads.T @ grads)
            mv.append(area / 12.0 * (np.ones((3, 3)) + np.eye(3)))
            rows.append(np.repeat(t, 3))
            cols.append(np.tile(t, 3))
            fv[t] += area / 3.0
        rows, cols = np.concatenate(rows), np.concatenate(cols)
        kv = np.array(kv).reshape(-1, 9)
        mv = np.array(mv).reshape(-1)
        self.affine_a = []
        for q in range(B * B):
            sel = np.repeat(block == q, 9)
            self.affine_a.append(sp.csr_matrix((kv.ravel()[sel], (rows[sel], cols[sel])),
                                               shape=(N, N)))
        self.stiffness = sp.csr_matrix(sum(self.affine_a))
        self.mass = sp.csr_matrix((mv, (rows, cols)), shape=(N, N))
        self.f = fv
        on_edge = (np.isclose(self.points[:, 0], 0) | np.isclose(self.points[:, 0], 1)
                   | np.isclose(self.points[:, 1], 0) | np.isclose(self.points[:, 1], 1))
        self.dirichlet = np.flatnonzero(on_edge)
        self.free = np.flatnonzero(~on_edge)
        w = np.zeros((B * B, N))
        for q in range(B * B):
            sel = block == q
            for t in self.cells_[sel]:
                w[q, t] += area / 3.0
        self.qoi = np.vstack([fv, w[0] * B * B])          # mean, block_mean_0
        self.n_dofs = N

    def solve(self, mu: np.ndarray) -> np.ndarray:
        A = sum(m * Aq for m, Aq in zip(mu, self.affine_a, strict=True)).tocsr()
        F = self.free
        u = np.zeros(self.n_dofs)
        u[F] = spla.spsolve(A[F][:, F].tocsc(), self.f[F])
        return u

    def flux_weight(self, sides: list[str]) -> np.ndarray:
        """g_Γ: 1 on the boundary DOFs of the sides, 1/2 at a corner shared with another side."""
        on = {f"{'xy'[a]}{int(v)}": np.isclose(self.points[:, a], v)
              for a in (0, 1) for v in (0.0, 1.0)}
        count = np.sum(list(on.values()), axis=0)
        return np.sum([on[s] for s in sides], axis=0) / np.maximum(count, 1)

    def flux(self, u: np.ndarray, mu: np.ndarray, sides: list[str]) -> np.ndarray:
        """Outward flux g_Γᵀ f − g_Γᵀ A(μ) u of field(s) u (N,) or (S, N) at μ (P,) or (S, P)."""
        g = self.flux_weight(sides)
        gA = np.array([Aq.T @ g for Aq in self.affine_a])              # (Q_a, N)
        Au = np.einsum("...q,...q->...", np.asarray(mu), np.asarray(u) @ gA.T)
        return g @ self.f - Au

    def static(self, affine: bool = True, fluxes: dict | None = None) -> StaticData:
        obs = self.qoi[:1] * 2.0
        obs_a = obs_f = None
        if fluxes:
            Qa, m = len(self.affine_a), 1 + len(fluxes)
            obs = np.vstack([obs, np.zeros((len(fluxes), self.n_dofs))])
            rows = [sp.csr_matrix((Qa, self.n_dofs))]                   # twice_mean: B = 0
            obs_f = np.zeros((m, 1))
            for i, sides in enumerate(fluxes.values()):
                g = self.flux_weight(sides)
                rows.append(sp.csr_matrix(np.array([-(Aq.T @ g) for Aq in self.affine_a])))
                obs_f[1 + i, 0] = g @ self.f
            obs_a = sp.vstack(rows, format="csr")
        return StaticData(points=self.points, cells=self.cells_, cell_type="triangle",
                          mass=self.mass, stiffness=self.stiffness,
                          dirichlet_dofs=self.dirichlet,
                          affine_a=list(self.affine_a) if affine else [],
                          affine_f=self.f[None, :] if affine else np.zeros((0, self.n_dofs)),
                          qoi_functionals=self.qoi,
                          observation_functionals=obs,
                          observation_affine=obs_a, observation_affine_f=obs_f)


def space(blocks: int) -> ParameterSpace:
    return ParameterSpace(tuple(Parameter(f"mu_{k}", 0.1, 1.0) for k in range(blocks**2)))


def make_store(path: Path, fem: BlockFEM, mu: np.ndarray, *, affine: bool = True,
               case_name: str = "tb_synthetic", fluxes: dict | None = None) -> Path:
    """Write a store with the solutions at ``mu`` (S, P); ``fluxes``: {name: [sides]} adds
    boundary-flux observations after ``twice_mean``."""
    B = fem.blocks
    physics = {"model": "thermal_block", "degree": 1, "blocks": B, "source": 1.0}
    init_store(path, case_name=case_name, case_text="# synthetic\n", physics=physics,
               space=space(B), qoi=["mean", "block_mean_0"], n_dofs=fem.n_dofs,
               solver_options={}, versions={},
               extra={"observations": ["twice_mean", *(fluxes or {})]})
    write_static(path / "static.h5", fem.static(affine, fluxes))
    for i, m in enumerate(mu):
        u = fem.solve(m)
        write_sample(path, Sample(index=i, mu=m, status="ok", reason="", wall_time=0.0, u=u,
                                  qoi=fem.qoi @ u))
    return path


def store2(root: Path, fem: BlockFEM) -> Path:
    """2×2 blocks, 40 Sobol snapshots."""
    return make_store(root / "store", fem, space(2).sample(40, "sobol", 11))


def held_out_set2(fem: BlockFEM) -> tuple[np.ndarray, np.ndarray]:
    """30 random held-out parameters and their FEM solutions."""
    mu = space(2).sample(30, "random", 99)
    return mu, np.array([fem.solve(m) for m in mu])
