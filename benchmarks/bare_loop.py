"""The baseline of benchmarks/fem_campaign.py: a bare DOLFINx loop, written as a user would.

Solves the thermal block for the same μ as the campaign, with dolfinx.fem.petsc.LinearProblem
and the same PETSc options, keeps each solution in memory, writes nothing. Prints JSON.
"""

import json
import sys
import time

t_start = time.perf_counter()
import dolfinx_solver  # noqa: E402,F401
import numpy as np  # noqa: E402
import ufl  # noqa: E402
from dolfinx import fem, mesh  # noqa: E402
from dolfinx.fem.petsc import LinearProblem  # noqa: E402
from mpi4py import MPI  # noqa: E402

cells, blocks, mu_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
mus = np.load(mu_file)
t_setup = time.perf_counter()
msh = mesh.create_unit_square(MPI.COMM_WORLD, cells, cells)
V = fem.functionspace(msh, ("Lagrange", 1))
Q = fem.functionspace(msh, ("DG", 0))
tdim = msh.topology.dim
nc = msh.topology.index_map(tdim).size_local + msh.topology.index_map(tdim).num_ghosts
mid = mesh.compute_midpoints(msh, tdim, np.arange(nc, dtype=np.int32))
ix = np.clip(np.floor(mid[:, 0] * blocks).astype(int), 0, blocks - 1)
iy = np.clip(np.floor(mid[:, 1] * blocks).astype(int), 0, blocks - 1)
block = ix + blocks * iy
kappa = fem.Function(Q)
u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
a = ufl.inner(kappa * ufl.grad(u), ufl.grad(v)) * ufl.dx
L = fem.Constant(msh, 1.0) * v * ufl.dx
msh.topology.create_connectivity(tdim - 1, tdim)
dofs = fem.locate_dofs_topological(V, tdim - 1, mesh.exterior_facet_indices(msh.topology))
bc = fem.dirichletbc(0.0, dofs, V)
problem = LinearProblem(a, L, bcs=[bc], petsc_options_prefix="bare_",
                        petsc_options={"ksp_type": "preonly", "pc_type": "lu",
                                       "pc_factor_mat_solver_type": "mumps"})
kept = []
t_loop = time.perf_counter()
for mu in mus:
    kappa.x.array[:] = mu[block]
    uh = problem.solve()
    kept.append(uh.x.array.copy())
t_end = time.perf_counter()
print(json.dumps({"setup_s": t_loop - t_setup, "loop_s": t_end - t_loop,
                  "total_s": t_end - t_start, "solves": len(mus)}))
