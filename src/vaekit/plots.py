"""Pictures for the report: matplotlib figures rendered to PNG bytes with the Agg canvas.

Every function takes plain numpy arrays (or pandas Series) and returns the bytes of one PNG;
what to plot is decided in report.py. matplotlib is imported inside the functions, through
`matplotlib.figure.Figure` and the Agg canvas rather than pyplot, so no display is needed and
a user's interactive backend is never switched.
"""

from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np

from .errors import ConfigError

DPI = 100
REAL, FAKE = "#1f77b4", "#ff7f0e"  # real data blue, generated orange, in every picture


def require():
    """The Figure and Agg canvas classes; a missing matplotlib is a one-line error with the fix."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError("the report needs matplotlib: pip install matplotlib (or vaekit[report])") from None
    return Figure, FigureCanvasAgg


def figure(width: float, height: float):
    """A new Figure drawn by the Agg canvas."""
    Figure, FigureCanvasAgg = require()
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def curves(rows: Sequence[dict[str, Any]], second: str = "kl") -> bytes:
    """Training curves from metrics.jsonl rows: one panel per term (loss, recon, kl, ...),
    train and validation in each; the validation NLL joins the loss panel (both nats)."""
    epochs = [r["epoch"] for r in rows]
    terms: dict[str, list[str]] = {}
    for r in rows:
        for key in r:
            split, _, term = key.partition("_")
            if split in ("train", "val") and term:
                terms.setdefault("loss" if term == "nll" else term, [])
                if key not in terms["loss" if term == "nll" else term]:
                    terms["loss" if term == "nll" else term].append(key)
    lrs = [r.get("lr") for r in rows]
    if len(set(lrs)) > 1:
        terms["lr"] = ["lr"]
    titles = {"loss": "loss = -bound (nats)", "recon": "reconstruction E log p(x|z)",
              "kl": "MMD" if second == "mmd" else "KL(q(z|x) || p(z))", "lr": "learning rate"}
    fig = figure(4.2 * len(terms), 3.2)
    axes = fig.subplots(1, len(terms), squeeze=False)[0]
    for ax, (term, keys) in zip(axes, terms.items()):
        for key in keys:
            pts = [(e, r[key]) for e, r in zip(epochs, rows) if key in r]
            style = "--" if key == "val_nll" else "-"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="." if len(pts) < 30 else None,
                    label={"val_nll": "val NLL (importance-sampled)"}.get(key, key.split("_")[0]))
        ax.set_title(titles.get(term, term), fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return png(fig)


def heatmaps(panels: Sequence[tuple[str, np.ndarray]], ylabel: str = "example") -> bytes:
    """Flat (non-image) data as heat maps, one panel per (title, (rows, features)) pair, on
    one colour scale so panels compare."""
    lo = min(float(np.nanmin(a)) for _, a in panels)
    hi = max(float(np.nanmax(a)) for _, a in panels)
    fig = figure(min(4.0 * len(panels), 16), 3.4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, a) in zip(axes, panels):
        im = ax.imshow(a, aspect="auto", cmap="viridis", vmin=lo, vmax=hi if hi > lo else lo + 1,
                       interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("feature")
        ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=list(axes), shrink=0.8)
    return png(fig)


def histograms(real: np.ndarray | None, fake: np.ndarray, max_features: int = 12) -> bytes:
    """Per-feature histograms of real vs generated values, (N, F) arrays, shared bins."""
    f = min(fake.shape[1], max_features)
    cols = min(f, 4)
    rows = -(-f // cols)
    fig = figure(3.2 * cols, 2.4 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for j, ax in enumerate(axes):
        if j >= f:
            ax.set_axis_off()
            continue
        both = fake[:, j] if real is None else np.concatenate([real[:, j], fake[:, j]])
        bins = np.histogram_bin_edges(both[np.isfinite(both)], bins=30)
        if real is not None:
            ax.hist(real[:, j], bins=bins, density=True, alpha=0.5, color=REAL, label="real")
        ax.hist(fake[:, j], bins=bins, density=True, histtype="step", linewidth=1.5, color=FAKE, label="generated")
        ax.set_title(f"feature {j}", fontsize=9)
        ax.tick_params(labelsize=7)
        if j == 0:
            ax.legend(fontsize=7)
    return png(fig)


def latent_scatter(z: np.ndarray, dims: tuple[str, str], labels: np.ndarray | None,
                   grid: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> bytes:
    """Encoded means z (N, 2), coloured by label when given, over the prior's density
    contours `grid` = (xs (G,), ys (G,), density (G, G))."""
    fig = figure(6.4, 5.2)
    ax = fig.subplots()
    if grid is not None:
        xs, ys, dens = grid
        ax.contourf(xs, ys, dens, levels=8, cmap="Greys", alpha=0.35)
        ax.contour(xs, ys, dens, levels=8, colors="0.4", linewidths=0.6)
    if labels is None:
        ax.scatter(z[:, 0], z[:, 1], s=8, alpha=0.7, color=REAL, label="encoded means")
        ax.legend(fontsize=8, loc="upper right")
    else:
        classes = np.unique(labels)
        if len(classes) <= 20:  # a legend entry per class
            import matplotlib

            palette = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
            for i, c in enumerate(classes):
                m = labels == c
                ax.scatter(z[m, 0], z[m, 1], s=8, alpha=0.75, color=palette(i), label=str(c))
            ax.legend(fontsize=7, title="label", markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
        else:  # many classes or a continuous label: a colour bar

            sc = ax.scatter(z[:, 0], z[:, 1], s=8, alpha=0.75, c=labels, cmap="viridis")
            fig.colorbar(sc, ax=ax, label="label")
    ax.set_xlabel(dims[0])
    ax.set_ylabel(dims[1])
    ax.set_title("encoded means over the prior's density", fontsize=10)
    return png(fig)


def kl_bars(kl_per_dim: Sequence[float], active: Sequence[bool]) -> bytes:
    """KL per latent dimension, active units in colour, collapsed ones grey."""
    d = len(kl_per_dim)
    fig = figure(min(max(5.5, 0.25 * d + 2), 16), 3.0)
    ax = fig.subplots()
    colours = [REAL if a else "0.7" for a in active]
    ax.bar(np.arange(d), kl_per_dim, color=colours)
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("KL (nats)")
    ax.set_title(f"{sum(active)} active (blue), {d - sum(active)} collapsed (grey)", fontsize=10)
    if d <= 32:
        ax.set_xticks(np.arange(d))
    ax.tick_params(labelsize=7)
    return png(fig)


def marginal(real, fake, name: str, numeric: bool, max_categories: int = 20) -> bytes:
    """One table column, real vs synthetic: shared-bin histograms for numbers, side-by-side
    value shares (the most common `max_categories` of the real data) for categories and for
    numbers with few distinct values (e.g. a year)."""
    fig = figure(3.6, 2.6)
    ax = fig.subplots()
    r, f = real.dropna(), fake.dropna()
    if numeric and r.nunique() > 12:
        both = np.concatenate([r.to_numpy(float), f.to_numpy(float)])
        bins = np.histogram_bin_edges(both, bins=30) if len(both) else 10
        ax.hist(r.to_numpy(float), bins=bins, density=True, alpha=0.5, color=REAL, label="real")
        ax.hist(f.to_numpy(float), bins=bins, density=True, histtype="step", linewidth=1.5, color=FAKE,
                label="synthetic")
    else:
        if numeric:  # few distinct numbers: one bar per value, in numeric order
            r, f = r.round(6), f.round(6)
        pr = r.value_counts(normalize=True).sort_index() if numeric else r.astype(str).value_counts(normalize=True)
        pf = (f if numeric else f.astype(str)).value_counts(normalize=True)
        pr.index, pf.index = pr.index.map(_label), pf.index.map(_label)
        pf = pf.groupby(level=0).sum()
        cats = list(pr.index[:max_categories]) + [c for c in pf.index if c not in pr.index][:3]
        x = np.arange(len(cats))
        ax.bar(x - 0.2, [pr.get(c, 0.0) for c in cats], 0.4, color=REAL, label="real")
        ax.bar(x + 0.2, [pf.get(c, 0.0) for c in cats], 0.4, color=FAKE, label="synthetic")
        ax.set_xticks(x)
        ax.set_xticklabels([c[:12] for c in cats], rotation=45 if len(cats) > 4 else 0, ha="right", fontsize=7)
        ax.set_ylabel("share")
    ax.set_title(name[:40], fontsize=9)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    return png(fig)


def _label(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def matrices(names: Sequence[str], left: np.ndarray, right: np.ndarray, titles: tuple[str, str]) -> bytes:
    """Two (C, C) association matrices side by side on one -1..1 colour scale."""
    c = len(names)
    side = min(max(3.0, 0.35 * c + 2), 9)
    fig = figure(2 * side + 1, side)
    axes = fig.subplots(1, 2)
    for ax, m, title in zip(axes, (left, right), titles):
        im = ax.imshow(m, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xticks(np.arange(c))
        ax.set_yticks(np.arange(c))
        ax.set_xticklabels([n[:14] for n in names], rotation=90, fontsize=7)
        ax.set_yticklabels([n[:14] for n in names], fontsize=7)
    fig.colorbar(im, ax=list(axes), shrink=0.8)
    return png(fig)
