"""A DOF ordering that does not depend on the number of MPI ranks (the *store ordering*).

DOLFINx numbers DOFs by partition, so the same mesh on 1 and on 4 ranks gives different
global numbers. For the store, DOFs of a scalar Lagrange space are sorted lexicographically
by their coordinates (rounded to 1e-10 of the mesh size, primary key y, then x, then z);
coordinates of scalar Lagrange DOFs are unique, so this ordering is a function of the mesh
geometry alone. The permutation is computed once per function space; gathering a field then
costs one ``Gatherv``.

A blocked (vector Lagrange) space of block size bs has bs DOFs per node: the nodes are sorted
as above and the components interleaved node-major, store DOF = bs·(store node) + component
(N = bs·n_nodes; bs = 1 is the scalar ordering unchanged). ``points`` then has one row per
DOF, each node's coordinates repeated bs times.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from dolfinx import fem
from petsc4py import PETSc

CELL_TYPES = {"triangle": "triangle", "quadrilateral": "quad", "tetrahedron": "tetra",
              "hexahedron": "hexahedron", "interval": "line"}
"""DOLFINx cell names → meshio names."""


class StoreOrdering:
    """Gather distributed DOF data to ``root`` in store ordering (collective on V's comm)."""

    def __init__(self, V: fem.FunctionSpace, root: int = 0):
        self.V, self.comm, self.root = V, V.mesh.comm, root
        imap = V.dofmap.index_map
        self.bs = bs = V.dofmap.index_map_bs
        self.n_local = imap.size_local * bs
        self.n_global = imap.size_global * bs
        gdim = V.mesh.geometry.dim
        x = V.tabulate_dof_coordinates()[: imap.size_local, :gdim]   # one row per node
        glob = np.arange(imap.local_range[0], imap.local_range[1], dtype=np.int64)
        self.counts = np.array(self.comm.allgather(self.n_local))   # DOFs per rank
        xs = self.comm.gather(x, root=root)
        gs = self.comm.gather(glob, root=root)
        self.perm = None  # store position k holds gathered entry perm[k]
        self.store_of_global = None
        if self.comm.rank == root:
            X = np.concatenate(xs)
            G = np.concatenate(gs)
            h = np.ptp(X, axis=0).max() or 1.0
            key = np.round(X / (1e-10 * h)).astype(np.int64)
            # np.lexsort sorts by its last key first: primary y, then x, then z
            cols = {1: [0], 2: [0, 1], 3: [2, 0, 1]}[gdim]
            self.perm = np.lexsort([key[:, i] for i in cols])
            ks = key[self.perm]
            if len(ks) > 1 and np.any(np.all(ks[1:] == ks[:-1], axis=1)):
                raise RuntimeError("DOF coordinates are not unique; cannot build store ordering")
            self.points = X[self.perm] if bs == 1 else np.repeat(X[self.perm], bs, axis=0)
            self.store_of_global = np.empty(imap.size_global, dtype=np.int64)
            self.store_of_global[G[self.perm]] = np.arange(imap.size_global)
            if bs > 1:   # node permutation → DOF permutation (components node-major)
                self.perm = (bs * self.perm[:, None] + np.arange(bs)).ravel()
                self.store_of_global = (bs * self.store_of_global[:, None]
                                        + np.arange(bs)).ravel()
        # every rank needs the map global -> store for matrices and index sets
        self.store_of_global = self.comm.bcast(self.store_of_global, root=root)

    def gather(self, local_owned: np.ndarray) -> np.ndarray | None:
        """Gather owned values (length n_local) to root in store ordering; None elsewhere."""
        send = np.ascontiguousarray(local_owned[: self.n_local], dtype=np.float64)
        recv = np.empty(self.n_global) if self.comm.rank == self.root else None
        self.comm.Gatherv(send, (recv, self.counts) if recv is not None else None, root=self.root)
        return recv[self.perm] if recv is not None else None

    def gather_function(self, u: fem.Function) -> np.ndarray | None:
        return self.gather(u.x.array)

    def scatter(self, values: np.ndarray | None) -> np.ndarray:
        """Inverse of :meth:`gather`: root's store-ordered values → this rank's owned values."""
        send = None
        if self.comm.rank == self.root:
            send = np.empty(self.n_global)
            send[self.perm] = values
        recv = np.empty(self.n_local)
        self.comm.Scatterv((send, self.counts) if send is not None else None, recv, root=self.root)
        return recv

    def to_store_indices(self, local_dofs: np.ndarray) -> np.ndarray:
        """Map local DOF indices (owned or ghost; node·bs + component) to store indices."""
        if self.bs > 1:
            d = np.asarray(local_dofs, dtype=np.int64)
            return self.bs * self.to_store_nodes(d // self.bs) + d % self.bs
        glob = self.V.dofmap.index_map.local_to_global(np.asarray(local_dofs, dtype=np.int32))
        return self.store_of_global[glob]

    def to_store_nodes(self, local_nodes: np.ndarray) -> np.ndarray:
        """Map local node (block) indices, as in ``V.dofmap``, to store node indices.

        Store DOF of component c at store node k: bs·k + c (for bs = 1 the store index).
        """
        glob = self.V.dofmap.index_map.local_to_global(np.asarray(local_nodes, dtype=np.int32))
        return self.store_of_global[self.bs * glob] // self.bs

    def gather_matrix(self, A: PETSc.Mat) -> sp.csr_matrix | None:
        """Gather an assembled PETSc matrix (rows/cols on V) to root in store ordering."""
        indptr, indices, data = A.getValuesCSR()
        rows = np.repeat(np.arange(A.getOwnershipRange()[0], A.getOwnershipRange()[1]),
                         np.diff(indptr))
        r = self.store_of_global[rows]
        c = self.store_of_global[indices]
        parts = self.comm.gather((r, c, data), root=self.root)
        if self.comm.rank != self.root:
            return None
        R, C, D = (np.concatenate(p) for p in zip(*parts, strict=True))
        n = self.n_global
        return sp.csr_matrix((D, (R, C)), shape=(n, n))

    def gather_vector(self, b: PETSc.Vec) -> np.ndarray | None:
        """Gather an assembled (ghost-accumulated) PETSc vector to root in store ordering."""
        return self.gather(b.getArray(readonly=True))

    def assemble_matrix(self, form) -> sp.csr_matrix | None:
        """Assemble a bilinear UFL form on V and gather it to root in store ordering."""
        from dolfinx.fem import petsc as fem_petsc

        A = fem_petsc.assemble_matrix(fem.form(form))
        A.assemble()
        out = self.gather_matrix(A)
        A.destroy()
        return out

    def assemble_vector(self, form) -> np.ndarray | None:
        """Assemble a linear UFL form on V (ghosts accumulated) and gather it to root."""
        from dolfinx.fem import petsc as fem_petsc

        b = fem_petsc.assemble_vector(fem.form(form))
        b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        out = self.gather_vector(b)
        b.destroy()
        return out

    @property
    def cell_type(self) -> str:
        """The mesh's cell type by its meshio name (for the store's static.h5)."""
        return CELL_TYPES[self.V.mesh.topology.cell_name()]

    def gather_index_set(self, local_dofs: np.ndarray) -> np.ndarray | None:
        """Gather a set of owned local DOF indices to root as sorted store indices."""
        owned = np.asarray(local_dofs)[np.asarray(local_dofs) < self.n_local]
        parts = self.comm.gather(self.to_store_indices(owned), root=self.root)
        return np.unique(np.concatenate(parts)) if parts is not None else None

    def gather_cells(self) -> np.ndarray | None:
        """Owned cells as rows of vertex-DOF store indices in meshio/VTK vertex order, on root.

        For a blocked space a vertex is named by its first component's store DOF bs·k (k its
        store node; ``points[bs·k]`` are its coordinates).
        Basix numbers a Lagrange element's vertex DOFs first, so the first vertex-count DOFs of
        each cell are its vertices (for P2 and up, the field is shown on the linear cells).
        """
        msh = self.V.mesh
        tdim = msh.topology.dim
        n_cells = msh.topology.index_map(tdim).size_local
        n_vert = {1: 2, 2: 3, 3: 4}[tdim]
        if msh.topology.cell_name() in ("quadrilateral", "hexahedron"):
            n_vert = 2**tdim
        cells = self.V.dofmap.list[:n_cells, :n_vert]
        s = self.bs * self.to_store_nodes(cells.ravel()).reshape(cells.shape)
        if n_vert == 4 and tdim == 2:  # DOLFINx tensor-product order -> VTK/meshio order
            s = s[:, [0, 1, 3, 2]]
        elif n_vert == 8:
            s = s[:, [0, 1, 3, 2, 4, 5, 7, 6]]
        parts = self.comm.gather(s, root=self.root)
        return np.concatenate(parts) if parts is not None else None
