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


def _hpd_levels(h: np.ndarray, masses=(0.5, 0.9)) -> list[float]:
    """Density levels of a 2-D histogram enclosing the given probability masses."""
    v = np.sort(h.ravel())[::-1]
    c = np.cumsum(v) / max(v.sum(), 1e-300)
    return sorted({float(v[min(np.searchsorted(c, m), v.size - 1)]) for m in masses})


def _ellipse(mean2: np.ndarray, cov2: np.ndarray, chi2: float = 4.605, n: int = 100):
    """Points of the ellipse (x − m)ᵀ C⁻¹ (x − m) = χ² (4.605: the 90 % region in 2-D)."""
    w, V = np.linalg.eigh(0.5 * (cov2 + cov2.T))
    t = np.linspace(0, 2 * np.pi, n)
    circ = np.stack([np.cos(t), np.sin(t)])
    return mean2[:, None] + V @ (np.sqrt(np.maximum(w, 0.0) * chi2)[:, None] * circ)


def corner(samples, path: str | Path, *, names=None, truths=None, markers=None,
           laplace=None, bins: int = 40) -> Path:
    """Corner plot: densities on the diagonal, 2-D densities with 50/90 % contours below it.

    Marked: the truth (red lines and squares) when known, other points such as the MAP, and
    the Laplace approximation (mean, cov) as its Gaussian on the diagonal and its 90 %
    ellipse in each 2-D panel (black dashes).

    Args:
        samples: an :class:`~hybrid.inference.mcmc.MCMCResult` or draws (n, P) / (chains, n, P).
        path: the PNG file to write.
        names: parameter names (default: the result's).
        truths: true values, drawn as lines.
        markers: other points to mark (e.g. {"MAP": mu_hat}).
        laplace: (mean, cov) in μ of a Gaussian approximation to draw, or None.
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
                        histtype="stepfilled", alpha=0.6, density=True)
                ax.set_yticks([])
                if laplace is not None and laplace[1][j, j] > 0:
                    g = np.linspace(*lims[j], 200)
                    sd = np.sqrt(laplace[1][j, j])
                    ax.plot(g, np.exp(-0.5 * ((g - laplace[0][j]) / sd) ** 2)
                            / (sd * np.sqrt(2 * np.pi)), "k--", lw=0.8)
                q = np.quantile(flat[:, j], [0.05, 0.5, 0.95])
                for v, ls in zip(q, (":", "-", ":"), strict=True):
                    ax.axvline(v, color="C0", ls=ls, lw=1)
            else:
                h, xe, ye = np.histogram2d(flat[:, j], flat[:, i], bins=bins,
                                           range=[lims[j], lims[i]])
                ax.pcolormesh(xe, ye, h.T, cmap="Blues", shading="flat")
                levels = _hpd_levels(h)
                if len(levels) == 2 and h.max() > 0:
                    xc, yc = 0.5 * (xe[1:] + xe[:-1]), 0.5 * (ye[1:] + ye[:-1])
                    ax.contour(xc, yc, h.T, levels=levels, colors="C0", linewidths=0.8)
                if laplace is not None:
                    idx = [j, i]
                    e = _ellipse(np.asarray(laplace[0])[idx],
                                 np.asarray(laplace[1])[np.ix_(idx, idx)])
                    ax.plot(e[0], e[1], "k--", lw=0.8)
                ax.set_xlim(lims[j])
                ax.set_ylim(lims[i])
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
    handles = [axes[0, 0].plot([], [], "o", color=f"C{k + 1}", label=lab)[0]
               for k, lab in enumerate(markers or {})]
    if truths is not None:
        handles.append(axes[0, 0].plot([], [], "s", color="C3", label="truth")[0])
    if laplace is not None:
        handles.append(axes[0, 0].plot([], [], "k--", label="Laplace (90 %)")[0])
    if handles:
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
