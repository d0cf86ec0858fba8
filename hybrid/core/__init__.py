"""Data the two sides share: nothing here imports dolfinx, petsc4py, ufl or a model."""
