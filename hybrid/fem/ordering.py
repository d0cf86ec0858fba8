"""A DOF ordering that does not depend on the number of MPI ranks (the *store ordering*).

DOLFINx numbers DOFs by partition, so the same mesh on 1 and on 4 ranks gives different
global numbers. For the store, DOFs of a scalar Lagrange space are sorted lexicographically
by their coordinates (rounded to 1e-10 of the mesh size, primary key y, then x, then z);
coordinates of scalar Lagrange DOFs are unique, so this ordering is a function of the mesh
geometry alone. The permutation is computed once per function space (on the group root;
each rank keeps the store indices of its own DOFs); gathering a field then costs one
``Gatherv`` to the group root, which writes it.

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
    """Gather distributed DOF data to ``root`` in store ordering (collective on V's comm).

    Memory: the group root holds O(N) (the permutation, the map global → store index, and
    every gathered field, which it writes); every other rank holds only the store indices
    of its own owned and ghost DOFs, O(N/p) — no N-sized array is broadcast.
    """

    def __init__(self, V: fem.FunctionSpace, root: int = 0):
        self.V, self.comm, self.root = V, V.mesh.comm, root
        imap = V.dofmap.index_map
        self.bs = bs = V.dofmap.index_map_bs
        self.n_local = imap.size_local * bs
        self.n_global = imap.size_global * bs
        gdim = V.mesh.geometry.dim
        x = V.tabulate_dof_coordinates()[: imap.size_local, :gdim]   # one row per node
        self.counts = np.array(self.comm.allgather(self.n_local))   # DOFs per rank
        # DOLFINx numbers owned DOFs in rank order (an exclusive scan of the local sizes), so
        # the gathered concatenation is in global order and needs no global indices sent
        if imap.local_range[0] * bs != int(self.counts[: self.comm.rank].sum()):
            raise RuntimeError("owned DOF ranges are not in rank order")
        xs = self.comm.gather(x, root=root)
        self.perm = None  # store position k holds gathered (global) entry perm[k]; root only
        self.store_of_global = None  # global DOF index → store index; root only
        if self.comm.rank == root:
            X = np.concatenate(xs)
            del xs
            h = np.ptp(X, axis=0).max() if len(X) else 1.0
            key = np.round(X / (1e-10 * (h or 1.0))).astype(np.int64)
            # np.lexsort sorts by its last key first: primary y, then x, then z
            cols = {1: [0], 2: [0, 1], 3: [2, 0, 1]}[gdim]
            self.perm = np.lexsort([key[:, i] for i in cols])
            ks = key[self.perm]
            if len(ks) > 1 and np.any(np.all(ks[1:] == ks[:-1], axis=1)):
                raise RuntimeError("DOF coordinates are not unique; cannot build store ordering")
            del key, ks
            self.points = X[self.perm] if bs == 1 else np.repeat(X[self.perm], bs, axis=0)
            self.store_of_global = np.empty(imap.size_global, dtype=np.int64)
            self.store_of_global[self.perm] = np.arange(imap.size_global)
            if bs > 1:   # node permutation → DOF permutation (components node-major)
                self.perm = (bs * self.perm[:, None] + np.arange(bs)).ravel()
                self.store_of_global = (bs * self.store_of_global[:, None]
                                        + np.arange(bs)).ravel()
        # each rank learns the store index of its owned DOFs (Scatterv), then of its ghosts
        # (a ghost update; float64 carries integers exactly below 2^53)
        owned = np.empty(self.n_local, dtype=np.int64)
        send = (self.store_of_global, self.counts) if self.comm.rank == root else None
        self.comm.Scatterv(send, owned, root=root)
        from dolfinx import la

        vec = la.vector(imap, bs, dtype=np.float64)
        vec.array[: self.n_local] = owned
        vec.scatter_forward()
        self.store_of_local = np.rint(vec.array).astype(np.int64)
        """Store index of every local DOF (owned, then ghosts; node·bs + component)."""
        self.store_of_local[: self.n_local] = owned

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

    def scatter_rows(self, rows: np.ndarray | None) -> list[np.ndarray]:
        """Each row of root's (m, N) store-ordered ``rows`` as this rank's owned values.

        Collective; ``rows`` is read on root only (None elsewhere).
        """
        mine = self.comm.rank == self.root
        m = self.comm.bcast(np.atleast_2d(rows).shape[0] if mine else 0, root=self.root)
        return [self.scatter(np.atleast_2d(rows)[i] if mine else None) for i in range(m)]

    def to_store_indices(self, local_dofs: np.ndarray) -> np.ndarray:
        """Map local DOF indices (owned or ghost; node·bs + component) to store indices."""
        return self.store_of_local[np.asarray(local_dofs, dtype=np.int64)]

    def to_store_nodes(self, local_nodes: np.ndarray) -> np.ndarray:
        """Map local node (block) indices, as in ``V.dofmap``, to store node indices.

        Store DOF of component c at store node k: bs·k + c (for bs = 1 the store index).
        """
        return self.store_of_local[self.bs * np.asarray(local_nodes, dtype=np.int64)] // self.bs

    def gather_matrix(self, A: PETSc.Mat) -> sp.csr_matrix | None:
        """Gather an assembled PETSc matrix (rows/cols on V) to root in store ordering.

        Owned rows are contiguous in rank order, so the rows' entry counts, global column
        indices and values gathered with three ``Gatherv`` (no pickling) form the matrix in
        the global numbering as CSR; root permutes its rows (row k of the store is global row
        ``perm[k]``) and relabels its columns, O(nnz), and sorts each row's columns (the
        canonical CSR, whatever the partition). A column may be a DOF this rank does not
        even ghost (an entry added from a neighbour's cell), hence global indices.
        """
        indptr, indices, data = A.getValuesCSR()
        r0, r1 = A.getOwnershipRange()
        if r1 - r0 != self.n_local:
            raise RuntimeError("matrix rows are not distributed like the function space")
        root = self.comm.rank == self.root
        nnz = np.array(self.comm.allgather(len(data)), dtype=np.int64)
        total = int(nnz.sum())
        row_nnz = np.empty(self.n_global, dtype=np.int64) if root else None
        cols = np.empty(total, dtype=np.int64) if root else None
        vals = np.empty(total, dtype=np.float64) if root else None
        self.comm.Gatherv(np.diff(indptr).astype(np.int64),
                          (row_nnz, self.counts) if root else None, root=self.root)
        self.comm.Gatherv(np.asarray(indices, dtype=np.int64), (cols, nnz) if root else None,
                          root=self.root)
        self.comm.Gatherv(np.ascontiguousarray(data, dtype=np.float64),
                          (vals, nnz) if root else None, root=self.root)
        if not root:
            return None
        n = self.n_global
        ptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(row_nnz, out=ptr[1:])
        del row_nnz
        cols = self.store_of_global[cols]
        out = sp.csr_matrix((vals, cols, ptr), shape=(n, n))[self.perm]
        out.sort_indices()
        return out

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
