"""Numpy evaluation of trained POD-NN weights: no torch, no autograd, microseconds a query.

Importing this module does not import torch, so ``hybrid query`` and numpy-only queries stay
fast to start.
"""

from __future__ import annotations

import numpy as np

ACTIVATIONS = {"tanh": np.tanh}


def input_scaling(lower, upper, log_mask) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) with ξ = a ⊙ t(μ) + b mapping the box onto [−1, 1]^P."""
    lo, up, lg = (np.asarray(v, dtype=float) for v in (lower, upper, log_mask))
    lg = lg.astype(bool)
    tlo = np.where(lg, np.log(np.where(lg, lo, 1.0)), lo)
    tup = np.where(lg, np.log(np.where(lg, up, 1.0)), up)
    a = 2.0 / (tup - tlo)
    return a, -1.0 - a * tlo


class NumpyNetwork:
    """Numpy evaluation of a :class:`PODNetwork`'s weights (float64, no autograd).

    The input scaling is folded into each member's first layer and the output scaling and
    ensemble average into its last layer, so a query is a chain of matrix–vector products
    and ``tanh``; single queries reuse preallocated buffers.
    """

    def __init__(self, state: dict[str, np.ndarray], config: dict):
        self.config = config
        K, depth = config["members"], config["depth"]
        a, b = state["in_a"], state["in_b"]
        self.log_mask = state["log_mask"].astype(bool)
        self.any_log = bool(self.log_mask.any())
        mean, scale = state["out_mean"], state["out_scale"]
        self.act = ACTIVATIONS[config["activation"]]
        self.members: list[list[tuple[np.ndarray, np.ndarray]]] = []
        for k in range(K):
            layers = []
            for i in range(depth + 1):
                W = np.array(state[f"members.{k}.layers.{i}.weight"], dtype=float)
                c = np.array(state[f"members.{k}.layers.{i}.bias"], dtype=float)
                if i == 0:
                    W, c = W * a[None, :], W @ b + c
                if i == depth:
                    W, c = (scale[:, None] * W) / K, (scale * c) / K + mean / K
                layers.append((np.ascontiguousarray(W), c))
            self.members.append(layers)
        # single queries: biases appended as a last column, and every buffer ends with a
        # constant 1, so each layer is one matrix–vector product (plus tanh) into a buffer
        self._aug = [[np.ascontiguousarray(np.hstack([W, c[:, None]])) for W, c in layers]
                     for layers in self.members]
        P = self.members[0][0][0].shape[1]
        self._in = np.ones(P + 1)
        self._in_view = self._in[:P]
        self._hid = [np.ones(W.shape[0] + 1) for W, _ in self.members[0][:-1]]
        self._hid_view = [b[:-1] for b in self._hid]
        self._out = np.empty(config["n_modes"])

    def _t(self, mu: np.ndarray) -> np.ndarray:
        if not self.any_log:
            return mu
        t = np.array(mu, dtype=float)
        t[..., self.log_mask] = np.log(t[..., self.log_mask])
        return t

    def one(self, mu: np.ndarray, amp=None) -> np.ndarray:
        """Coefficients for one parameter vector (P,) → (n,) (a new array)."""
        np.copyto(self._in_view, self._t(mu) if self.any_log else mu)
        act, dot = self.act, np.dot
        hid, views = self._hid, self._hid_view
        out = None
        for layers in self._aug:
            h = self._in
            for W, o, full in zip(layers[:-1], views, hid, strict=True):
                dot(W, h, out=o)
                act(o, out=o)
                h = full
            dot(layers[-1], h, out=self._out)
            if out is None:
                out = self._out.copy() if amp is None else self._out * amp
            else:
                out += self._out if amp is None else self._out * amp
        return out

    def batch(self, mu: np.ndarray, amp: np.ndarray | None = None,
              chunk: int = 2048) -> np.ndarray:
        """Coefficients for a batch (B, P) → (B, n); evaluated in cache-sized chunks."""
        mu = np.asarray(mu, dtype=float)
        B = mu.shape[0]
        out = np.empty((B, self.config["n_modes"]))
        for s in range(0, B, chunk):
            t = self._t(mu[s:s + chunk])
            acc = None
            for layers in self.members:
                h = t
                last = len(layers) - 1
                for i, (W, c) in enumerate(layers):
                    h = h @ W.T
                    h += c
                    if i < last:
                        self.act(h, out=h)
                acc = h if acc is None else acc + h
            out[s:s + chunk] = acc
        if amp is not None:
            out *= np.asarray(amp, dtype=float)[:, None]
        return out
