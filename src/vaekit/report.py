"""The HTML report: what a model learned, in one self-contained file.

    vaekit.report("runs/digits", "digits", out="report.html")

One HTML file, PNGs embedded as base64, inline CSS, no script and no external URL: it opens
offline in any browser and can be mailed around. It holds the training curves, prior samples,
inputs beside their reconstructions, interpolations, traversals of the most active latent
dimensions, the encoded data over the prior's contours, the KL per dimension, the evaluation
numbers and the config. `table_section` renders real vs synthetic tables (pandas in, HTML
out) for table models. The module itself is callable: `vaekit.report(...)` is `report.report`.
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from . import plots
from .errors import ConfigError
from .evaluate import ACTIVE, activity, posterior_means
from .htmlpage import _e, _fmt, _img, _section, _table, page
from .table_report import _table_report, associations, table_section  # noqa: F401 (re-exported: vaekit.report.table_section)



def check_output_html(out: str | os.PathLike, force: bool = True) -> Path:
    """Refuse a bad output path (or, unless `force`, an existing file) before any work is done."""
    from .checkpoint import check_output_path

    return check_output_path(out, (".html", ".htm"), "the report is HTML; give a file name ending in .html", ".html",
                             force)


def report(run_or_model, data: Any = None, out: str | os.PathLike = "report.html", *, k: int = 100,
           n: int = 1000, split: str = "test", data_dir: str | os.PathLike | None = None, seed: int = 0,
           device: str = "cpu", title: str | None = None, sections: Iterable[str] = (), force: bool = True,
           sep: str | None = None) -> Path:
    """Write the HTML report of a run folder (or a trained VAE) to `out`, atomically.

    `data` (a dataset name or path as for `load_data`, a Dataset, or an array (N, *shape))
    adds reconstructions, interpolations, traversals, the latent space and the evaluation
    (importance-sampled with `k` samples on the first `n` examples). `sections` are extra
    HTML sections (e.g. from `table_section`) appended before the config. `force=False`
    refuses an existing `out` (the CLI's default). `sep`: a table run's CSV separator, where
    the file's cannot be sniffed (as `--sep` in training). Returns the path."""
    from .checkpoint import load, read_manifest, read_verified, write_atomic
    from .train import METRICS, resolve_device

    path = check_output_html(out, force)
    if k < 1 or n < 1:
        raise ConfigError(f"k={k} and n={n} must be >= 1 (--k, -n)")
    plots.require()  # before any work
    rows: list[dict[str, Any]] = []
    if isinstance(run_or_model, (str, os.PathLike)):
        folder = Path(run_or_model)
        model = load(folder, device=resolve_device(device))
        manifest = read_manifest(folder)
        if METRICS in manifest["files"]:
            text = read_verified(folder, METRICS, manifest).decode()
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        name = folder.name
    else:
        model, name = run_or_model, "model"
        history = getattr(model, "history", None)
        rows = list(history.epochs) if history is not None else []
    name = title or name
    model.eval()
    table = getattr(model, "schema", None) is not None
    ds = _dataset(data, split, data_dir) if data is not None and not table else None

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    config = getattr(model, "config", None)
    second = "mmd" if config is not None and config.objective == "wae-mmd" else "kl"
    if table:  # a table model: real vs synthetic tables, not pictures of x
        sections = [_table_report(model, data, n, seed, sep), *sections]
        body = [f"<h1>vaekit report: {_e(name)}</h1>",
                f"<p>table model: {len(model.schema.names)} columns, latent dimensions {model.latent_dim}, "
                f"{model.num_parameters():,} parameters</p>"]
        if rows:
            body.append(_section("Training", _img(plots.curves(rows, second), "training curves")))
        body += list(sections)
        if config is not None:
            items = "".join(f"<div><b>{_e(key)}</b> {_e(_fmt(v))}</div>" for key, v in config.to_dict().items())
            body.append(_section("Config", f"<div class=kv>{items}</div>"))
        write_atomic(path, page(f"vaekit report: {name}", body).encode())
        return path
    image = len(model.input_shape) == 3
    body = [f"<h1>vaekit report: {_e(name)}</h1>",
            f"<p>latent dimensions {model.latent_dim}, input shape {tuple(model.input_shape)}, "
            f"{model.num_parameters():,} parameters"
            + (f"; data: {_e(ds.name)}" if ds is not None else "") + "</p>"]
    data_parts = _data_sections(model, ds, n, k, image) if ds is not None else []
    body += data_parts[:1]  # the evaluation numbers first
    if rows:
        body.append(_section("Training", _img(plots.curves(rows, second), "training curves")
                             + f"<p class=note>{len(rows)} epochs from metrics.jsonl; the loss is the negative "
                             "of the training bound, per example, in nats.</p>"))
    body.append(_section("Samples from the prior", _samples(model, ds, gen, image)))
    if ds is None:
        body.append("<p class=note>No data given: pass DATA (e.g. <code>vaekit report RUN digits</code>) for "
                    "reconstructions, interpolations, traversals, the latent space and the evaluation.</p>")
    body += data_parts[1:] + list(sections)
    if config is not None:
        items = "".join(f"<div><b>{_e(key)}</b> {_e(_fmt(v))}</div>" for key, v in config.to_dict().items())
        body.append(_section("Config", f"<div class=kv>{items}</div>"))
    write_atomic(path, page(f"vaekit report: {name}", body).encode())
    return path


def _dataset(data: Any, split: str, data_dir):
    from .data import Dataset, load_data
    from .train import as_dataset

    if isinstance(data, (str, os.PathLike)):
        return load_data(str(data), split, data_dir)
    return data if isinstance(data, Dataset) else as_dataset(data)


def _samples(model, ds, gen: torch.Generator, image: bool) -> str:
    names = model.config.condition_names if model.condition_dim and model.config is not None else None
    classes = f" A conditional model: the classes {', '.join(map(_e, names))} in turn." if names else ""
    if image:
        rows = 16 if not names else len(names) * max(1, 16 // len(names))  # each column one class
        x = model.sample(64, generator=gen, condition=model.class_conditions(64))  # (64, C, H, W) means
        return _img(_grid(x, min(rows, 64)), "prior samples", grid=True) + "<p class=note>64 draws z ~ p(z), " \
            f"decoded (the likelihood's mean).{classes}</p>"
    x = _flat(model.sample(1000, mean=False, generator=gen, condition=model.class_conditions(1000)))  # draws, not means
    real = _flat(ds.x[:2000]) if ds is not None else None
    return (_img(plots.heatmaps([("generated", x[:32])] + ([("real", real[:32])] if real is not None else [])),
                 "samples as heat maps")
            + _img(plots.histograms(real, x), "per-feature histograms")
            + "<p class=note>Draws from p(x|z), z ~ p(z): 32 as rows of a heat map, and per-feature "
              "histograms of generated (orange) vs real (blue) values.</p>")


def _data_sections(model, ds, n: int, k: int, image: bool) -> list[str]:
    """Evaluation first, then reconstructions, interpolations, traversals, latent space."""
    from .evaluate import evaluate, prepare_eval_data
    from .train import data_conditions

    x = prepare_eval_data(model, ds.x[:n])  # shape checked; binarised as the model was evaluated
    raw = ds.x[:n].to(model.device, torch.float32)
    c = data_conditions(model, ds)  # (N, C) from the labels, or None
    c = None if c is None else c[:len(x)]
    result = evaluate(model, x, k=k, batch_size=100, c=c)
    given = ("; the model is conditional, so the NLL is -log p(x|c) given the data's labels (usually below the "
             "marginal -log p(x): not comparable with an unconditional model's)") if result.get("conditional") else ""
    shown = {key: v for key, v in result.items() if key not in ("kl_per_dim", "conditional")}
    out = [_section("Evaluation", _table(shown)
                    + f"<p class=note>On the first {result['n']} examples of {_e(ds.name)}; NLL importance-"
                    f"sampled with k = {k} (a stochastic lower bound on log p(x), tighter with larger k){given}.</p>")]
    mu = posterior_means(model, raw, c)  # (N, d)
    spread = activity(mu).numpy()  # (d,)
    active = (spread > ACTIVE).tolist()
    m = min(16, len(raw))
    recon = model.reconstruct(raw[:m], c=None if c is None else c[:m])
    if image:
        pics = _img(_grid(torch.cat([raw[:m], recon]), m), "inputs and reconstructions", grid=True)
        note = f"top row: {m} inputs; bottom row: the decoded posterior means."
    else:
        pics = _img(plots.heatmaps([("inputs", _flat(raw[:m])), ("reconstructions", _flat(recon))]), "reconstructions")
        note = f"{m} inputs and the decoded posterior means, one example per row."
    out.append(_section("Reconstructions", pics + f"<p class=note>{note}</p>"))
    if len(raw) >= 2:
        pairs = min(4, len(raw) // 2)
        c1, c2 = (None, None) if c is None else (c[0:2 * pairs:2], c[1:2 * pairs:2])
        path = model.interpolate(raw[0:2 * pairs:2], raw[1:2 * pairs:2], steps=10, c1=c1, c2=c2)  # (10, pairs, *shape)
        if image:
            pics = _img(_grid(path.transpose(0, 1).reshape(-1, *path.shape[2:]), 10), "interpolations", grid=True)
        else:
            pics = _img(plots.heatmaps([(f"pair {i + 1}", _flat(path[:, i])) for i in range(pairs)], "step"),
                        "interpolations")
        out.append(_section("Interpolations", pics + "<p class=note>Each row (panel) decodes 10 evenly spaced "
                            "points on the line between the posterior means of two inputs.</p>"))
    kl = np.asarray(result["kl_per_dim"])
    # most KL first; ties (a hierarchical model's KL is split evenly) by the spread of the means
    ranked = [int(i) for i in np.lexsort((-spread, -kl))]
    top = ([d for d in ranked if active[d]] or ranked[:1])[:6]  # collapsed units would show no change
    walks = [model.traverse(raw[0], d, span=3.0, steps=9, c=None if c is None else c[0]) for d in top]  # (9, *shape)
    if image:
        pics = _img(_grid(torch.cat(walks), 9), "traversals", grid=True)
    else:
        pics = _img(plots.heatmaps([(f"z{d}", _flat(w)) for d, w in zip(top, walks)], "step"), "traversals")
    out.append(_section("Latent traversals", pics + "<p class=note>Rows (panels): latent dimensions "
                        + ", ".join(f"z{d} (KL {kl[d]:.2f})" for d in top)
                        + ", the active ones with the most KL first. Each varies "
                        "one coordinate of the first input's posterior mean from -3 to 3.</p>"))
    out.append(_section("Latent space", _latent(model, mu, active, ds.labels, kl, ranked)))
    return out


def _latent(model, mu: torch.Tensor, active: list[bool], labels, kl: np.ndarray, ranked: list[int]) -> str:
    dims = ranked[:2]
    if len(dims) < 2:
        dims = dims * 2  # a 1-d latent space: the diagonal
    z = mu[:, dims].numpy()  # (N, 2)
    lab = labels[:len(mu)].numpy() if labels is not None else None
    pic = plots.latent_scatter(z, (f"z{dims[0]}", f"z{dims[1]}"), lab, _prior_grid(model, dims, z))
    bars = plots.kl_bars(kl.tolist(), active)
    return (_img(pic, "latent space") + "<p class=note>Posterior means of the data in the two dimensions with "
            f"the largest KL (z{dims[0]}, z{dims[1]})" + (", coloured by label" if lab is not None else "")
            + "; grey contours: the prior's density on those two dimensions.</p>" + _img(bars, "KL per dimension")
            + "<p class=note>KL(q(z|x) || p(z)) per dimension, averaged over the data; a unit is active when "
            f"the variance over the data of its posterior mean exceeds {ACTIVE}.</p>")


@torch.no_grad()
def _prior_grid(model, dims: list[int], z: np.ndarray, size: int = 80):
    """The prior's marginal density on two latent dims over a grid covering the data and +-3:
    exact for factorised Normal and Gaussian-mixture priors, a histogram of draws otherwise."""
    from torch.distributions import Independent, MixtureSameFamily, Normal

    lo = np.minimum(z.min(0), -3.0) - 0.5
    hi = np.maximum(z.max(0), 3.0) + 0.5
    xs, ys = np.linspace(lo[0], hi[0], size), np.linspace(lo[1], hi[1], size)
    pts = torch.tensor(np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2))  # (G*G, 2), row = y
    p = model.prior_dist()
    comps = p.component_distribution if isinstance(p, MixtureSameFamily) else p
    if isinstance(comps, Independent) and isinstance(comps.base_dist, Normal):
        loc = comps.base_dist.loc[..., dims].double().cpu()  # (2,) or (K, 2)
        scale = comps.base_dist.scale[..., dims].double().cpu()
        if isinstance(p, MixtureSameFamily):
            logw = p.mixture_distribution.logits.double().cpu().log_softmax(-1)  # (K,)
            log_p = torch.logsumexp(Normal(loc, scale).log_prob(pts[:, None, :]).sum(-1) + logw, -1)  # (G*G,)
        else:
            log_p = Normal(loc, scale).log_prob(pts).sum(-1)  # (G*G,)
        return xs, ys, log_p.exp().reshape(size, size).numpy()
    draws = model.prior.draw(20000, 1.0, torch.Generator().manual_seed(0), model.encode)[:, dims].cpu().numpy()
    dens, _, _ = np.histogram2d(draws[:, 1], draws[:, 0], bins=[size, size], range=[[lo[1], hi[1]], [lo[0], hi[0]]],
                                density=True)  # rows = y, as the grid above
    return xs, ys, dens


def _grid(x: torch.Tensor, nrow: int) -> bytes:
    """An image grid; values outside [0, 1] (a Gaussian model of raw pixels) are rescaled
    to the picture's own range instead of clipped."""
    from .sample import png_bytes

    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        x = (x - lo) / max(hi - lo, 1e-12)
    return png_bytes(x, nrow)


def _flat(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().reshape(len(x), -1).numpy()  # (N, features)


class _CallableModule(types.ModuleType):
    """`vaekit.report(...)` calls `report()`, while `vaekit.report.table_section` stays
    reachable: importing the submodule rebinds the package attribute to the module."""

    def __call__(self, *args, **kwargs) -> Path:
        return report(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
