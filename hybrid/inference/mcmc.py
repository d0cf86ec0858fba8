"""Posterior sampling: delayed-acceptance Metropolis–Hastings with an adaptive proposal.

Modes (``sample(..., mode=...)``):

* ``"delayed-acceptance"`` (Christen & Fox, 2005; exact): a proposal y from x is first
  screened with the cheap posterior π*,

      stage 1:  accept with α₁ = min(1, π*(y) / π*(x)),

  and only if it passes is the expensive posterior π evaluated,

      stage 2:  accept with α₂ = min(1, π(y) π*(x) / (π(x) π*(y))).

  The composite kernel satisfies detailed balance with respect to π (the proposal is a
  symmetric random walk), so the chain targets the *exact* posterior whatever the cheap
  model's error; a poor surrogate costs acceptance, not correctness. Expensive evaluations
  = stage-1 acceptances (+ one per chain at the start).

  **More levels** (``intermediate=[π₂, …, π_{L−1}]``): densities π₁ = π* (cheapest), π₂, …,
  π_L = π (the target), e.g. surrogate → coarse-mesh FEM → fine FEM. A proposal that passed
  stage k−1 is evaluated at level k and accepted there with

      stage k:  α_k = min(1, π_k(y) π_{k−1}(x) / (π_k(x) π_{k−1}(y))),   k = 2, …, L,

  and the chain moves only when every stage accepts; a rejection at any stage keeps x, and
  the levels above it are not evaluated. *Why this is exact for π_L* (induction on Christen &
  Fox's argument): let K₁ be the stage-1 Metropolis–Hastings kernel, reversible for π₁, and
  K_k the kernel "draw y from K_{k−1}; if y ≠ x accept it with α_k". Suppose K_{k−1} is
  reversible for π_{k−1}: π_{k−1}(x) K_{k−1}(x, y) = π_{k−1}(y) K_{k−1}(y, x) for y ≠ x.
  Then, for y ≠ x,

      π_k(x) K_k(x, y) = π_k(x) K_{k−1}(x, y) α_k(x, y)
                       = min(π_k(x) K_{k−1}(x, y), π_k(y) π_{k−1}(x) K_{k−1}(x, y) / π_{k−1}(y))
                       = min(π_k(x) K_{k−1}(x, y), π_k(y) K_{k−1}(y, x)),

  which is symmetric in x and y: K_k is reversible for π_k (the mass it does not move stays
  on the diagonal, which detailed balance does not constrain). By induction K_L is reversible
  for π_L, whatever the errors of π₁ … π_{L−1}; they cost acceptance, not correctness. (The
  chain can reach only where every π_k > 0: each level must be positive wherever π_L is.)
  Every level's values at the current state are kept, so a stage costs one evaluation of its
  level at y: level-k evaluations = stage-(k−1) passes (+ one per chain at the start). With
  two levels this is the two-stage algorithm above, draw for draw (the same random numbers).

  **Subchains** (``subchain=n > 1``, random-walk kernel; Lykkegaard et al., "Multilevel
  delayed acceptance MCMC", SIAM/ASA JUQ 2023): the proposal handed to level 2 is the end
  of n random-walk Metropolis steps on π₁ from x, and it passes stage 1 when the subchain
  moved. The n-step kernel K₁ⁿ is reversible for π₁ (a power of a π₁-reversible kernel is:
  π₁(x)K₁²(x, y) = ∫ π₁(x)K₁(x, s)K₁(s, y) ds = ∫ K₁(s, x)π₁(s)K₁(s, y) ds
  = ∫ K₁(s, x)K₁(y, s) ds · π₁(y) = π₁(y)K₁²(y, x), and so on), so the induction above holds
  unchanged with K₁ⁿ in place of K₁: the chain is still exact for π_L. The point: with a
  cheap π₁ close to π_L, a long subchain makes the proposal nearly an independent draw from
  π₁, which the upper levels accept with probability ≈ 1 — each expensive evaluation then
  buys nearly one independent sample instead of one random-walk step. The step size adapts
  (burn-in only) to the subchain's own acceptance rate; cheap evaluations = n per iteration.
* ``"surrogate-only"`` (fast, **not exact**): adaptive Metropolis on π* alone; the result is
  labelled ``exact = False`` and samples the surrogate's posterior, bias included.
* ``"metropolis"`` (exact, expensive): adaptive Metropolis on π alone, for reference.

Densities are those of the unconstrained z (:meth:`Posterior.log_density`, log-Jacobian
included); samples are reported in μ.

**Kernels.** ``kernel="rw"``: the random walk y = z + √h L ε, h = λ·2.38²/d. ``kernel="mala"``:
the preconditioned Langevin proposal y = z + (h/2) Σ ∇log π₁(z) + √h L ε, h = λ·1.65²/d^⅓
(Roberts & Rosenthal 1998), with the proposal densities in the stage-1 ratio; π₁ is the
first-stage density (the cheap posterior, whose gradient comes from torch). Delayed acceptance
stays exact with it: stage 1 is a Metropolis–Hastings kernel reversible for π*, and the
stage-2 ratio π(y)π*(x)/(π(x)π*(y)) corrects any such kernel to π (Christen & Fox 2005).

**Adaptation**, during burn-in **only** (Haario, Saksman & Tamminen 2001, with the global
scale of Andrieu & Thoms 2008, Alg. 4): log λ follows a Robbins–Monro recursion towards the
acceptance rate α* (0.44 in 1-D falling to 0.234 for d ≥ 5 for the random walk, 0.574 for
MALA); with ``adapt="covariance"`` Σ is, every ``adapt_every`` iterations, the empirical
covariance S_n of the chain's states from the second quarter of burn-in on, **shrunk toward
Σ₀** with n₀ = 10·P pseudo-observations, Σ_n = (n S_n + n₀ Σ₀)/(n + n₀)
(:func:`~hybrid.inference.proposal.shrunk_covariance`): it can never lose rank, whatever the
chain did (the raw empirical covariance of a chain that moved a handful of times has rank
< P, and such a chain explores only an affine slice: a reducible kernel). Σ₀ is
``proposal_cov``, normally the bound-safe Laplace covariance of
:func:`~hybrid.inference.proposal.laplace_proposal`. After burn-in λ and Σ are frozen. Why
not a diminishing adaptation that runs forever: with the kernel frozen, the retained draws
come from one time-homogeneous MH (or DA) kernel, so its invariance, the DA correctness
argument and the ESS/R̂ diagnostics hold as for any MH chain, with no appeal to the
ergodicity theory of adaptive MCMC. A step whose proposal equals the current state to the
last bit is not counted as a move; chains that never moved, or whose proposal lost rank, are
reported by :meth:`MCMCResult.problems`.

**Starts**: with ``x0`` a single point (the MAP) and ``start_cov``, chains start
over-dispersed at z ~ N(z(x0), 4·start_cov), so that R̂ can detect chains that have not
converged (all chains started at one point hide it).

**Chains** are independent (seeds spawned from one ``SeedSequence``; each chain adapts on
its own history, so chains stay independent for R̂). The chains of a process advance in
lockstep so that one model call evaluates all their proposals as a batch (a surrogate
answers a batch at the cost of one query). With ``comm`` (an mpi4py communicator, duck-typed:
``rank``, ``size``, ``gather``) chain c runs on rank c mod size and the results are gathered
on rank 0; the other ranks return None. Each rank uses its own model instances.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hybrid.inference.diagnostics import summarize
from hybrid.inference.errors import InferenceError
from hybrid.inference.posterior import Posterior
from hybrid.inference.proposal import check_spd, dispersed_starts, shrunk_covariance

MODES = ("delayed-acceptance", "surrogate-only", "metropolis")
ADAPT = ("covariance", "scale", "none")
KERNELS = ("rw", "mala")


def _jsonable(x):
    from hybrid.inference.map import _jsonable as j

    return j(x)


def target_acceptance(d: int) -> float:
    """Asymptotically optimal random-walk acceptance rate for a d-dimensional Gaussian."""
    return {1: 0.44, 2: 0.35, 3: 0.31, 4: 0.28}.get(d, 0.234)


@dataclass
class MCMCResult:
    """Draws (chains, n, P) in μ after burn-in, with diagnostics, counts and labels."""

    mode: str
    exact: bool
    names: list[str]
    samples: np.ndarray
    log_density: np.ndarray
    """log π_z of each retained draw (the exact target; π* in surrogate-only mode)."""
    counts: dict[str, np.ndarray]
    """Per chain: proposals, stage1 (passed the screening; = proposals without it), accepted,
    in the sampling phase; the same ``*_total`` over the whole run, and n_cheap, n_expensive
    (model evaluations of the whole run, burn-in and starting points included)."""
    burn_in: int
    thin: int
    seed: int
    wall_time: float
    proposal_cov: np.ndarray
    """Final (frozen) proposal covariances in z, (chains, P, P)."""
    settings: dict = field(default_factory=dict)
    accepted: np.ndarray | None = None
    """(chains, n): whether the step that produced each retained draw moved the chain."""
    stage1: np.ndarray | None = None
    """(chains, n): whether that step's proposal passed the first stage."""
    levels: list[str] | None = None
    """Multi-level delayed acceptance: the model of each level, cheapest first, target last
    (None for one or two levels). ``counts`` then also has ``stage2`` … ``stage{L−1}`` (and
    ``*_total``), the passes of the intermediate stages, and ``n_intermediate`` (chains, L−2),
    the evaluations of the intermediate levels."""
    stages: np.ndarray | None = None
    """(chains, n, L−1) with levels: whether that step's proposal passed stages 1 … L−1."""

    @property
    def n_levels(self) -> int:
        """Levels of the kernel: L for delayed acceptance, 1 otherwise."""
        if self.levels is not None:
            return len(self.levels)
        return 2 if self.mode == "delayed-acceptance" else 1

    def evaluations(self) -> list[int]:
        """Model evaluations of the whole run per level, cheapest first (target last)."""
        c = self.counts
        if self.mode == "surrogate-only":
            return [int(np.sum(c["n_cheap"]))]
        if self.mode == "metropolis":
            return [int(np.sum(c["n_expensive"]))]
        mid = c.get("n_intermediate")
        mid = [] if mid is None else [int(v) for v in np.sum(mid, axis=0)]
        return [int(np.sum(c["n_cheap"])), *mid, int(np.sum(c["n_expensive"]))]

    def problems(self) -> list[str]:
        """What makes these draws untrustworthy, one line each (empty when none is seen).

        A chain that never moved in the sampling phase, a frozen proposal that lost rank
        (eigenvalue ratio at most 1e-12), R̂ > 1.01 and a bulk ESS below 100 per chain
        (Vehtari et al. 2021) are reported; :meth:`to_dict` carries them as ``warnings``.
        """
        out = []
        moved = self.counts["accepted"]
        for c in np.nonzero(moved == 0)[0]:
            out.append(f"chain {int(c)} never moved in {int(self.counts['proposals'][c])} "
                       "steps (its draws are one point)")
        for c in range(self.proposal_cov.shape[0]):
            ev = np.linalg.eigvalsh(self.proposal_cov[c])
            if not ev[0] > 1e-12 * ev[-1]:
                out.append(f"chain {c}: the proposal covariance lost rank "
                           f"(eigenvalue ratio {ev[0] / ev[-1]:.1e})")
        summ = self.summary()
        bad_r = [n for n, v in summ.items() if not v["rhat"] <= 1.01]
        if self.chains == 1:
            out.append("one chain: R-hat needs several chains to see non-convergence")
        elif bad_r:
            out.append(f"R-hat > 1.01 for {', '.join(bad_r)}: chains disagree (run longer)")
        low = [n for n, v in summ.items() if not v["ess_bulk"] >= 100 * self.chains]
        if low:
            out.append(f"bulk ESS < {100 * self.chains} (100 per chain) for "
                       f"{', '.join(low)}: too few effective draws")
        return out

    @property
    def chains(self) -> int:
        return self.samples.shape[0]

    def draws(self) -> np.ndarray:
        """All retained draws pooled, (chains·n, P)."""
        return self.samples.reshape(-1, self.samples.shape[-1])

    def summary(self) -> dict[str, dict[str, float]]:
        return summarize(self.samples, self.names)

    def acceptance(self) -> dict[str, float | None]:
        """Acceptance rates of the sampling phase: stage 1, stage 2 (of stage-1 passes), all."""
        c = {k: float(np.sum(v)) for k, v in self.counts.items()}
        prop = c["proposals"]
        out = {"overall": c["accepted"] / prop if prop else None}
        if self.mode == "delayed-acceptance":
            L = self.n_levels
            out["stage1"] = c["stage1"] / prop if prop else None
            for k in range(2, L + 1):   # stage k: of the proposals that passed stage k − 1
                num, den = c["accepted" if k == L else f"stage{k}"], c[f"stage{k - 1}"]
                out[f"stage{k}"] = num / den if den else None
        return out

    def level_report(self) -> list[dict]:
        """Per level: model, evaluations, evaluations per effective sample, stage acceptance.

        Evaluations per effective sample = evaluations of the whole run / min ESS (the
        ``expensive_per_effective_sample`` of the target level); the stage acceptance is of
        the proposals that reached the stage.
        """
        names = self.levels or (["cheap", "expensive"] if self.n_levels == 2 else
                                ["cheap" if self.mode == "surrogate-only" else "expensive"])
        min_ess = min((s["ess"] for s in self.summary().values()), default=float("nan"))
        acc = self.acceptance()
        out = []
        for k, (name, n) in enumerate(zip(names, self.evaluations(), strict=True), start=1):
            rate = acc.get(f"stage{k}") if self.n_levels > 1 else acc["overall"]
            out.append({"level": k, "model": name, "evaluations": n,
                        "per_effective_sample": n / min_ess if min_ess > 0 else None,
                        "stage_acceptance": rate})
        return out

    def to_dict(self) -> dict:
        """JSON-able report: labels, per-parameter summary, R̂/ESS, counts, rates, time."""
        summ = self.summary()
        n_exp = int(np.sum(self.counts["n_expensive"]))
        min_ess = min((s["ess"] for s in summ.values()), default=float("nan"))
        d = {"mode": self.mode, "exact": self.exact, "names": self.names,
             "chains": self.chains, "draws_per_chain": self.samples.shape[1],
             "burn_in": self.burn_in, "thin": self.thin, "seed": self.seed,
             "parameters": summ,
             "max_rhat": max((s["rhat"] for s in summ.values()), default=float("nan")),
             "min_ess": min_ess,
             "counts": {"cheap": int(np.sum(self.counts["n_cheap"])), "expensive": n_exp,
                        **({"intermediate": self.evaluations()[1:-1]}
                           if self.levels is not None else {}),
                        "per_chain": {k: v.tolist() for k, v in self.counts.items()}},
             "acceptance": self.acceptance(),
             "expensive_per_effective_sample": n_exp / min_ess if min_ess > 0 else None,
             **({"levels": self.level_report()} if self.levels is not None else {}),
             "ess_per_second": min_ess / self.wall_time if self.wall_time > 0 else None,
             "warnings": self.problems(),
             "wall_time_s": self.wall_time, "settings": self.settings}
        return _jsonable(d)

    def to_inference_data(self, observed: dict[str, np.ndarray] | None = None,
                          attrs: dict | None = None):
        """The draws as an ArviZ DataTree.

        Groups: posterior (μ, one variable per parameter), sample_stats (lp, accepted,
        stage1_accepted) and, when given, the observed data.
        """
        import arviz_base as azb

        groups = {"posterior": {n: self.samples[:, :, j] for j, n in enumerate(self.names)},
                  "sample_stats": {"lp": self.log_density}}
        if self.accepted is not None:
            groups["sample_stats"]["accepted"] = self.accepted
            groups["sample_stats"]["stage1_accepted"] = self.stage1
        if self.stages is not None:
            for k in range(2, self.stages.shape[-1] + 1):
                groups["sample_stats"][f"stage{k}_accepted"] = self.stages[:, :, k - 1]
        if observed:
            groups["observed_data"] = {k: np.asarray(v) for k, v in observed.items()}
        dt = azb.from_dict(groups)
        meta = {"mode": self.mode, "exact": int(self.exact), "burn_in": self.burn_in,
                "thin": self.thin, "seed": self.seed,
                "n_expensive": int(np.sum(self.counts["n_expensive"])),
                "n_cheap": int(np.sum(self.counts["n_cheap"])), **(attrs or {})}
        if self.levels is not None:
            meta["levels"] = self.levels
            meta["n_intermediate"] = self.evaluations()[1:-1]
        for k, v in meta.items():
            dt["posterior"].attrs[k] = v if isinstance(v, int | float | str) else json.dumps(v)
        return dt

    def save_netcdf(self, path: str | Path, observed: dict[str, np.ndarray] | None = None,
                    attrs: dict | None = None) -> Path:
        """Write :meth:`to_inference_data` as netCDF-4 (``xarray.open_datatree`` reads it)."""
        path = Path(path)
        self.to_inference_data(observed, attrs).to_netcdf(path, engine="h5netcdf")
        return path

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def save_npz(self, path: str | Path) -> Path:
        """The raw draws (μ) and log densities, with the parameter names."""
        path = Path(path)
        np.savez(path, samples=self.samples, log_density=self.log_density,
                 names=np.array(self.names))
        return path


