"""PNG plots of posterior samples (matplotlib, Agg canvas, no pyplot state): corner and traces."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _unpack(samples, names):
    """(chains, n, P) draws and names from an MCMCResult or an array."""
    if hasattr(samples, "samples") and hasattr(samples, "names"):
        return np.asarray(samples.samples), list(names or samples.names), samples
    x = np.asarray(samples, dtype=float)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"samples must be (n, P) or (chains, n, P), got {x.shape}")
    names = list(names) if names is not None else [f"mu_{j}" for j in range(x.shape[-1])]
    return x, names, None


def _title(res) -> str:
    if res is None:
        return ""
    label = "exact" if res.exact else "NOT exact: surrogate posterior"
    return f"{res.mode} ({label})"


def corner(samples, path: str | Path, *, names=None, truths=None, markers=None,
           bins: int = 40) -> Path:
    """Corner plot: histograms on the diagonal, 2-D histograms below it.

    Args:
        samples: an :class:`~hybrid.inference.mcmc.MCMCResult` or draws (n, P) / (chains, n, P).
        path: the PNG file to write.
        names: parameter names (default: the result's).
        truths: true values, drawn as lines.
        markers: other points to mark (e.g. {"MAP": mu_hat}).
        bins: histogram bins.
    """
    x, names, res = _unpack(samples, names)
    flat = x.reshape(-1, x.shape[-1])
    P = flat.shape[1]
    size = max(2.2 * P, 3.5)
    fig = _figure(size, size)
    axes = fig.subplots(P, P, squeeze=False)
    lims = [np.quantile(flat[:, j], [0.001, 0.999]) for j in range(P)]
    for i in range(P):
        for j in range(P):
            ax = axes[i, j]
            if j > i:
                ax.set_visible(False)
                continue
            if i == j:
                ax.hist(flat[:, j], bins=bins, range=tuple(lims[j]), color="C0",
                        histtype="stepfilled", alpha=0.6)
                ax.set_yticks([])
                q = np.quantile(flat[:, j], [0.05, 0.5, 0.95])
                for v, ls in zip(q, (":", "-", ":"), strict=True):
                    ax.axvline(v, color="C0", ls=ls, lw=1)
            else:
                ax.hist2d(flat[:, j], flat[:, i], bins=bins, range=[lims[j], lims[i]],
                          cmap="Blues")
                if truths is not None:
                    ax.plot(truths[j], truths[i], "s", color="C3", ms=4)
                for k, (_, m) in enumerate((markers or {}).items()):
                    ax.plot(m[j], m[i], "o", color=f"C{k + 1}", ms=4)
            if truths is not None:
                ax.axvline(truths[j], color="C3", lw=1)
                if i != j:
                    ax.axhline(truths[i], color="C3", lw=1)
            if i == P - 1:
                ax.set_xlabel(names[j])
            else:
                ax.set_xticklabels([])
            if j == 0 and i > 0:
                ax.set_ylabel(names[i])
            elif i != j:
                ax.set_yticklabels([])
    if markers:
        handles = [axes[0, 0].plot([], [], "o", color=f"C{k + 1}", label=lab)[0]
                   for k, lab in enumerate(markers)]
        fig.legend(handles=handles, loc="upper right")
    if res is not None:
        fig.suptitle(_title(res))
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path


def trace(samples, path: str | Path, *, names=None) -> Path:
    """Trace plots, one row per parameter, one line per chain."""
    x, names, res = _unpack(samples, names)
    C, n, P = x.shape
    fig = _figure(9, 1.8 * P + 0.6)
    axes = fig.subplots(P, 1, squeeze=False, sharex=True)[:, 0]
    for j, ax in enumerate(axes):
        for c in range(C):
            ax.plot(np.arange(n), x[c, :, j], lw=0.5, alpha=0.8, label=f"chain {c}")
        ax.set_ylabel(names[j])
    axes[-1].set_xlabel("draw (after burn-in)")
    if C <= 8:
        axes[0].legend(loc="upper right", fontsize="small", ncol=min(C, 4))
    if res is not None:
        fig.suptitle(_title(res))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path
