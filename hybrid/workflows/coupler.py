"""The coupler: FEM-grade observations at μ from the cheapest model certified good enough.

Inference asks "what does the model predict at μ" thousands of times. The coupler answers
from a hierarchy of three models, each certified against the FEM, and falls back to the next
only where the previous one is not trusted:

1. the **surrogate** (POD-NN, a few µs): its coefficients c₁(μ);
2. the **reduced-basis** Galerkin model on the surrogate's basis (:class:`ReducedBasis`,
   tens of µs), enriched with every FEM solve the coupler runs;
3. the **FEM** (ms to s): the answer is exact; the snapshot is committed to the store and
   added to the reduced basis (the cheap update); :meth:`Coupler.retrain` rebuilds the
   surrogate from the enriched store (the full update, on demand).

**Trust.** For an affine model the residual bound Δ(μ; c) ≥ ‖u_h(μ) − Φᵀc‖_X and the dual
norms ν_i = ‖l_i‖_{X'} of the observation functionals certify every observation of a reduced
state: |y_i^FEM(μ) − y_i(μ)| ≤ δ_i(μ) = ν_i Δ(μ; c). The answer of a level is accepted when

    η(μ) = max_i δ_i(μ) / σ_i ≤ tol,

i.e. when its certified error is at most ``tol`` noise standard deviations on every
observation; so the tolerance is tied to the noise level of the data, and a change in the
log-likelihood it can cause is bounded by Σ_i (|r_i| + tol/2) tol with r_i the normalised
residuals. Models without an affine decomposition use the spread of an ensemble surrogate
(an indicator, not a bound) in place of δ_i, and have no reduced-basis level.

**The residual indicator (opt-in).** For a nonlinear or non-affine plug-in model there is no
bound. With ``trust="indicator"`` (case file: ``[coupler] trust = "indicator"``) the coupler
uses the FEM residual of the surrogate's field ũ, η(μ) = ‖F(ũ; μ)‖_{X'}
(:mod:`hybrid.fem.indicator`; one assembly and one back-substitution, X the POD inner
product of the surrogate), with the effectivity ε_s = η(μ_s)/‖u_h(μ_s) − ũ(μ_s)‖_X measured
at set-up on held-out snapshots: the surrogate's validation split of the store (samples not
used to fit the POD basis or the network weights; ``holdout="store"``, the default) or N fresh
FEM solves at scrambled Sobol points (``holdout=N``; not committed to the store). The error
of observation i is then *estimated* as δ_i = ν_i η(μ)/ε_min, ν_i = ‖l_i‖_{X'} and ε_min the
smallest held-out effectivity, and the answer is accepted when max_i δ_i/σ_i ≤ tol. It is not
a bound: such answers are labelled ``certified=False, basis="indicator"`` in the answers, the
switch records and :meth:`Coupler.report` (which gives the effectivity's min/median/max).
Without the opt-in, a model with neither a bound nor an ensemble is answered by the FEM at
every query.

**The calibrated band.** A surrogate trained with ``hybrid train --calibrate α`` carries a
split-conformal band δ_i(μ) = q·s_i(μ) (:mod:`hybrid.surrogate.calibration`; s_i the ensemble
standard deviation of observation i, or 1), calibrated on held-out FEM runs: for μ drawn
like the campaign's samples, P(|y_i^FEM(μ) − y_i(μ)| ≤ δ_i(μ) ∀i) ≥ 1 − α. The answer is
accepted when η = max_i δ_i(μ)/σ_i ≤ tol and labelled ``certified=False, basis="conformal"``;
:meth:`Coupler.report` states α, q and the coverage measured on the test runs. A coverage
is not a bound: it holds on average over μ, not at each μ.

**Precedence.** A rigorous bound wins (the band of an affine model is ignored); an explicit
``trust="indicator"`` opt-in comes next; then a calibrated band; then the raw ensemble
spread; else every answer is the FEM's.

**Transient cases.** A ``galerkin-time`` surrogate certifies whole trajectories: its
parabolic residual bound Δ_n ≥ ‖u_h(t_n) − Φᵀc^n‖_M holds at every step, so each
observation at each observation time obeys |y_h,i(t_j) − y_i(t_j)| ≤ ν_i Δ(t_j) with
ν_i = ‖l_i‖_{M'} (:mod:`hybrid.surrogate.transient`), and the answer is accepted when the
largest of these over the trajectory is at most ``tol`` σ. There is no reduced-basis
level (the basis is not enriched); FEM answers are committed to the store as trajectories.
Other transient surrogates have no bound: every answer is the FEM's.

**MPI.** The FEM runs on the communicator of the :class:`~hybrid.fem.model.FEMModel` (it is
collective there). Every rank of that communicator must call :meth:`Coupler.observe` with
the same μ; the decision is made on its root and broadcast, and so are the answer and the
snapshot used to enrich the reduced basis, so the ranks' models stay identical. This module
does not import DOLFINx: the FEM model is passed in.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hybrid.errors import HybridError, SolveFailed

log = logging.getLogger("hybrid.workflows.coupler")

LEVELS = ("surrogate", "reduced-basis", "fem")
TRUST = ("bound", "indicator")


class CouplerError(HybridError):
    """The coupler cannot be set up as asked (no error estimate, no FEM model, …)."""


@dataclass
class Answer:
    """The coupler's answer at one μ."""

    y: np.ndarray
    source: str
    """Which model answered: ``surrogate``, ``reduced-basis`` or ``fem``."""
    eta: float
    """Error of the answer in noise standard deviations: a certified bound when
    ``certified`` (0 for the FEM), else an estimate (conformal band, ensemble spread,
    residual indicator)."""
    etas: dict[str, float] = field(default_factory=dict)
    """η of every level that was asked."""
    certified: bool = True
    """Whether ``eta`` is a rigorous bound (or the answer the FEM's)."""
    basis: str = "fem"
    """What the trust rests on: ``bound``, ``indicator``, ``conformal`` (a calibrated band),
    ``ensemble`` or ``fem``."""


