"""Thermal-block case texts for scripts, benchmarks, tests and docs (no DOLFINx)."""

from __future__ import annotations

MUMPS = 'ksp_type = "preonly"\npc_type = "lu"\npc_factor_mat_solver_type = "mumps"'


def case_text(
    *,
    name: str = "thermal_block",
    cells: int = 60,
    blocks: int = 3,
    degree: int = 1,
    samples: int = 64,
    seed: int = 0,
    petsc: str = MUMPS,
    store: str | None = None,
    qoi: tuple[str, ...] = ("mean",),
    grid: int | None = None,
) -> str:
    """TOML text of a thermal-block case on an n×n unit-square mesh, μ_k ∈ [0.1, 1].

    For scripts, benchmarks and tests that need a case without a file in cases/; ``petsc``
    is the body of the [solver.petsc] table, ``grid`` adds n×n point sensors.
    """
    params = "\n".join(f"mu_{k} = {{ lower = 0.1, upper = 1.0 }}" for k in range(blocks**2))
    quoted = ", ".join(f'"{q}"' for q in qoi)
    text = f"""
[case]
name = "{name}"

[mesh]
type = "unit_square"
cells = {cells}

[physics]
model = "thermal_block"
blocks = {blocks}
degree = {degree}

[parameters]
{params}

[sampling]
method = "sobol"
samples = {samples}
seed = {seed}

[solver.petsc]
{petsc}

[outputs]
{f'store = "{store}"' if store is not None else ""}
qoi = [{quoted}]
"""
    if grid:
        text += f"\n[observations]\ngrid = {grid}\n"
    return text
