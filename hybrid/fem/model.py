"""The high-fidelity model as inference sees it: μ ↦ observations, fields and QoIs.

Wraps a case's FEM problem on a communicator, counts solves and the time spent in them,
and can commit a solved state to a snapshot store (the coupler's enrichment step) through
the same atomic writer as campaigns. Collective on ``comm``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hybrid.core.case import Case
from hybrid.errors import SolveFailed

__all__ = ["FEMModel", "FEMState", "SolveFailed"]


@dataclass
class FEMState:
    """One FEM solve: observations and QoIs on every rank, the field on the root rank."""

    mu: np.ndarray
    ok: bool
    reason: str
    wall_time: float
    observations: np.ndarray | None
    qoi: np.ndarray | None
    u: np.ndarray | None
    iterations: int


class FEMModel:
    """μ ↦ FEM solution of ``case`` on ``comm`` (default COMM_WORLD)."""

    def __init__(self, case: Case, comm=None, *, store: Path | None = None,
                 index_base: int | None = None, run_id: str = "inference"):
        from hybrid.fem import MPI
        from hybrid.fem.problems import create_problem

        self.case = case
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.problem = create_problem(case, self.comm)
        self.transient = bool(getattr(self.problem, "transient", False))
        """A transient case: a solve is a time loop, the observations are the sensors at
        ``[observations] times`` (time-major, ``case.observations.data_names()``), the QoIs
        and the field are per output time ((n_t, n_qoi), (n_t, N))."""
        self.n_solves = 0
        self.time = 0.0
        self.store = Path(store) if store is not None else None
        """When set, :meth:`observe` and :meth:`jacobian` commit every successful solve to
        this store (adaptive enrichment), numbered from ``index_base``."""
        self.index_base = index_base
        self.run_id = run_id
        self.committed: list[int] = []

    def _keep(self, state: FEMState) -> None:
        if self.store is not None and state.ok:
            index = None if self.index_base is None else self.index_base + len(self.committed)
            self.committed.append(self.commit(self.store, state, self.run_id, index))

    @property
    def observation_names(self) -> list[str]:
        return self.case.observations.data_names()

    def solve(self, mu: np.ndarray, *, field: bool = True) -> FEMState:
        """Solve at μ (checked against the parameter box); never raises on divergence."""
        mu = self.case.parameters.check(mu)
        t0 = time.perf_counter()
        if self.transient:
            traj, obs, u = self.problem.run_trajectory(mu, fields=field)
            wall = time.perf_counter() - t0
            self.n_solves += 1
            self.time += wall
            return FEMState(mu, traj.ok, traj.reason, wall, obs,
                            traj.qoi if traj.ok else None, u, traj.iterations)
        res = self.problem.solve(mu)
        wall = time.perf_counter() - t0
        self.n_solves += 1
        self.time += wall
        obs = qoi = u = None
        if res.ok:
            obs = self.problem.observe() if self.observation_names else np.zeros(0)
            qoi = self.problem.qoi()
            if field:
                u = self.problem.ordering.gather_function(self.problem.u)
        return FEMState(mu, res.ok, res.reason, wall, obs, qoi, u, res.iterations)

    def observe(self, mu: np.ndarray) -> np.ndarray:
        """Observations at μ; raises :class:`SolveFailed` if the solve fails."""
        return self._solved(mu).observations

    def _solved(self, mu) -> FEMState:
        """A successful solve at the root's μ, kept in the store when one is set."""
        s = self.solve(self._same_mu(mu), field=self.store is not None)
        if not s.ok:
            raise SolveFailed(f"FEM solve at mu={np.round(mu, 6).tolist()} failed: {s.reason}")
        self._keep(s)
        return s

    def _same_mu(self, mu) -> np.ndarray:
        """μ of the root rank on every rank (a replicated driver must solve one problem)."""
        mu = np.asarray(mu, dtype=float)
        return self.comm.bcast(mu, root=0) if self.comm.size > 1 else mu

    def jacobian(self, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Observations y(μ) and their Jacobian dy/dμ (m, P) by the tangent-linear model.

        One solve, then ``ModelProblem.observation_jacobian``: min(P, m) tangent-linear or
        adjoint solves on one factorisation of J; the rows of boundary fluxes,
        y_Γ = −F(u; g_Γ; μ), come from ``ModelProblem.flux_jacobian`` (they also depend on μ
        directly). Raises
        :class:`SolveFailed`. Collective on ``comm``; the result is on every rank.
        """
        if self.transient:
            return self._transient_jacobian(mu)
        s = self._solved(mu)
        t0 = time.perf_counter()
        J = self.problem.observation_jacobian(s.mu)
        self.time += time.perf_counter() - t0
        return s.observations, J

    def _transient_jacobian(self, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """y(μ) and dy/dμ of a transient case: one time loop with its P tangents per step.

        ``ModelProblem.transient_jacobian`` (:mod:`hybrid.fem.transient_tangent`): the exact
        derivative of the discrete scheme, on each step's own factorisation. The rows are
        those of the case's observation times (time-major, as :meth:`observe`). Counted as
        one solve; not committed to an enrichment store (the loop keeps no fields).
        """
        from hybrid.errors import SolveFailed

        mu = self.case.parameters.check(self._same_mu(mu))
        t0 = time.perf_counter()
        sens = self.problem.transient_jacobian(mu)
        self.time += time.perf_counter() - t0
        self.n_solves += 1
        if not sens.result.ok:
            raise SolveFailed(f"FEM solve at mu={np.round(mu, 6).tolist()} failed: "
                              f"{sens.result.reason}")
        k = self.problem.observation_steps
        P = mu.size
        return sens.values[k].reshape(-1), sens.jac[k].reshape(-1, P)

    def commit(self, store: Path, state: FEMState, run_id: str = "coupler",
               index: int | None = None) -> int | None:
        """Add a solved state to ``store`` as a new sample (root rank); return its index.

        ``index`` picks the sample number (default: the first free one at or above
        ``ENRICHMENT_BASE``); ranks that commit to one store independently (chains on
        COMM_SELF) must use disjoint ranges.
        """
        from hybrid.core.store import (
            ENRICHMENT_BASE,
            STATUS_FAILED,
            STATUS_OK,
            Sample,
            SnapshotStore,
            sample_path,
            store_lock,
            write_sample,
        )
        from hybrid.errors import StoreError

        if self.comm.rank == 0:
            with store_lock(Path(store)):
                if index is None:
                    index = max(ENRICHMENT_BASE, max(SnapshotStore(store).committed_indices(),
                                                     default=-1) + 1)
                elif sample_path(Path(store), index).exists():
                    raise StoreError(f"{store}: sample {index} exists; enrichment never "
                                     "overwrites a sample")
                write_sample(Path(store), Sample(
                    index=index, mu=state.mu, status=STATUS_OK if state.ok else STATUS_FAILED,
                    reason=state.reason, wall_time=state.wall_time,
                    u=state.u, qoi=state.qoi, run_id=run_id, ranks=self.comm.size,
                    iterations=state.iterations))
        return self.comm.bcast(index, root=0)

    def close(self) -> None:
        self.problem.destroy()

    @property
    def has_products(self) -> bool:
        """Whether the problem offers one-solve vector–Jacobian products (plug-in models)."""
        return callable(getattr(self.problem, "vjp", None)) and not self.transient

    def vjp(self, mu: np.ndarray, output: str, sens: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
        """(value, sᵀ J) of ``output`` ("observations" or "qoi").

        One solve at μ and ONE adjoint solve Jᵀλ = Σ s_i l_i. Raises :class:`SolveFailed`;
        collective; on every rank.
        """
        s = self._solved(mu)
        t0 = time.perf_counter()
        g = self.problem.vjp(s.mu, output, sens)
        self.time += time.perf_counter() - t0
        return (s.observations if output == "observations" else s.qoi), g

    def jvp(self, mu: np.ndarray, output: str, direction: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
        """(value, J v) of ``output``: one solve at μ and ONE tangent-linear solve.

        Raises :class:`SolveFailed`; collective; on every rank.
        """
        s = self._solved(mu)
        t0 = time.perf_counter()
        g = self.problem.jvp(s.mu, output, direction)
        self.time += time.perf_counter() - t0
        return (s.observations if output == "observations" else s.qoi), g

    @property
    def has_indicator(self) -> bool:
        """Whether the problem offers the residual indicator (plug-in models)."""
        return callable(getattr(self.problem, "indicator", None)) and not self.transient

    def indicator(self, mu: np.ndarray, field: np.ndarray | None,
                  inner_product: str = "h1") -> float:
        """The residual indicator η(μ) = ‖F(ũ; μ)‖_{X'} of a field ũ in store ordering.

        One residual assembly and one back-substitution with X factorised once
        (:mod:`hybrid.fem.indicator`); not a bound. ``field`` is read on the root rank.
        Collective on ``comm``; η is on every rank. Counted in ``n_indicators`` and
        ``indicator_time``.
        """
        if not self.has_indicator:
            from hybrid.errors import HybridError

            raise HybridError("this model has no residual indicator (plug-in models only)")
        t0 = time.perf_counter()
        mu = self._same_mu(mu)
        eta = self.problem.indicator(mu, field if self.comm.rank == 0 else None, inner_product)
        self.n_indicators = getattr(self, "n_indicators", 0) + 1
        self.indicator_time = getattr(self, "indicator_time", 0.0) + time.perf_counter() - t0
        return eta

    def qoi_jacobian(self, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """QoIs q(μ) and their Jacobian dq/dμ (q, P) by the tangent-linear model.

        One solve and P back-substitutions with the same factors (see
        ``ModelProblem.qoi_jacobian``); raises :class:`SolveFailed`. Collective on
        ``comm``; the result is on every rank.
        """
        s = self._solved(mu)
        t0 = time.perf_counter()
        J = self.problem.qoi_jacobian(s.mu)
        self.time += time.perf_counter() - t0
        return s.qoi, J
