"""Baselines hybrid is measured against (not part of the FEM → surrogate pipeline).

* :mod:`hybrid.baselines.pinn` — a physics-informed neural network for the seed's 1-D heat
  equation u_t = κ u_xx, in the seed's own set-up and a tuned one, for a fixed κ or with κ as
  a network input (benchmarks/pinn_vs_fem.py compares it with P1 + Crank–Nicolson FEM).

This layer imports torch, numpy, :mod:`hybrid.errors` and :mod:`hybrid.core` only — never the
FEM stack (tests/test_architecture.py).
"""
