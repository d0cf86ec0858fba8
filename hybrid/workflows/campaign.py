"""Parallel, resumable simulation campaigns (collective over the world communicator).

``mpirun -n N hybrid campaign CASE --samples S --ranks-per-sample G``:

* COMM_WORLD is split into N/G groups of G consecutive ranks; every group builds the FEM
  problem once on its own sub-communicator and solves one sample at a time with domain
  decomposition over its G ranks.
* Samples are handed out dynamically: a group leader claims the next pending sample by
  creating ``STORE/claims/<run id>/<index>`` with O_CREAT|O_EXCL (atomic on POSIX and NFS),
  so a slow sample never holds the other groups back, and no rank has to serve requests.
* Each finished sample is committed by its group leader as one file written to a temporary
  name, fsynced and renamed (:func:`hybrid.core.store.write_sample`). After a crash — SIGKILL of
  every rank at any moment included — running the same command again skips the committed
  samples and solves the rest; a sample is either fully committed or absent.
* A solve that fails (PETSc divergence, NaN) is committed with status "failed" and its
  reason; the campaign goes on and its exit code says partial success.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hybrid.core.case import Case
from hybrid.core.store import (
    STATUS_FAILED,
    STATUS_OK,
    Sample,
    SnapshotStore,
    clean_debris,
    fsync_dir,
    init_store,
    read_plan,
    read_sample,
    sample_files,
    sample_path,
    static_fingerprint,
    write_json,
    write_sample,
    write_static,
)
from hybrid.errors import HybridError, StoreError

_OWN_FILES = {".lock", "store.json", "static.h5", "plan.json", "samples", "claims", "campaign.json",
              "paraview"}


@dataclass
class CampaignResult:
    """What a campaign did (meaningful on world rank 0)."""

    store: Path
    planned: int
    ok: int
    failed: int
    solved_now: int
    skipped: int
    wall_time: float
    failure_reasons: list[str] = field(default_factory=list)
    paraview: Path | None = None
    interrupted: bool = False
    """Stopped by SIGTERM after the samples in progress (resume with the same command)."""

    @property
    def exit_code(self) -> int:
        """The process exit code of this run.

        0: every sample ok; 3: partial success (some samples failed); 143 (128 + SIGTERM):
        stopped by SIGTERM, every finished sample kept.
        """
        if self.interrupted:
            return 128 + int(signal.SIGTERM)
        return 0 if self.failed == 0 else 3


class _Termination:
    """SIGTERM (a batch scheduler's warning before SIGKILL) asks for a clean stop.

    The handler only records the request: every group finishes the sample it is solving,
    commits it, and claims no further one. PETSc's own handler (a crash report, exit 59) is
    replaced for the duration of the campaign and restored after it.
    """

    def __init__(self):
        self.requested = False
        self._old = None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def restore(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
            self._old = None


MAX_SAMPLES = 10_000_000
"""Largest plan a campaign accepts (its points are held in memory on every rank)."""


def _fingerprint(case: Case) -> dict:
    """The parts of a case that make two stores' snapshots comparable (:meth:`Case.fingerprint`)."""
    return case.fingerprint()


def plan_samples(case: Case, n: int) -> np.ndarray:
    """The first n points of the case's seeded sampling plan, shape (n, P)."""
    s = case.sampling
    return case.parameters.sample(n, s.method, s.seed)


def _prepare_store(case: Case, store: Path, n: int) -> tuple[np.ndarray, bool, int]:
    """Check or create the store directory and plan, and lock it (world rank 0 only).

    Returns the plan (n, P), whether the static part still has to be written, and the lock.
    """
    if store.exists() and not store.is_dir():
        raise StoreError(f"{store}: exists and is not a directory")
    if store.is_dir() and not (store / "store.json").is_file():
        foreign = [p.name for p in store.iterdir()
                   if p.name not in _OWN_FILES and not p.name.startswith(".tmp-")]
        if foreign:
            raise StoreError(
                f"{store}: directory exists and is not a snapshot store (holds {foreign[0]!r}); "
                "refusing to write into it"
            )
    if store.is_dir() and not (store / "store.json").is_file():
        # a store that lost its manifest must prove which case made it before it is reused
        n_samples = len(list((store / "samples").glob("s*.h5"))) if (
            store / "samples").is_dir() else 0
        if (store / "static.h5").is_file() or n_samples:
            fp = static_fingerprint(store / "static.h5")
            if fp != case.fingerprint_against(fp):
                raise StoreError(
                    f"{store}: store.json is missing and the store holds {n_samples} samples "
                    f"{'of a different case' if fp else 'that cannot be matched to this case'}"
                    "; refusing to mix them (restore store.json or use another --store)")
    if (store / "store.json").is_file():
        existing = SnapshotStore(store)
        stored = existing.manifest.get("fingerprint")
        if stored != case.fingerprint_against(stored):
            old = stored or {}
            new = case.fingerprint_against(stored)
            diff = [k for k in new if old.get(k) != new[k]] or ["format"]
            if diff == ["model"] and isinstance(old.get("model"), dict):
                raise StoreError(
                    f"{store}: the model {new['model']['reference']!r} changed since the store "
                    f"was made (sha256 {str(old['model'].get('sha256'))[:12]}… now "
                    f"{new['model']['sha256'][:12]}…); restore the model file or use another "
                    "--store")
            raise StoreError(
                f"{store}: store was made from a different case ({', '.join(diff)} differ); "
                "use another --store or the original case file"
            )
    store.mkdir(parents=True, exist_ok=True)
    lock = _lock_store(store)
    try:
        clean_debris(store)
        shutil.rmtree(store / "claims", ignore_errors=True)  # claims of killed runs
        pf = store / "plan.json"
        old = read_plan(store)
        s = case.sampling
        if old is not None and "mu" in old:       # a plan written out point by point
            plan = plan_samples(case, n)
            old_mu = np.array(old["mu"], dtype=float).reshape(-1, case.parameters.dim)
            m = min(len(old_mu), n)
            same = (old.get("method"), old.get("seed")) == (s.method, s.seed)
            if not same or not np.allclose(old_mu[:m], plan[:m], rtol=1e-13, atol=0):
                raise StoreError(
                    f"{store}: store holds a different sampling plan (method="
                    f"{old.get('method')}, seed={old.get('seed')}, {len(old_mu)} samples); use "
                    "another --store"
                )
            planned = max(len(old_mu), n)
        else:
            if old is not None and ((old["method"], old["seed"], old.get("names"))
                                    != (s.method, s.seed, case.parameters.names)):
                raise StoreError(
                    f"{store}: store holds a different sampling plan (method={old['method']}, "
                    f"seed={old['seed']}); use another --store"
                )
            if old is not None and s.method == "lhs" and int(old.get("n", n)) != n:
                raise StoreError(f"{store}: a Latin hypercube plan of {old.get('n')} samples "
                                 f"cannot be resized to {n} (its points depend on n); use "
                                 "sobol or random sampling to grow a campaign")
            planned = max(int(old.get("n", 0)) if old else 0, n)
            plan = plan_samples(case, n)
        # the plan is its generator: method, seed and size (the points are recomputed)
        write_json(pf, {"method": s.method, "seed": s.seed, "names": case.parameters.names,
                        "n": planned, "generator": "hybrid.core.parameters.ParameterSpace.sample"})
    except BaseException:
        os.close(lock)
        raise
    need_static = not (store / "static.h5").is_file() or not (store / "store.json").is_file()
    return plan, need_static, lock


def _lock_store(store: Path) -> int:
    """Take an exclusive flock on STORE/.lock (released by the kernel if the process dies).

    One campaign writes to a store at a time; a second one is refused instead of racing.
    """
    import fcntl

    fd = os.open(store / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(f"{store}: another campaign is writing to this store") from None
    return fd


class _Progress:
    """Progress bar on world rank 0, fed by a thread that counts committed sample files.

    Counting files keeps the bar live while rank 0's own group is busy solving, and needs no
    messages from the other groups.
    """

    def __init__(self, store: Path, todo: set[int], total: int, done: int, enabled: bool):
        self.store, self.todo, self.stop = store, todo, threading.Event()
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="sample", desc="campaign",
                            dynamic_ncols=True, mininterval=0.5)
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()

    def _count(self) -> int:
        names = {p.name for p in (self.store / "samples").glob("s*.h5")}
        return sum(sample_path(self.store, i).name in names for i in self.todo)

    def _run(self) -> None:
        last = 0
        while not self.stop.wait(0.25):
            n = self._count()
            if n > last:
                self.bar.update(n - last)
                last = n
        n = self._count()
        self.bar.update(n - last)

    def close(self) -> None:
        if self.bar is not None:
            self.stop.set()
            self.thread.join()
            self.bar.close()


def _claim(claims: Path, index: int) -> bool:
    try:
        fd = os.open(claims / str(index), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _set_up(case: Case, group, store: Path, write: bool, solve: bool):
    """The group's FEM problem; the static part and the manifest when ``write``."""
    from hybrid.fem.problems import create_problem
    from hybrid.fem.versions import fem_versions

    problem = create_problem(case, group) if solve or write else None
    if write:
        static = problem.static_data()
        if group.rank == 0:
            write_static(store / "static.h5", static, fingerprint=_fingerprint(case))
            init_store(
                store,
                case_name=case.name,
                case_text=case.text,
                physics=case.physics.settings.model_dump(),
                space=case.parameters,
                qoi=case.qoi,
                n_dofs=static.n_dofs,
                solver_options=case.petsc_options,
                versions=fem_versions(),
                extra={"fingerprint": _fingerprint(case),
                       "observations": case.observations.names(),
                       **({"time": problem.time_record()}
                          if getattr(problem, "transient", False) else {}),
                       **({"field": problem.field_record()}
                          if hasattr(problem, "field_record") else {}),
                       "element": getattr(problem, "element", None) or {
                           "family": "Lagrange", "degree": case.physics.settings.degree},
                       **({"model": problem.model_record()}
                          if hasattr(problem, "model_record") else {})},
            )
    return problem


def _solve_claimed(problem, group, store: Path, run_id: str, plan: np.ndarray,
                   todo: list[int], stop: _Termination, G: int) -> int:
    """Claim, solve and commit samples until none is left (or SIGTERM); return the count."""
    leader = group.rank == 0
    claims = store / "claims" / run_id
    solved, nxt = 0, 0
    while True:
        index = -1
        if leader and not stop.requested:
            while nxt < len(todo):
                cand = todo[nxt]
                nxt += 1
                if _claim(claims, cand):
                    index = cand
                    break
        index = group.bcast(index, root=0)
        if index < 0:
            return solved
        mu = plan[index]
        t0 = time.perf_counter()
        if getattr(problem, "transient", False):   # a trajectory: fields (n_t, N), QoIs
            traj, _, u = problem.run_trajectory(mu, fields=True)   # (n_t, n_qoi)
            res, q = traj.as_solve_result(), traj.qoi if traj.ok else None
            wall = time.perf_counter() - t0
        else:
            res = problem.solve(mu)
            wall = time.perf_counter() - t0
            u = problem.ordering.gather_function(problem.u) if res.ok else None
            q = problem.qoi() if res.ok else None
        if leader:
            write_sample(store, Sample(
                index=index, mu=mu, status=STATUS_OK if res.ok else STATUS_FAILED,
                reason=res.reason, wall_time=wall, u=u, qoi=q,
                run_id=run_id, ranks=G, iterations=res.iterations))
        solved += 1


def run_campaign(
    case: Case,
    *,
    samples: int | None = None,
    ranks_per_sample: int = 1,
    store: Path | None = None,
    retry_failed: bool = False,
    progress: bool = True,
    paraview: bool = True,
    comm=None,
) -> CampaignResult:
    """Run (or resume) the campaign of ``case``; collective over ``comm`` (default WORLD).

    Args:
        case: the validated case.
        samples: number of samples of the plan to complete (default: the case's).
        ranks_per_sample: G, the ranks that solve one sample together; must divide N.
        store: store directory (default: the case's ``outputs.store``).
        retry_failed: solve again the samples recorded as failed.
        progress: show a progress bar on world rank 0.
        paraview: write STORE/paraview/snapshots.xdmf at the end.
        comm: the communicator to use (default MPI.COMM_WORLD).

    Raises:
        HybridError: on every rank, for user errors (bad G, foreign or mismatched store).
    """
    from hybrid.fem import MPI

    world = comm if comm is not None else MPI.COMM_WORLD
    t_start = time.perf_counter()
    n = samples if samples is not None else case.sampling.samples
    store = Path(store if store is not None else case.store)
    G = ranks_per_sample
    if G < 1 or world.size % G != 0:
        raise HybridError(
            f"--ranks-per-sample {G} must be >= 1 and divide the number of ranks ({world.size})"
        )
    if n < 1:
        raise HybridError(f"--samples must be >= 1, got {n}")
    if n > MAX_SAMPLES:
        raise HybridError(f"--samples {n} exceeds the limit of {MAX_SAMPLES:,} samples per "
                          "campaign store")

    # rank 0 checks/creates the store; every rank learns the outcome (no hangs on errors)
    msg, plan, need_static, run_id, todo, lock = None, None, None, None, None, None
    created = world.rank == 0 and not (store / "store.json").exists() and not (
        store.is_dir() and any(store.iterdir()))
    if world.rank == 0:
        try:
            plan, need_static, lock = _prepare_store(case, store, n)
            run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
            done = {}
            for p in sample_files(store):
                i = int(p.stem[1:])
                if i < n:
                    done[i] = read_sample(p, field=False).status
            todo = [i for i in range(n)
                    if i not in done or (retry_failed and done[i] == STATUS_FAILED)]
            (store / "claims" / run_id).mkdir(parents=True, exist_ok=True)
        except HybridError as exc:
            msg = str(exc)
        except OSError as exc:   # read-only location, full disk: one line on every rank
            msg = f"{exc.filename or store}: cannot write ({exc.strerror or exc})"
    msg, plan, need_static, run_id, todo = world.bcast(
        (msg, plan, need_static, run_id, todo), root=0)
    if msg is not None:
        raise StoreError(msg)

    color = world.rank // G
    group = world.Split(color, world.rank)
    leader = group.rank == 0
    bar, stop, problem = None, None, None
    try:
        problem = _set_up(case, group, store, need_static and color == 0, bool(todo))
        world.Barrier()
        if world.rank == 0:
            bar = _Progress(store, set(todo), n, n - len(todo), progress and bool(todo))
        stop = _Termination()
        solved = _solve_claimed(problem, group, store, run_id, plan, todo, stop, G)
    except BaseException:
        if bar is not None:
            bar.close()
        if stop is not None:
            stop.restore()
        if created and not sample_files(store):   # an error found before any sample (bad
            os.close(lock)     # mesh, a sensor outside it, PETSc options): leave no store
            shutil.rmtree(store, ignore_errors=True)
        group.Free()
        raise
    stop.restore()
    if problem is not None:
        problem.destroy()
    if leader:
        fsync_dir(store / "samples")
    interrupted = bool(world.allreduce(int(stop.requested), op=MPI.MAX))
    solved = world.allreduce(solved if leader else 0)
    world.Barrier()
    if bar is not None:
        bar.close()

    result = None
    if world.rank == 0:
        shutil.rmtree(store / "claims" / run_id, ignore_errors=True)
        try:
            (store / "claims").rmdir()
        except OSError:
            pass
        statuses = [read_sample(sample_path(store, i), field=False)
                    for i in range(n) if sample_path(store, i).exists()]
        failed = [s for s in statuses if s.status != STATUS_OK]
        missing = n - len(statuses)   # not solved yet: a run stopped by SIGTERM
        pv = None
        if paraview:
            from hybrid.core.viz import write_store_xdmf

            pv = write_store_xdmf(SnapshotStore(store), store / "paraview" / "snapshots.xdmf")
        wall = time.perf_counter() - t_start
        result = CampaignResult(
            store=store, planned=n, ok=n - len(failed) - missing, failed=len(failed),
            solved_now=solved,
            skipped=n - len(todo), wall_time=wall,
            failure_reasons=sorted({s.reason for s in failed}),
            paraview=pv, interrupted=interrupted)
        _log_run(store, run_id, world.size, G, result)
        os.close(lock)
    group.Free()
    return world.bcast(result, root=0)


def _log_run(store: Path, run_id: str, n_ranks: int, G: int, r: CampaignResult) -> None:
    """Append this run to STORE/campaign.json (provenance of every run of the campaign)."""
    path = store / "campaign.json"
    runs = json.loads(path.read_text())["runs"] if path.is_file() else []
    runs.append({"run_id": run_id, "ranks": n_ranks, "ranks_per_sample": G,
                 "groups": n_ranks // G, "planned": r.planned, "solved": r.solved_now,
                 "skipped": r.skipped, "ok": r.ok, "failed": r.failed,
                 "wall_time_s": round(r.wall_time, 3)})
    write_json(path, {"runs": runs})
