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
* ``"surrogate-only"`` (fast, **not exact**): adaptive Metropolis on π* alone; the result is
  labelled ``exact = False`` and samples the surrogate's posterior, bias included.
* ``"metropolis"`` (exact, expensive): adaptive Metropolis on π alone, for reference.

Densities are those of the unconstrained z (:meth:`Posterior.log_density`, log-Jacobian
included); samples are reported in μ.

**Adaptation** (Haario, Saksman & Tamminen 2001, with the global scale of Andrieu & Thoms
2008, Alg. 4), during burn-in **only**: the random-walk proposal is N(0, λ · 2.38²/d · Σ);
Σ starts from ``proposal_cov`` (e.g. the Laplace ``cov_z`` of a MAP estimate) and is
replaced, every ``adapt_every`` iterations, by the empirical covariance of the chain's own
states in the second to fourth quarters of burn-in (plus a 1e-9 relative jitter); log λ
follows a Robbins–Monro recursion towards the acceptance rate α* (0.44 in 1-D falling to
0.234 for d ≥ 5, Gelman–Roberts–Gilks). After burn-in λ and Σ are frozen. Why not a
diminishing adaptation that runs forever: with the kernel frozen, the retained draws come
from one time-homogeneous MH (or DA) kernel, so its invariance, the DA correctness argument
and the ESS/R̂ diagnostics hold as for any MH chain, with no appeal to the ergodicity
theory of adaptive MCMC; and a kernel that keeps changing would also change the stage-1
screening the cost figures are measured on. The price: burn-in must be long enough to learn
Σ (a MAP-based ``proposal_cov`` shortens it).

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hybrid.inference.diagnostics import summarize
from hybrid.inference.errors import InferenceError
from hybrid.inference.posterior import Posterior

MODES = ("delayed-acceptance", "surrogate-only", "metropolis")


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
            out["stage1"] = c["stage1"] / prop if prop else None
            out["stage2"] = c["accepted"] / c["stage1"] if c["stage1"] else None
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
                        "per_chain": {k: v.tolist() for k, v in self.counts.items()}},
             "acceptance": self.acceptance(),
             "expensive_per_effective_sample": n_exp / min_ess if min_ess > 0 else None,
             "wall_time_s": self.wall_time, "settings": self.settings}
        return _jsonable(d)

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


def _initial_z(post: Posterior, x0, chains: list[int], rng_init: list[np.random.Generator]):
    t = post.transform
    if x0 is not None:
        x0 = np.asarray(x0, dtype=float)
        if x0.ndim == 1:
            x0 = np.broadcast_to(x0, (max(chains) + 1, x0.size))
        if x0.shape[-1] != t.dim:
            raise InferenceError(f"x0: expected {t.dim} values per chain, got shape {x0.shape}")
        if x0.shape[0] <= max(chains):
            raise InferenceError(f"x0: {x0.shape[0]} starting points for {max(chains) + 1} "
                                 "chains")
        return t.to_z(x0[chains])
    if not getattr(post.prior, "proper", False):
        raise InferenceError("MCMC: give starting points x0 (the prior is improper)")
    return np.stack([t.z_from_theta(post.prior.sample(1, r)[0]) for r in rng_init])


