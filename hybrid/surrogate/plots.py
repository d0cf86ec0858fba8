"""PNG plots of a training run (matplotlib, Agg backend): loss curves and error vs modes."""

from __future__ import annotations

import io


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_png(history: list[dict]) -> bytes:
    """Training loss and validation error against iterations, one line per member."""
    plt = _figure()
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    members = sorted({h["member"] for h in history})
    for k in members:
        hk = [h for h in history if h["member"] == k]
        it = [h["iteration"] for h in hk]
        lab = f"member {k + 1}" if len(members) > 1 else None
        ax[0].semilogy(it, [max(h["loss"], 1e-300) for h in hk], label=lab)
        ax[1].semilogy(it, [h["val"] for h in hk], label=lab)
        adam = [h["iteration"] for h in hk if h["phase"] == "adam"]
        if adam and len(adam) < len(hk) and k == members[0]:      # Adam → L-BFGS
            for a in ax:
                a.axvline(adam[-1], color="0.7", ls=":", lw=1)
    ax[0].set(xlabel="iteration (Adam, then L-BFGS)", ylabel="training loss", title="training")
    ax[1].set(xlabel="iteration (Adam, then L-BFGS)", ylabel="relative error (RMS)",
              title="validation snapshots")
    for a in ax:
        a.grid(True, which="both", alpha=0.3)
        if len(members) > 1:
            a.legend()
    return _png(fig, plt)


def modes_png(metrics: dict, surrogate_label: str = "surrogate") -> bytes:
    """Validation error against the number of modes: POD projection, Galerkin, surrogate."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    r = metrics.get("ranks", [])
    if r:
        ax.semilogy(r, metrics["projection_error_mean"], "o-", ms=3,
                    label="POD projection (mean)")
        ax.semilogy(r, metrics["projection_error_max"], "o:", ms=3, label="POD projection (max)")
        if "galerkin_error_mean" in metrics:
            ax.semilogy(r, metrics["galerkin_error_mean"], "s-", ms=3, label="Galerkin (mean)")
            ax.semilogy(r, metrics["galerkin_error_max"], "s:", ms=3, label="Galerkin (max)")
        if "surrogate_error_mean" in metrics:
            ax.semilogy([r[-1]], [metrics["surrogate_error_mean"]], "r*", ms=12,
                        label=f"{surrogate_label} (mean)")
            ax.semilogy([r[-1]], [metrics["surrogate_error_max"]], "rx", ms=10,
                        label=f"{surrogate_label} (max)")
    ax.set(xlabel="number of POD modes", ylabel="relative error, X-norm",
           title="validation snapshots (held out of POD and training)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig, plt)


def _png(fig, plt) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
