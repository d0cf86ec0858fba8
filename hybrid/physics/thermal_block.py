"""The thermal block: the standard model-order-reduction benchmark.

    −∇·(κ(x; μ) ∇u) = s  in Ω = (0, 1)²,   u = 0 on ∂Ω,

with κ = μ_k on block k of a B×B grid of equal blocks, k = ix + B·iy (ix the block column
from the left, iy the block row from the bottom; a point on a block edge belongs to the
right/upper block). The problem is affine with Q_a = B² terms θ_k(μ) = μ_k, A_k = ∫_{Ω_k}
∇u·∇v, and Q_f = 1 term ϑ_0 = 1, f_0 = ∫ s v.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from hybrid.physics.base import PhysicsSettings, PhysicsSpec


class ThermalBlockSettings(PhysicsSettings):
    """Settings of [physics] for model = "thermal_block"."""

    blocks: int = Field(3, ge=1, le=20)
    source: float = 1.0
    degree: int = Field(1, ge=1, le=3)


class ThermalBlock(PhysicsSpec):
    """Spec of the thermal block."""

    name = "thermal_block"
    Settings = ThermalBlockSettings
    affine = True

    @property
    def blocks(self) -> int:
        return self.settings.blocks

    def n_parameters(self) -> int:
        return self.blocks**2

    def qoi_names(self) -> list[str]:
        """``mean`` = ∫_Ω u dx; ``block_mean_k`` = (1/|Ω_k|) ∫_{Ω_k} u dx."""
        return ["mean"] + [f"block_mean_{k}" for k in range(self.blocks**2)]

    def check_consistency(self, case) -> list[tuple[str, str]]:
        problems = []
        mesh = case.mesh
        if mesh.type == "unit_cube" or mesh.gdim != 2:
            problems.append(("mesh.type", "the thermal block is posed on the unit square"))
        if mesh.type == "unit_square" and mesh.cells % self.blocks != 0:
            problems.append(
                ("mesh.cells", f"must be a multiple of physics.blocks={self.blocks} so the mesh "
                 f"resolves the block edges, got {mesh.cells}")
            )
        if any(p.lower <= 0 for p in case.parameters.parameters):
            problems.append(("parameters", "conductivities must have lower bound > 0"))
        return problems

    def theta_a(self, mu: np.ndarray) -> np.ndarray:
        """θ_k(μ) = μ_k; a torch tensor is returned as it is (exact autograd)."""
        if hasattr(mu, "detach"):
            return mu
        return np.asarray(mu, dtype=float)

    def theta_f(self, mu: np.ndarray) -> np.ndarray:
        """ϑ_0(μ) = 1 (same array type as μ)."""
        if hasattr(mu, "new_ones"):
            return mu.new_ones(mu.shape[:-1] + (1,))
        mu = np.asarray(mu, dtype=float)
        return np.ones(mu.shape[:-1] + (1,))


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