def _run_local(target: Posterior, cheap: Posterior | None, mode: str, chain_ids: list[int],
               seeds: list[np.random.SeedSequence], *, n_samples, burn_in, thin, x0,
               proposal_cov, adapt_every, target_accept):
    """Run the chains ``chain_ids`` in lockstep on this process; return per-chain arrays."""
    post = target if target is not None else cheap
    t = post.transform
    P = t.dim
    C = len(chain_ids)
    rngs = [np.random.default_rng(seeds[c]) for c in chain_ids]
    da = mode == "delayed-acceptance"
    screen = cheap if mode == "delayed-acceptance" else None
    main = cheap if mode == "surrogate-only" else target
    z = np.array(_initial_z(post, x0, chain_ids, rngs), dtype=float)
    lp = main.log_density(z)
    lq = screen.log_density(z) if da else None
    n_exp = np.zeros(C, dtype=int) if mode == "surrogate-only" else np.ones(C, dtype=int)
    n_cheap = np.ones(C, dtype=int) if mode != "metropolis" else np.zeros(C, dtype=int)
    for _ in range(100):  # redraw prior starts where a model failed
        bad = ~np.isfinite(lp) | (~np.isfinite(lq) if da else False)
        if not bad.any():
            break
        if x0 is not None:
            raise InferenceError(f"MCMC: zero posterior density at the starting point of "
                                 f"chain(s) {[chain_ids[i] for i in np.nonzero(bad)[0]]}")
        z[bad] = [t.z_from_theta(post.prior.sample(1, rngs[i])[0]) for i in np.nonzero(bad)[0]]
        lp[bad] = main.log_density(z[bad])
        if da:
            lq[bad] = screen.log_density(z[bad])
        n_cheap[bad] += 1 if mode != "metropolis" else 0
        n_exp[bad] += 1 if mode != "surrogate-only" else 0
    else:
        raise InferenceError("MCMC: no starting point with finite posterior density found")

    sd = 2.38 ** 2 / P
    if proposal_cov is None:
        sigma = np.broadcast_to(0.01 * np.eye(P), (C, P, P)).copy()
    else:
        sigma = np.broadcast_to(np.asarray(proposal_cov, dtype=float), (C, P, P)).copy()
    try:
        chol = np.linalg.cholesky(sigma)
    except np.linalg.LinAlgError:
        raise InferenceError("MCMC: proposal_cov is not positive definite") from None
    log_lam = np.zeros(C)
    acc_start = burn_in // 4
    w_n = np.zeros(C)
    w_mean = np.zeros((C, P))
    w_m2 = np.zeros((C, P, P))

    n_keep = n_samples
    out_z = np.empty((C, n_keep, P))
    out_lp = np.empty((C, n_keep))
    counts = {k: np.zeros(C, dtype=int) for k in ("proposals", "stage1", "accepted",
                                                  "proposals_total", "stage1_total",
                                                  "accepted_total")}
    total = burn_in + n_samples * thin
    for it in range(total):
        adapting = it < burn_in
        eps = np.stack([r.standard_normal(P) for r in rngs])
        logu = np.log(np.stack([r.random(2) for r in rngs]))
        scale = np.sqrt(sd * np.exp(log_lam))
        y = z + scale[:, None] * np.einsum("cij,cj->ci", chol, eps)
        if da:
            lq_y = screen.log_density(y)
            n_cheap += 1
            with np.errstate(invalid="ignore"):
                pass1 = logu[:, 0] < lq_y - lq
            accept = np.zeros(C, dtype=bool)
            lp_y = np.full(C, -np.inf)
            if pass1.any():
                lp_y[pass1] = target.log_density(y[pass1])
                n_exp[pass1] += 1
                with np.errstate(invalid="ignore"):
                    a2 = lp_y[pass1] - lp[pass1] + lq[pass1] - lq_y[pass1]
                accept[pass1] = logu[pass1, 1] < a2
            lq = np.where(accept, lq_y, lq)
        else:
            lp_y = main.log_density(y)
            if mode == "surrogate-only":
                n_cheap += 1
            else:
                n_exp += 1
            with np.errstate(invalid="ignore"):
                pass1 = accept = logu[:, 0] < lp_y - lp
        z = np.where(accept[:, None], y, z)
        lp = np.where(accept, lp_y, lp)
        counts["proposals_total"] += 1
        counts["stage1_total"] += pass1
        counts["accepted_total"] += accept
        if adapting:
            gamma = (it + 1) ** -0.6
            log_lam += gamma * (accept.astype(float) - target_accept)
            if it >= acc_start:
                w_n += 1
                delta = z - w_mean
                w_mean += delta / w_n[:, None]
                w_m2 += np.einsum("ci,cj->cij", delta, z - w_mean)
                if (it + 1) % adapt_every == 0 and w_n[0] > 2 * P + 2:
                    emp = w_m2 / (w_n[:, None, None] - 1)
                    for c in range(C):
                        jitter = 1e-9 * (np.trace(emp[c]) / P + 1e-300)
                        try:
                            chol[c] = np.linalg.cholesky(emp[c] + jitter * np.eye(P))
                        except np.linalg.LinAlgError:
                            pass  # keep the previous proposal for this chain
        else:
            k = it - burn_in
            counts["proposals"] += 1
            counts["stage1"] += pass1
            counts["accepted"] += accept
            if k % thin == thin - 1:
                out_z[:, k // thin] = z
                out_lp[:, k // thin] = lp
    lam = np.exp(log_lam)
    prop_cov = sd * lam[:, None, None] * np.einsum("cij,ckj->cik", chol, chol)
    counts["n_cheap"] = n_cheap
    counts["n_expensive"] = n_exp
    return {"ids": list(chain_ids), "samples": t.from_z(out_z), "log_density": out_lp,
            "counts": counts, "proposal_cov": prop_cov}


def sample(posterior: Posterior | None, cheap: Posterior | None = None, *,
           mode: str | None = None, n_samples: int = 2000, burn_in: int = 1000,
           chains: int = 4, seed: int = 0, x0=None, proposal_cov=None, thin: int = 1,
           adapt_every: int = 25, target_accept: float | None = None,
           comm=None) -> MCMCResult | None:
    """Sample a posterior by (delayed-acceptance) adaptive Metropolis.

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
        x0: starting point(s) μ, (P,) for all chains or (chains, P); default: prior draws.
        proposal_cov: a guess Σ₀ (P, P) of the posterior covariance in z, e.g. the Laplace
            ``MAPResult.cov_z``; the first proposals are N(0, 2.38²/d · Σ₀). Default 0.01·I.
        thin: keep every ``thin``-th draw after burn-in.
        adapt_every: iterations between updates of the adapted covariance.
        target_accept: acceptance rate the scale adapts to (default by dimension).
        comm: an mpi4py communicator to spread chains over ranks (result on rank 0 only).
    """
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
    if n_samples < 1 or burn_in < 0 or chains < 1 or thin < 1 or adapt_every < 1:
        raise InferenceError("MCMC: n_samples, chains, thin, adapt_every must be >= 1 and "
                             "burn_in >= 0")
    ref = cheap if mode == "surrogate-only" else posterior
    if mode == "delayed-acceptance" and cheap.names != posterior.names:
        raise InferenceError("the cheap and the exact posterior have different parameters")
    P = ref.dim
    t0 = time.perf_counter()
    seeds = np.random.SeedSequence(seed).spawn(chains)
    rank, size = (comm.rank, comm.size) if comm is not None else (0, 1)
    ids = [c for c in range(chains) if c % size == rank]
    local = None
    if ids:
        local = _run_local(posterior, cheap, mode, ids, seeds, n_samples=n_samples,
                           burn_in=burn_in, thin=thin, x0=x0, proposal_cov=proposal_cov,
                           adapt_every=adapt_every,
                           target_accept=target_accept or target_acceptance(P))
    parts = [local] if comm is None else comm.gather(local, root=0)
    if rank != 0:
        return None
    parts = [p for p in parts if p is not None]
    order = np.argsort(np.concatenate([p["ids"] for p in parts]))

    def cat(get):
        return np.concatenate([get(p) for p in parts], axis=0)[order]

    counts = {k: cat(lambda p, k=k: p["counts"][k]) for k in parts[0]["counts"]}
    settings = {"n_samples": n_samples, "burn_in": burn_in, "chains": chains,
                "thin": thin, "adapt_every": adapt_every,
                "target_accept": target_accept or target_acceptance(P),
                "adaptation": "Haario AM + global scale, burn-in only, then frozen",
                "ranks": size, "posterior": ref.describe()}
    return MCMCResult(mode=mode, exact=mode != "surrogate-only", names=ref.names,
                      samples=cat(lambda p: p["samples"]), log_density=cat(
                          lambda p: p["log_density"]), counts=counts, burn_in=burn_in,
                      thin=thin, seed=seed, wall_time=time.perf_counter() - t0,
                      proposal_cov=cat(lambda p: p["proposal_cov"]), settings=settings)