@dataclass
class _Counter:
    calls: int = 0
    time: float = 0.0


class Coupler:
    """Observations at μ: surrogate, reduced basis or FEM, whichever is cheapest and trusted.

    Args:
        surrogate: a :class:`~hybrid.surrogate.Surrogate` with observations.
        fem: the FEM model (:class:`hybrid.fem.model.FEMModel`), or None (then an untrusted
            query raises :class:`CouplerError`).
        sigma: noise standard deviations of the observations, (m,) in the order of
            ``surrogate.observation_names`` (or an :class:`~hybrid.inference.Observations`,
            matched by name).
        tol: trust threshold on η = max_i δ_i/σ_i.
        store: snapshot store to which FEM solves are committed (None: not kept).
        static: the store's static data (read from ``store`` when not given); needed for the
            reduced-basis level and for the observation dual norms.
        reduced_basis: use the reduced-basis level (affine models).
        enrich: add FEM snapshots to the reduced basis.
        index_base: first sample number for commits (disjoint per independent process).
        run_id: recorded with committed samples.
        trust: ``"bound"`` (certified bounds, else a calibrated conformal band, else an
            ensemble's spread; else FEM) or
            ``"indicator"`` (opt-in: the FEM residual indicator of a non-affine model, see
            the module docstring; needs ``fem`` with ``indicator`` and the store).
        holdout: where the indicator's effectivity is measured: ``"store"`` (the
            surrogate's validation snapshots) or a number of fresh FEM solves.
    """

    def __init__(self, surrogate, fem=None, *, sigma, tol: float = 0.1,
                 store: str | Path | None = None, static=None, reduced_basis: bool = True,
                 enrich: bool = True, index_base: int | None = None,
                 run_id: str = "coupler", trust: str = "bound",
                 holdout: str | int = "store"):
        from hybrid.surrogate.rb import ReducedBasis

        self.surrogate = surrogate
        self.fem = fem
        self.names = list(surrogate.observation_names)
        if not self.names:
            raise CouplerError("the surrogate predicts no observations: declare "
                               "[observations] in the case file and rebuild the store")
        if hasattr(sigma, "names") and hasattr(sigma, "sigma"):
            index = dict(zip(sigma.names, sigma.sigma, strict=True))
            sigma = [index.get(n, np.inf) for n in self.names]   # unobserved: never binding
        self.sigma = np.asarray(sigma, dtype=float).reshape(-1)
        if self.sigma.shape != (len(self.names),) or not np.all(self.sigma > 0):
            raise CouplerError(f"sigma must be {len(self.names)} positive values (one per "
                               f"observation {self.names})")
        if not (np.isfinite(tol) and tol > 0):
            raise CouplerError(f"tol must be a positive number, got {tol}")
        self.tol = float(tol)
        self.store = Path(store) if store is not None else None
        if static is None and self.store is not None:
            from hybrid.core.store import SnapshotStore

            static = SnapshotStore(self.store).static
        if static is not None and getattr(static, "observation_affine", None) is not None:
            # the certified bounds below assume μ-independent observation rows
            raise CouplerError("the coupler certifies point sensors and averages; boundary-"
                               "flux observations (affine in mu) are not supported by it yet "
                               "(use --stage2 fem or none)")
        if trust not in TRUST:
            raise CouplerError(f"trust must be one of {TRUST}, got {trust!r}")
        self.trust = trust
        self.holdout = holdout
        self.transient = bool(getattr(surrogate, "transient", False))
        self.affine = surrogate.estimator is not None or (
            self.transient and surrogate.kind == "galerkin-time"
            and surrogate.nu is not None and surrogate.rom.has_bound)
        self.rb = None
        self.nu = None
        self.effectivity: dict | None = None
        self.fem_only = False
        # a calibrated split-conformal band: used when there is no bound and no opt-in
        self.calibration = None if self.transient or self.affine or trust != "bound" \
            else getattr(surrogate, "calibration", None)
        if self.transient and trust == "indicator":
            raise CouplerError("trust = 'indicator' is not available for transient cases: "
                               "their certified bound is the galerkin surrogate's")
        if self.transient:
            # the galerkin-time bound covers every observation time; otherwise FEM answers
            self.fem_only = not self.affine
            if self.fem_only and fem is None:
                raise CouplerError("the coupler needs a certified transient surrogate (hybrid "
                                   "train --kind galerkin) or a FEM model")
        elif trust == "indicator":
            if self.affine:
                raise CouplerError("trust = 'indicator' is for models without a certified "
                                   "bound; this surrogate has one (use trust = 'bound')")
            self._setup_indicator(static)
        elif self.affine:
            if static is None:
                raise CouplerError("the coupler needs the store (static data) for the "
                                   "observation error bounds")
            self.rb = ReducedBasis(static, surrogate.spec, surrogate.modes,
                                   surrogate.estimator.mu_ref)
            self.nu = self.rb.obs_dual_norms
        elif self.calibration is None and (surrogate.kind != "pod-nn"
                                           or surrogate.members < 2):
            # no bound, no ensemble, no opt-in: every answer is the FEM's
            if fem is None:
                raise CouplerError("the coupler needs an error estimate: an affine model "
                                   "(residual bound), an ensemble surrogate (train with "
                                   "--members >= 2), the opted-in residual indicator "
                                   "([coupler] trust = 'indicator') or a FEM model")
            self.fem_only = True
            log.info("coupler: no certified bound for this model and the residual indicator "
                     "is not opted in ([coupler] trust = 'indicator'): every answer is FEM")
        self.use_rb = bool(reduced_basis and self.rb is not None)
        self.use_surrogate = not (self.use_rb and surrogate.kind == "galerkin") \
            and not self.fem_only
        self.enrich = enrich
        self.run_id = run_id
        self.index_base = index_base
        self.counts = {level: _Counter() for level in LEVELS}
        self.answered_by = dict.fromkeys(LEVELS, 0)
        self.n_queries = 0
        self.n_updates = 0
        self.update_time = 0.0
        self.committed: list[int] = []
        self.switches: list[dict] = []
        self.n_uncertified = 0
        self._last = None
        comm = getattr(fem, "comm", None)
        self._comm = comm if comm is not None and comm.size > 1 else None

    # ------------------------------------------------------------------ levels
    def _eta(self, delta: np.ndarray) -> float:
        return float(np.max(delta / self.sigma))

    def _surrogate(self, mu: np.ndarray) -> tuple[np.ndarray, float]:
        s = self.surrogate
        if self.transient:      # |y_i(t_j) − y_h,i(t_j)| ≤ ν_i Δ(t_j) at every time
            y, d = s.observe_with_bound(mu)
            return y, self._eta(d)
        if self.trust == "indicator":
            c = s.predict(mu)
            y = c @ s.observation_matrix.T
            eta = self.fem.indicator(mu, s.reconstruct(c), self.inner_product)
            return y, self._eta(self.nu * eta / self.effectivity["min"])
        if self.affine:
            c = s.predict(mu)
            y = c @ s.observation_matrix.T
            d = s.error_estimate(mu, relative=False, coefficients=c)
            return y, self._eta(self.nu * d)
        if self.calibration is not None:      # δ_i = q s_i(μ), coverage ≥ 1 − α
            return s.observe(mu), self._eta(s.band(mu))
        members = s.members_predict(mu)                      # (K, n)
        ys = members @ s.observation_matrix.T
        return ys.mean(axis=0), self._eta(ys.std(axis=0, ddof=1))

    def _reduced_basis(self, mu: np.ndarray) -> tuple[np.ndarray, float]:
        c = self.rb.solve(mu)
        return self.rb.observe(c), self._eta(self.nu * self.rb.bound(mu, c))

    def _timed(self, level: str, fn, mu):
        t0 = time.perf_counter()
        out = fn(mu)
        c = self.counts[level]
        c.calls += 1
        c.time += time.perf_counter() - t0
        return out

    # ------------------------------------------------------------------ the answer
    def evaluate(self, mu) -> Answer:
        """The answer at one μ (P,), with where it came from and its certified error.

        Collective on the FEM communicator when the FEM has to run.
        """
        mu = self.surrogate.space.check(np.asarray(mu, dtype=float))
        if mu.ndim != 1:
            raise CouplerError(f"evaluate takes one parameter vector, got shape {mu.shape}")
        etas: dict[str, float] = {}
        answer = None
        if self.use_surrogate:
            y, eta = self._timed("surrogate", self._surrogate, mu)
            etas["surrogate"] = eta
            if eta <= self.tol:
                basis = self.basis
                answer = Answer(y, "surrogate", eta, etas, certified=basis == "bound",
                                basis=basis)
        if answer is None and self.use_rb:
            y, eta = self._timed("reduced-basis", self._reduced_basis, mu)
            etas["reduced-basis"] = eta
            if eta <= self.tol:
                answer = Answer(y, "reduced-basis", eta, etas, certified=True, basis="bound")
        if self._comm is not None:   # one decision for all ranks: the root's
            answer = self._comm.bcast(answer, root=0)
        if answer is None:
            answer = Answer(self._fem(mu), "fem", 0.0, etas)
        self.n_queries += 1
        self.answered_by[answer.source] += 1
        if not answer.certified:
            self.n_uncertified += 1
        if answer.source != self._last:
            self.switches.append({"mu": mu.tolist(), "source": answer.source, "etas": etas,
                                  "query": self.n_queries, "certified": answer.certified,
                                  "basis": answer.basis})
            log.info("coupler: %s at mu=%s (eta %s, tol %g)", answer.source,
                     np.round(mu, 4).tolist(), {k: f"{v:.2g}" for k, v in etas.items()},
                     self.tol)
            self._last = answer.source
        return answer

    def observe(self, mu) -> np.ndarray:
        """FEM-grade observations at μ (order: ``names``)."""
        return self.evaluate(mu).y

    __call__ = observe

    def _fem(self, mu: np.ndarray) -> np.ndarray:
        if self.fem is None:
            raise CouplerError(f"the surrogate is not trusted at mu={np.round(mu, 6).tolist()} "
                               "and no FEM model was given")
        t0 = time.perf_counter()
        state = self.fem.solve(mu, field=True)
        c = self.counts["fem"]
        c.calls += 1
        c.time += time.perf_counter() - t0
        if not state.ok:
            raise SolveFailed(f"FEM solve at mu={np.round(mu, 6).tolist()} failed: "
                              f"{state.reason}")
        t0 = time.perf_counter()
        if self.store is not None:
            index = None
            if self.index_base is not None:
                index = self.index_base + len(self.committed)
            self.committed.append(self.fem.commit(self.store, state, self.run_id, index))
        if self.enrich and self.rb is not None:
            u = state.u if self._comm is None else self._comm.bcast(state.u, root=0)
            if self.rb.enrich(u):
                self.n_updates += 1
        self.update_time += time.perf_counter() - t0
        # observations in the surrogate's order (the FEM's are the case's: the same names)
        fem_names = list(getattr(self.fem, "observation_names", self.names))
        y = np.asarray(state.observations, dtype=float)
        return y[[fem_names.index(n) for n in self.names]] if fem_names != self.names else y

    # ------------------------------------------------------------------ the indicator
    @property
    def basis(self) -> str:
        """What a surrogate answer's trust rests on (bound > indicator > conformal > ensemble).

        One of ``bound``, ``indicator``, ``conformal``, ``ensemble`` or ``fem``.
        """
        if self.fem_only:
            return "fem"
        if self.trust == "indicator":
            return "indicator"
        if self.affine:
            return "bound"
        return "conformal" if self.calibration is not None else "ensemble"

    def _setup_indicator(self, static) -> None:
        """X, the observation dual norms ν_i and the held-out effectivity (collective)."""
        import scipy.sparse.linalg as spla

        from hybrid.surrogate.reductor import free_dofs, inner_product

        if self.fem is None or not getattr(self.fem, "has_indicator", False):
            raise CouplerError("trust = 'indicator' needs the FEM model of a plug-in (it "
                               "computes the residual of the surrogate's field)")
        if static is None:
            raise CouplerError("trust = 'indicator' needs the store (static data) for the "
                               "inner product and the held-out snapshots")
        ip = self.surrogate.meta.get("pod", {}).get("inner_product", "h1")
        if ip not in ("h1", "h10", "l2"):
            raise CouplerError(f"the residual indicator takes the h1, h10 or l2 inner "
                               f"product; the surrogate's POD used {ip!r}")
        self.inner_product = ip
        self.X = inner_product(static, ip).tocsr()
        F = free_dofs(self.X.shape[0], static.dirichlet_dofs)
        lu = spla.splu(self.X[F][:, F].tocsc())
        L = np.atleast_2d(static.observation_functionals)[:, F]     # (m, |F|), case order
        self.nu = np.sqrt(np.maximum(np.einsum("ij,ji->i", L, lu.solve(L.T.copy())), 0.0))
        mus, U = self._holdout_snapshots()
        s = self.surrogate
        eff = []
        for m, u in zip(mus, U, strict=True):
            ur = s.field(m, extrapolate=True)
            e = u - ur
            err = float(np.sqrt(max(e @ (self.X @ e), 0.0)))
            eta = self.fem.indicator(m, ur, ip)
            if err > 0:
                eff.append(eta / err)
        if not eff:
            raise CouplerError("the indicator's effectivity could not be measured (no held-out "
                               "snapshot with a nonzero surrogate error)")
        eff = np.array(eff)
        self.effectivity = {"min": float(eff.min()), "median": float(np.median(eff)),
                            "max": float(eff.max()), "n": int(eff.size),
                            "holdout": "store validation split" if self.holdout == "store"
                            else f"{int(self.holdout)} fresh FEM solves (Sobol)",
                            "inner_product": ip}
        log.info("coupler: residual indicator opted in; effectivity on %d held-out "
                 "snapshots min %.3g median %.3g max %.3g", eff.size, eff.min(),
                 np.median(eff), eff.max())

    def _holdout_snapshots(self) -> tuple[np.ndarray, np.ndarray]:
        """(μ, u_h) of the held-out snapshots (see ``holdout``)."""
        s = self.surrogate
        if self.holdout == "store":
            from hybrid.core.store import SnapshotStore

            recorded = s.meta.get("store", {}).get("path")
            path = self.store if self.store is not None else recorded
            vi = np.asarray(s.meta.get("store", {}).get("validation_indices", []), dtype=int)
            if vi.size < 3 or not path or not (Path(path) / "store.json").exists():
                raise CouplerError("the surrogate's store has fewer than 3 validation "
                                   "snapshots to measure the indicator's effectivity on; set "
                                   "[coupler] holdout = N (N fresh FEM solves)")
            mu, U = SnapshotStore(path).snapshots()
            return mu[vi], U[vi]
        n = int(self.holdout)
        if n < 1:
            raise CouplerError(f"holdout must be 'store' or a positive number, got {n}")
        mus = s.space.sample(n, "sobol", 12345)
        comm = getattr(self.fem, "comm", None)
        U = []
        for m in mus:
            st = self.fem.solve(m, field=True)
            if not st.ok:
                raise SolveFailed(f"held-out FEM solve at mu={np.round(m, 6).tolist()} "
                                  f"failed: {st.reason}")
            U.append(comm.bcast(st.u, root=0) if comm is not None and comm.size > 1
                     else st.u)
        return mus, np.array(U)

    # ------------------------------------------------------------------ bookkeeping
    @property
    def n_fem(self) -> int:
        return self.counts["fem"].calls

    def report(self) -> dict:
        """Counts, times and switches (JSON-able)."""
        bound = {"bound": "residual (rigorous)", "ensemble": "ensemble spread (indicator)",
                 "indicator": "FEM residual indicator ||F(u_r; mu)||_X' / min effectivity "
                              "(opted in; not a bound)",
                 "fem": "none: every answer is FEM (no bound; indicator not opted in)"}
        cal = self.calibration
        if cal is not None:
            bound["conformal"] = (f"split-conformal band q*s_i(mu) (alpha {cal.alpha:g}: "
                                  f"coverage >= {cal.nominal:.3g} for mu drawn like the "
                                  "campaign's samples; not a bound)")
        return {"tol": self.tol, "criterion": "max_i delta_i/sigma_i <= tol",
                "trust": self.trust, "basis": self.basis, "bound": bound[self.basis],
                "certified": self.basis in ("bound", "fem"),
                "uncertified_answers": self.n_uncertified,
                "effectivity": self.effectivity,
                "calibration": None if cal is None else {
                    "alpha": cal.alpha, "q": cal.q, "n_cal": cal.n_cal, "scale": cal.scale,
                    "nominal_coverage": cal.nominal, "coverage": cal.coverage,
                    "coverage_se": cal.coverage_se, "n_test": cal.n_test},
                "levels": [lv for lv, on in zip(LEVELS, (self.use_surrogate, self.use_rb, True),
                                                strict=True) if on],
                "queries": self.n_queries,
                "calls": {k: c.calls for k, c in self.counts.items()},
                "time_s": {k: c.time for k, c in self.counts.items()},
                "answered_by": dict(self.answered_by),
                "reduced_basis_size": None if self.rb is None else self.rb.n,
                "updates": self.n_updates, "update_time_s": self.update_time,
                "committed_samples": [i for i in self.committed if i is not None],
                "switches": len(self.switches)}

    def forward_model(self):
        """The coupler as an inference :class:`~hybrid.inference.ForwardModel`."""
        from hybrid.inference import ForwardModel

        return ForwardModel(self.observe, names=self.names, failures=(SolveFailed,),
                            name="coupler")

    def retrain(self, options=None):
        """Full update: rebuild the surrogate from the (enriched) store; returns it."""
        if self.store is None:
            raise CouplerError("retrain needs the store")
        from hybrid.surrogate.build import BuildOptions, build_surrogate

        cal = getattr(self.surrogate, "calibration", None)
        opts = options or BuildOptions(kind=self.surrogate.kind,
                                       calibrate=None if cal is None else cal.alpha)
        sur, _ = build_surrogate(self.store, opts)
        self.__init__(sur, self.fem, sigma=self.sigma, tol=self.tol, store=self.store,
                      reduced_basis=self.use_rb, enrich=self.enrich, trust=self.trust,
                      holdout=self.holdout,
                      index_base=None if self.index_base is None
                      else self.index_base + len(self.committed), run_id=self.run_id)
        return sur
