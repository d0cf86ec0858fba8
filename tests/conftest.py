"""Shared fixtures: small case files and a way to run the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hybrid.core.examples import MUMPS, case_text

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MPIRUN = BIN / "mpirun"


def small_case_text(
    cells: int = 12,
    blocks: int = 2,
    samples: int = 8,
    petsc: str = MUMPS,
    store: str = "store",
    degree: int = 1,
) -> str:
    return case_text(name="tb_small", cells=cells, blocks=blocks, degree=degree,
                     samples=samples, seed=3, petsc=petsc, store=store,
                     qoi=("mean", "block_mean_0"))


@pytest.fixture
def write_case(tmp_path):
    def _write(name: str = "case.toml", **kw) -> Path:
        p = tmp_path / name
        kw.setdefault("store", str(tmp_path / "store"))
        p.write_text(small_case_text(**kw))
        return p

    return _write


def run_cli(args, *, ranks: int | None = None, cwd=None, timeout=300, **popen):
    """Run ``hybrid ARGS`` (under ``mpirun -n ranks`` if given); return CompletedProcess."""
    cmd = [str(BIN / "hybrid"), *map(str, args)]
    if ranks:
        cmd = [str(MPIRUN), "-n", str(ranks), *cmd]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd or ROOT, timeout=timeout,
                          env=env, **popen)