def _initial_z(post: Posterior, x0, start_cov, start_scale, chains: list[int],
               rng_init: list[np.random.Generator]):
    """Starting points in z, (C, P), and a function that redraws one start (or None)."""
    t = post.transform
    if x0 is not None:
        x0 = np.asarray(x0, dtype=float)
        if x0.shape[-1] != t.dim or x0.ndim > 2:
            raise InferenceError(f"x0: expected {t.dim} values per chain, got shape {x0.shape}")
        if x0.ndim == 1 and start_cov is not None:   # over-dispersed around one centre
            zc = t.to_z(x0)
            cov = np.asarray(start_cov, dtype=float)
            z = dispersed_starts(zc, cov, rng_init, start_scale)
            return z, lambda r: dispersed_starts(zc, cov, [r], start_scale)[0]
        if x0.ndim == 1:
            x0 = np.broadcast_to(x0, (max(chains) + 1, x0.size))
        if x0.shape[0] <= max(chains):
            raise InferenceError(f"x0: {x0.shape[0]} starting points for {max(chains) + 1} "
                                 "chains")
        return t.to_z(x0[chains]), None
    if not getattr(post.prior, "proper", False):
        raise InferenceError("MCMC: give starting points x0 (the prior is improper)")

    def draw(r):
        return t.z_from_theta(post.prior.sample(1, r)[0])

    return np.stack([draw(r) for r in rng_init]), draw


class _Density:
    """A posterior's log π_z (and, for MALA, its gradient) on a batch of points."""

    def __init__(self, post: Posterior, grad: bool):
        self.post, self.grad = post, grad

    def __call__(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if self.grad:
            return self.post.log_density_and_grad(z)
        return self.post.log_density(z), None


def _stage_log_ratio(stage: int, lk_y, lk_x, lprev_x, lprev_y):
    """Log of stage ``stage``'s (≥ 2) ratio π_k(y) π_{k−1}(x) / (π_k(x) π_{k−1}(y))."""
    return lk_y - lk_x + lprev_x - lprev_y


def _subchain(first, z, l1, noise0, chol, h, rngs, n):
    """Run n random-walk Metropolis steps on the first-stage density from z (all chains).

    The first step uses the iteration's own increment ``noise0``; the next draw theirs from
    the chains' generators. Returns (end state, its log density, acceptance rate per chain).
    """
    zc, lc = z.copy(), l1.copy()
    acc = np.zeros(z.shape[0])
    for j in range(n):
        if j == 0:
            step = noise0
        else:
            eps = np.stack([r.standard_normal(z.shape[1]) for r in rngs])
            step = np.sqrt(h)[:, None] * np.einsum("cij,cj->ci", chol, eps)
        yj = zc + step
        lj, _ = first(yj)
        logu = np.log(np.array([r.random() for r in rngs]))
        with np.errstate(invalid="ignore"):
            a = (logu < lj - lc) & np.isfinite(lj)
        zc = np.where(a[:, None], yj, zc)
        lc = np.where(a, lj, lc)
        acc += a
    return zc, lc, acc / n


def _mala_drift(z, g, sigma, h):
    """Mean of the preconditioned Langevin proposal: z + (h/2) Σ ∇log π(z)."""
    return z + 0.5 * h[:, None] * np.einsum("cij,cj->ci", sigma, g)


def _log_q(y, mean, chol, h):
    """Log-density N(y; mean, h Σ) up to the constant, Σ = L Lᵀ (per chain)."""
    d = np.stack([np.linalg.solve(chol[c], (y - mean)[c]) for c in range(y.shape[0])])
    return -0.5 * np.sum(d * d, axis=1) / h


def _run_local(target: Posterior, cheap: Posterior | None, mode: str, chain_ids: list[int],
               seeds: list[np.random.SeedSequence], *, n_samples, burn_in, thin, x0,
               start_cov, start_scale, proposal_cov, adapt_every, target_accept, adapt,
               shrinkage, kernel, intermediate=(), subchain=1):
    """Run the chains ``chain_ids`` in lockstep on this process; return per-chain arrays.

    ``intermediate``: the levels between ``cheap`` and ``target`` (delayed acceptance only).
    ``subchain``: random-walk steps on the first stage per proposal to the second.
    """
    post = target if target is not None else cheap
    t = post.transform
    P = t.dim
    C = len(chain_ids)
    rngs = [np.random.default_rng(seeds[c]) for c in chain_ids]
    da = mode == "delayed-acceptance"
    mids = list(intermediate) if da else []
    M = len(mids)
    L = M + 2 if da else 1
    mala = kernel == "mala"
    # the first stage: the cheap posterior (DA, surrogate-only) or the target (metropolis)
    first = _Density(cheap if mode != "metropolis" else target, grad=mala)
    if mala and not first.post.model.differentiable:
        raise InferenceError("MCMC kernel 'mala' needs a differentiable first-stage model "
                             "(a surrogate); use kernel='rw'")
    z, redraw = _initial_z(post, x0, start_cov, start_scale, chain_ids, rngs)
    z = np.array(z, dtype=float)
    l1, g1 = first(z)
    lm = [m.log_density(z) for m in mids]   # the intermediate levels at the states
    lp = target.log_density(z) if da else l1
    n_exp = np.zeros(C, dtype=int) if mode == "surrogate-only" else np.ones(C, dtype=int)
    n_cheap = np.ones(C, dtype=int) if mode != "metropolis" else np.zeros(C, dtype=int)
    n_mid = np.ones((C, M), dtype=int)
    for _ in range(100):  # redraw starts where a model failed
        bad = ~np.isfinite(lp) | ~np.isfinite(l1)
        for v in lm:
            bad |= ~np.isfinite(v)
        if not bad.any():
            break
        if redraw is None:
            raise InferenceError(f"MCMC: zero posterior density at the starting point of "
                                 f"chain(s) {[chain_ids[i] for i in np.nonzero(bad)[0]]}")
        idx = np.nonzero(bad)[0]
        z[idx] = [redraw(rngs[i]) for i in idx]
        a, b = first(z[idx])
        l1[idx] = a
        if g1 is not None:
            g1[idx] = b
        for j, m in enumerate(mids):
            lm[j][idx] = m.log_density(z[idx])
            n_mid[idx, j] += 1
        lp[idx] = target.log_density(z[idx]) if da else a
        n_cheap[idx] += 1 if mode != "metropolis" else 0
        n_exp[idx] += 1 if mode != "surrogate-only" else 0
    else:
        raise InferenceError("MCMC: no starting point with finite posterior density found")

    sd = (1.65 ** 2 / P ** (1 / 3)) if mala else 2.38 ** 2 / P
    sigma0 = 0.01 * np.eye(P) if proposal_cov is None else np.asarray(proposal_cov, float)
    check_spd(sigma0, "proposal_cov")
    sigma = np.broadcast_to(sigma0, (C, P, P)).copy()
    chol = np.linalg.cholesky(sigma)
    n0 = float(shrinkage if shrinkage is not None else 10 * P)
    log_lam = np.zeros(C)
    acc_start = burn_in // 4
    w_n = np.zeros(C)
    w_mean = np.zeros((C, P))
    w_m2 = np.zeros((C, P, P))
    rank_fallbacks = np.zeros(C, dtype=int)

    out_z = np.empty((C, n_samples, P))
    out_lp = np.empty((C, n_samples))
    out_acc = np.zeros((C, n_samples), dtype=bool)
    out_s1 = np.zeros((C, n_samples), dtype=bool)
    out_stages = np.zeros((C, n_samples, L - 1), dtype=bool) if M else None
    counts = {k: np.zeros(C, dtype=int) for k in ("proposals", "stage1", "accepted",
                                                  "proposals_total", "stage1_total",
                                                  "accepted_total")}
    for k in range(2, L):   # passes of the intermediate stages (stage L: "accepted")
        counts[f"stage{k}"] = np.zeros(C, dtype=int)
        counts[f"stage{k}_total"] = np.zeros(C, dtype=int)
    total = burn_in + n_samples * thin
    for it in range(total):
        adapting = it < burn_in
        eps = np.stack([r.standard_normal(P) for r in rngs])
        logu = np.log(np.stack([r.random(max(2, L)) for r in rngs]))
        h = sd * np.exp(log_lam)
        noise = np.sqrt(h)[:, None] * np.einsum("cij,cj->ci", chol, eps)
        if subchain > 1:   # a random-walk subchain on π₁ from z; its end is the proposal,
            # and stage 1 (the subchain itself) passes when it moved
            y, l1_y, sub_rate = _subchain(first, z, l1, noise, chol, h, rngs, subchain)
            g1_y = None
            n_cheap += subchain
            log_a1 = np.where(np.any(y != z, axis=1), np.inf, -np.inf)
        else:
            if mala:
                mean_y = _mala_drift(z, g1, sigma, h)
                y = mean_y + noise
            else:
                y = z + noise
            l1_y, g1_y = first(y)
            if mode == "metropolis":
                n_exp += 1
            else:
                n_cheap += 1
            log_a1 = l1_y - l1
            if mala:
                fin = np.isfinite(l1_y)
                corr = np.full(C, -np.inf)
                if fin.any():
                    back = _mala_drift(y[fin], g1_y[fin], sigma[fin], h[fin])
                    corr[fin] = (_log_q(z[fin], back, chol[fin], h[fin])
                                 - _log_q(y[fin], mean_y[fin], chol[fin], h[fin]))
                log_a1 = log_a1 + corr
        with np.errstate(invalid="ignore"):
            pass1 = logu[:, 0] < log_a1
        if da:
            # stages 2 … L: level k is evaluated only where stage k−1 passed
            passed = [pass1]
            lm_y = []
            prev_x, prev_y = l1, l1_y
            levels = zip([*mids, target], [*lm, lp], strict=True)
            for k, (dens, lk_x) in enumerate(levels, start=2):
                alive = passed[-1]
                lk_y = np.full(C, -np.inf)
                nxt = np.zeros(C, dtype=bool)
                if alive.any():
                    lk_y[alive] = dens.log_density(y[alive])
                    if k < L:
                        n_mid[alive, k - 2] += 1
                    else:
                        n_exp[alive] += 1
                    with np.errstate(invalid="ignore"):
                        a = _stage_log_ratio(k, lk_y[alive], lk_x[alive], prev_x[alive],
                                             prev_y[alive])
                    nxt[alive] = logu[alive, k - 1] < a
                passed.append(nxt)
                if k < L:
                    lm_y.append(lk_y)
                prev_x, prev_y = lk_x, lk_y
            accept, lp_y = passed[-1], lk_y
        else:
            accept, lp_y = pass1, l1_y
        # a proposal equal to the current state is not a move (a collapsed proposal would
        # otherwise count as "accepted" at every step)
        accept = accept & np.any(y != z, axis=1)
        z = np.where(accept[:, None], y, z)
        lp = np.where(accept, lp_y, lp)
        l1 = np.where(accept, l1_y, l1)
        lm = [np.where(accept, vy, vx) for vy, vx in zip(lm_y, lm, strict=True)] if M else lm
        if mala:
            g1 = np.where(accept[:, None], g1_y, g1)
        counts["proposals_total"] += 1
        counts["stage1_total"] += pass1
        counts["accepted_total"] += accept
        for k in range(2, L):
            counts[f"stage{k}_total"] += passed[k - 1]
        if adapting:
            if adapt != "none":
                gamma = (it + 1) ** -0.6
                rate = accept.astype(float) if subchain == 1 else sub_rate
                log_lam += gamma * (rate - target_accept)
            if adapt == "covariance" and it >= acc_start:
                w_n += 1
                delta = z - w_mean
                w_mean += delta / w_n[:, None]
                w_m2 += np.einsum("ci,cj->cij", delta, z - w_mean)
                if (it + 1) % adapt_every == 0 and w_n[0] > 1:
                    emp = w_m2 / (w_n[:, None, None] - 1)
                    for c in range(C):
                        new = shrunk_covariance(w_n[c], emp[c], sigma0, n0)
                        try:
                            chol[c] = np.linalg.cholesky(new)
                            sigma[c] = new
                        except np.linalg.LinAlgError:   # cannot happen for an SPD sigma0
                            rank_fallbacks[c] += 1
        else:
            k = it - burn_in
            counts["proposals"] += 1
            counts["stage1"] += pass1
            counts["accepted"] += accept
            for j in range(2, L):
                counts[f"stage{j}"] += passed[j - 1]
            if k % thin == thin - 1:
                out_z[:, k // thin] = z
                out_lp[:, k // thin] = lp
                out_acc[:, k // thin] = accept
                out_s1[:, k // thin] = pass1
                if M:
                    out_stages[:, k // thin] = np.stack(passed[:-1], axis=1)
    lam = np.exp(log_lam)
    prop_cov = sd * lam[:, None, None] * sigma
    counts["n_cheap"] = n_cheap
    counts["n_expensive"] = n_exp
    counts["rank_fallbacks"] = rank_fallbacks
    if M:
        counts["n_intermediate"] = n_mid
    return {"ids": list(chain_ids), "samples": t.from_z(out_z), "z": out_z,
            "log_density": out_lp, "accepted": out_acc, "stage1": out_s1,
            "stages": out_stages, "counts": counts, "proposal_cov": prop_cov}


def sample(posterior: Posterior | None, cheap: Posterior | None = None, *,
           mode: str | None = None, n_samples: int = 2000, burn_in: int = 1000,
           chains: int = 4, seed: int = 0, x0=None, proposal_cov=None, start_cov=None,
           start_scale: float = 2.0, thin: int = 1, adapt_every: int = 25,
           target_accept: float | None = None, adapt: str = "covariance",
           shrinkage: float | None = None, kernel: str = "rw",
           intermediate: Sequence[Posterior] = (), subchain: int = 1,
           comm=None) -> MCMCResult | None:
    """Sample a posterior by (delayed-acceptance) adaptive Metropolis or MALA.

    Args:
        posterior: the exact (expensive) posterior π; unused in ``"surrogate-only"`` mode.
        cheap: the cheap posterior π* (same data, space and prior; see
            :meth:`Posterior.with_model`); needed by ``"delayed-acceptance"`` and
            ``"surrogate-only"``.
        mode: ``"delayed-acceptance"`` (default when both are given), ``"surrogate-only"``
            (default when only ``cheap`` is), or ``"metropolis"`` (when only ``posterior`` is).
        n_samples: retained draws per chain (after burn-in and thinning).
        burn_in: adaptation iterations per chain, discarded.
        chains: number of independent chains.
        seed: root seed; chain c uses ``SeedSequence(seed).spawn(chains)[c]``.
        x0: starting point(s) μ: (chains, P) one per chain; or (P,) a centre, from which
            the chains start over-dispersed, z ~ N(z(x0), start_scale²·start_cov), when
            ``start_cov`` is given (all at x0 otherwise); default: prior draws.
        proposal_cov: Σ₀ (P, P) in z, e.g. :func:`~hybrid.inference.proposal.laplace_proposal`
            ``.cov``; the first proposals are N(0, 2.38²/d · Σ₀) and the adapted covariance
            is shrunk toward it. Default 0.01·I.
        start_cov: the covariance in z of the over-dispersed starts (see ``x0``).
        start_scale: κ of the starts (κ = 2: four times ``start_cov``).
        thin: keep every ``thin``-th draw after burn-in.
        adapt_every: iterations between updates of the adapted covariance.
        target_accept: acceptance rate the scale adapts to (default by dimension and kernel).
        adapt: during burn-in, ``"covariance"`` (scale and the shrunk empirical covariance),
            ``"scale"`` (the scale only: Σ = Σ₀) or ``"none"``.
        shrinkage: n₀, pseudo-observations of Σ₀ in the adapted covariance (default 10·P).
        kernel: ``"rw"`` (random walk) or ``"mala"`` (preconditioned Langevin proposal from
            the gradient of the first-stage density: the cheap posterior, or the target in
            metropolis mode; it must be differentiable).
        intermediate: levels between ``cheap`` and ``posterior`` for multi-level delayed
            acceptance, cheapest first (e.g. ``[coarse_fem_posterior]``): same parameters,
            data and prior. Each screens the proposals that passed the level below it.
        subchain: delayed acceptance only: the proposal to the second level is the end of
            ``subchain`` random-walk Metropolis steps on the cheap posterior (module
            docstring, "Subchains"); 1 (default) is the one-step first stage.
        comm: an mpi4py communicator to spread chains over ranks (result on rank 0 only).
    """
    intermediate = list(intermediate)
    if mode is None:
        mode = ("delayed-acceptance" if posterior is not None and cheap is not None else
                "surrogate-only" if cheap is not None else "metropolis")
    if mode not in MODES:
        raise InferenceError(f"MCMC mode must be one of {MODES}, got {mode!r}")
    if mode == "delayed-acceptance" and (posterior is None or cheap is None):
        raise InferenceError("delayed acceptance needs both the posterior and the cheap one")
    if mode == "surrogate-only" and cheap is None:
        raise InferenceError("surrogate-only mode needs the cheap posterior")
    if mode == "metropolis" and posterior is None:
        raise InferenceError("metropolis mode needs the posterior")
    if not (isinstance(subchain, int | np.integer) and subchain >= 1):
        raise InferenceError(f"MCMC: subchain must be an integer >= 1, got {subchain!r}")
    if subchain > 1 and (mode != "delayed-acceptance" or kernel != "rw"):
        raise InferenceError("MCMC: a subchain is the first stage of delayed acceptance "
                             "with the random-walk kernel (kernel='rw')")
    if intermediate and mode != "delayed-acceptance":
        raise InferenceError(f"intermediate levels need mode 'delayed-acceptance', not {mode!r}")
    if adapt not in ADAPT:
        raise InferenceError(f"MCMC adapt must be one of {ADAPT}, got {adapt!r}")
    if kernel not in KERNELS:
        raise InferenceError(f"MCMC kernel must be one of {KERNELS}, got {kernel!r}")
    if n_samples < 1 or burn_in < 0 or chains < 1 or thin < 1 or adapt_every < 1:
        raise InferenceError("MCMC: n_samples, chains, thin, adapt_every must be >= 1 and "
                             "burn_in >= 0")
    if shrinkage is not None and not shrinkage > 0:
        raise InferenceError(f"MCMC: shrinkage must be > 0, got {shrinkage}")
    ref = cheap if mode == "surrogate-only" else posterior
    if mode == "delayed-acceptance" and cheap.names != posterior.names:
        raise InferenceError("the cheap and the exact posterior have different parameters")
    for k, m in enumerate(intermediate, start=2):
        if not isinstance(m, Posterior):
            raise InferenceError(f"intermediate level {k}: expected a Posterior, got "
                                 f"{type(m).__name__}")
        if m.names != posterior.names:
            raise InferenceError(f"intermediate level {k} has parameters {m.names}, the "
                                 f"target {posterior.names}")
    P = ref.dim
    for what, cov in (("proposal_cov", proposal_cov), ("start_cov", start_cov)):
        if cov is not None:
            cov = np.asarray(cov, dtype=float)
            if cov.shape != (P, P):
                raise InferenceError(f"{what}: expected shape ({P}, {P}), got {cov.shape}")
            check_spd(cov, what)
    if target_accept is None:
        target_accept = 0.574 if kernel == "mala" else target_acceptance(P)
    t0 = time.perf_counter()
    seeds = np.random.SeedSequence(seed).spawn(chains)
    rank, size = (comm.rank, comm.size) if comm is not None else (0, 1)
    ids = [c for c in range(chains) if c % size == rank]
    local = None
    if ids:
        local = _run_local(posterior, cheap, mode, ids, seeds, n_samples=n_samples,
                           burn_in=burn_in, thin=thin, x0=x0, start_cov=start_cov,
                           start_scale=start_scale, proposal_cov=proposal_cov,
                           adapt_every=adapt_every, target_accept=target_accept, adapt=adapt,
                           shrinkage=shrinkage, kernel=kernel, intermediate=intermediate,
                           subchain=int(subchain))
    parts = [local] if comm is None else comm.gather(local, root=0)
    if rank != 0:
        return None
    parts = [p for p in parts if p is not None]
    order = np.argsort(np.concatenate([p["ids"] for p in parts]))

    def cat(get):
        return np.concatenate([get(p) for p in parts], axis=0)[order]

    counts = {k: cat(lambda p, k=k: p["counts"][k]) for k in parts[0]["counts"]}
    settings = {"n_samples": n_samples, "burn_in": burn_in, "chains": chains,
                "thin": thin, "adapt_every": adapt_every, "target_accept": target_accept,
                "kernel": kernel, "adapt": adapt,
                "shrinkage": float(shrinkage if shrinkage is not None else 10 * P),
                "adaptation": ("burn-in only, then frozen: " + {
                    "covariance": "global scale + empirical covariance shrunk toward Σ₀",
                    "scale": "global scale only (Σ = Σ₀)", "none": "none"}[adapt]),
                "over_dispersed_starts": start_cov is not None,
                **({"subchain": int(subchain)} if subchain > 1 else {}),
                "ranks": size, "posterior": ref.describe()}
    levels = None
    if intermediate:
        levels = [cheap.model.name, *(m.model.name for m in intermediate),
                  posterior.model.name]
        settings["levels"] = levels
    return MCMCResult(mode=mode, exact=mode != "surrogate-only", names=ref.names,
                      samples=cat(lambda p: p["samples"]),
                      log_density=cat(lambda p: p["log_density"]), counts=counts,
                      burn_in=burn_in, thin=thin, seed=seed,
                      wall_time=time.perf_counter() - t0,
                      proposal_cov=cat(lambda p: p["proposal_cov"]), settings=settings,
                      accepted=cat(lambda p: p["accepted"]), stage1=cat(lambda p: p["stage1"]),
                      levels=levels,
                      stages=cat(lambda p: p["stages"]) if intermediate else None)
