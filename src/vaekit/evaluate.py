"""Honest evaluation: the importance-sampled log-likelihood, the ELBO and its terms, the KL
per latent dimension and the active units.

    log p(x) ~= log 1/k sum_i p(x, z_i) / q(z_i|x),   z_i ~ q(z|x)     (Burda et al. 2016)

The estimate is a stochastic lower bound that tightens as k grows; it is never the ELBO
passed off as the likelihood.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch.distributions import Independent, MixtureSameFamily, Normal, kl_divergence

from .data import MNIST_TEST_BINARIZE_SEED, binarize_fixed, check_finite, is_binary, on_8bit_grid
from .errors import ConfigError, IncompatibleError, NonFiniteError
from .model import as_float
from .monitor import work_bar
from .objectives import log_weights

ACTIVE = 0.01  # Burda et al. 2016: a unit is active when Cov_x(E_q[z_u|x]) > 0.01


@torch.no_grad()
def posterior_means(model, x: torch.Tensor, c: torch.Tensor | None = None, batch_size: int = 500) -> torch.Tensor:
    """E_q[z|x] of every example of x (N, *shape), batch by batch: (N, d) float64 on the CPU."""
    return torch.cat([model.encode(x[i:i + batch_size], None if c is None else c[i:i + batch_size]).mean.double().cpu()
                      for i in range(0, len(x), batch_size)])


def activity(mu: torch.Tensor) -> torch.Tensor:
    """Each unit's activity, the variance over the data of its posterior mean: mu (N, d) -> (d,)."""
    return mu.var(0, unbiased=False) if len(mu) > 1 else torch.zeros(mu.shape[1], dtype=mu.dtype)


def check_eval_data(model, x: torch.Tensor) -> None:
    """Refuse data the model's likelihood gives no honest number for: another shape, NaN/Inf,
    values outside [0, 1] for a Bernoulli or discretized-logistic model, values off the 8-bit
    grid for the latter (training refuses the same data)."""
    shape = tuple(model.input_shape)
    if tuple(x.shape[1:]) != shape:
        one = " (one example: pass x[None], a batch of one)" if tuple(x.shape) == shape else ""
        raise IncompatibleError(f"the data's examples have shape {tuple(x.shape[1:])} but the model expects "
                                f"{shape}{one}; evaluate it on data like its training data")
    check_finite(x, "the evaluation data")
    config = getattr(model, "config", None)
    if config is None or config.likelihood not in ("bernoulli", "discretized-logistic"):
        return
    lo, hi = (float(x.min()), float(x.max())) if isinstance(x, torch.Tensor) else x.summary()[:2]  # streamed: one pass
    if not (lo >= 0 and hi <= 1):
        raise IncompatibleError(f"the data has values in {lo:.3g}..{hi:.3g} but this model's "
                                f"{config.likelihood} likelihood needs [0, 1]; use data scaled like its training data")
    if config.likelihood == "discretized-logistic" and not on_8bit_grid(x):
        raise IncompatibleError("the data is not 8-bit (values k/255) but this model's discretized-logistic "
                                "likelihood is a probability of 8-bit pixels; evaluate it on 8-bit data scaled "
                                "to [0, 1], like its training data")


def prepare_eval_data(model, x: torch.Tensor, seed: int = MNIST_TEST_BINARIZE_SEED) -> torch.Tensor:
    """Check x fits the model; binarise it once with a fixed seed if the model trained on
    dynamically binarised data, so every model is scored on the same bits. A Bernoulli model
    trained on grey levels as soft targets (binarize=none) is scored on those bits too: only
    binary data has a probability under it (grey data would give a cross-entropy, not an NLL)."""
    check_eval_data(model, x)
    config = getattr(model, "config", None)
    x = x.to(model.device, torch.float32)
    if config is not None and (config.binarize == "dynamic" or (config.likelihood == "bernoulli"
                                                                and not is_binary(x))):
        x = binarize_fixed(x, seed)
    return x


@torch.no_grad()
def log_likelihood(model, x: torch.Tensor, k: int = 1000, batch_size: int = 100,
                   chunk: int | None = None, noise=None, compile: bool = False,
                   c: torch.Tensor | None = None, progress: bool = False) -> torch.Tensor:
    """Importance-sampled log p(x) per example: x (N, *shape) -> (N,) float64, in nats, on x's
    device (x may live anywhere: each batch is moved to the model's device in turn).

    Vectorised over (k, batch); the k samples are drawn `chunk` at a time (default: as many
    as keep each chunk near 2^21 decoded values, cache-sized), so memory is bounded for any k;
    the log-weights are combined with logsumexp in float64. `noise(shape)`, if given, supplies
    the standard-normal draws (tests use it to feed the same draws to any chunking).
    `compile=True` runs full-sized chunks through `torch.compile` (fusing the likelihood's
    element-wise work; about 1.4x on CPU, after a compile of 10-20 s): for large N x k.
    A conditional model takes the conditions `c` (N, C): then this is log p(x|c).
    `progress=True` shows a bar (examples done, rate, time left) on a terminal.
    """
    for name, v in (("k", k), ("batch_size", batch_size), ("chunk", chunk or 1)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ConfigError(f"{name}={v!r} must be an integer >= 1")
    if not isinstance(x, torch.Tensor) and not hasattr(x, "summary"):  # numpy or a list; streamed rows stay lazy
        x = as_float(x)
    check_eval_data(model, x)
    model.eval()
    values = math.prod(model.input_shape)
    chunk = chunk or max(1, min(k, (1 << 21) // max(1, batch_size * values)))
    compiled = torch.compile(_log_w_from_noise, dynamic=False) if compile else None
    out = []
    bar = work_bar(len(x), f"log p(x), k = {k}") if progress else None
    try:
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(model.device)  # (B, *shape)
            cb = None if c is None else torch.as_tensor(c[i:i + batch_size]).to(model.device)  # (B, C)
            out.append(_batch_log_likelihood(model, xb, cb, k, chunk, noise, compiled, batch_size).to(x.device))
            if bar is not None:
                bar.update(len(out[-1]))
    finally:
        if bar is not None:
            bar.close()
    return torch.cat(out)


def _batch_log_likelihood(model, xb: torch.Tensor, cb: torch.Tensor | None, k: int, chunk: int, noise, compiled,
                          batch_size: int) -> torch.Tensor:
    """log p(x) of one batch xb (B, *shape) (conditions cb (B, C)): k samples, `chunk` at a time -> (B,)."""
    q = model.encode(xb, cb)  # once per batch, shared by every chunk of samples
    factorised = isinstance(q, Independent) and isinstance(q.base_dist, Normal)
    total = None  # running logsumexp over the chunks done: memory stays (B,) for any k
    for j in range(0, k, chunk):
        n_k = min(chunk, k - j)
        if not factorised:  # e.g. hierarchical posteriors draw layer by layer
            if noise is not None:
                raise ValueError("noise can be given only for a factorised Normal q(z|x)")
            log_w = log_weights(model, xb, n_k, None, q, cb)[0]  # (n_k, B)
        else:
            eps = noise((n_k, len(xb), model.latent_dim)).to(xb.device) if noise is not None else \
                torch.randn(n_k, len(xb), model.latent_dim, device=xb.device)  # (n_k, B, d)
            full = compiled is not None and n_k == chunk and len(xb) == batch_size  # one static shape
            log_w = (compiled if full else _log_w_from_noise)(model, xb, eps, q.mean, q.stddev, cb)  # (n_k, B)
        part = torch.logsumexp(log_w.double(), dim=0)  # (B,)
        total = part if total is None else torch.logaddexp(total, part)
    return total - math.log(k)  # (B,)


def _log_w_from_noise(model, xb: torch.Tensor, eps: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor,
                      cb: torch.Tensor | None = None) -> torch.Tensor:
    """log p(x, z) - log q(z|x) at z = mu + sigma * eps: (c, B, d) noise -> (c, B)."""
    q = Independent(Normal(mu, sigma, validate_args=False), 1, validate_args=False)
    z = mu + sigma * eps  # (c, B, d)
    return model.decode(z, cb).log_prob(xb) + model.prior_dist().log_prob(z) - q.log_prob(z)


@torch.no_grad()
def evaluate(model, x: torch.Tensor, k: int = 1000, batch_size: int = 100,
             chunk: int | None = None, compile: bool = False, c: torch.Tensor | None = None,
             progress: bool = False) -> dict[str, Any]:
    """Everything `vaekit evaluate` prints, for data x (N, *shape) already prepared (and the
    conditions c (N, C) of a conditional model); `progress`: a bar on a terminal."""
    if not isinstance(x, torch.Tensor) and not hasattr(x, "summary"):  # numpy or a list; streamed rows stay lazy
        x = as_float(x)
    model.eval()
    ll = log_likelihood(model, x, k=k, batch_size=batch_size, chunk=chunk, compile=compile, c=c,
                        progress=progress)  # (N,)
    if bool(torch.isnan(ll).any()):  # a NaN mean would print as a result
        raise NonFiniteError(f"log p(x) is NaN for {int(torch.isnan(ll).sum())} of {len(ll)} examples: the "
                             "model's weights hold NaN or Inf (check them with torch.isfinite); train again")
    n = len(x)
    recon_sum, kl_sum, kl_dims, means = 0.0, 0.0, torch.zeros(model.latent_dim, dtype=torch.float64), []
    kl_layers = None
    prior = model.prior_dist()
    for i in range(0, n, batch_size):
        xb = x[i:i + batch_size].to(model.device)  # (B, *shape)
        cb = None if c is None else torch.as_tensor(c[i:i + batch_size]).to(model.device)  # (B, C)
        q = model.encode(xb, cb)
        z = q.rsample()  # (B, d)
        recon_sum += float(model.decode(z, cb).log_prob(xb).double().sum())
        per_dim, total = _kl_terms(q, prior, z)  # (B, d), (B,)
        kl_dims += per_dim.double().sum(0).cpu()
        kl_sum += float(total.double().sum())
        means.append(q.mean.double().cpu())
        if hasattr(q, "layer_sizes"):  # hierarchical: the per-dim terms of each layer, summed
            per = torch.stack([t.sum(-1) for t in torch.split(per_dim, q.layer_sizes, -1)])  # (L, B)
            kl_layers = per.double().sum(1).cpu() + (0 if kl_layers is None else kl_layers)
    mu = torch.cat(means)  # (N, d)
    kl_per_dim = kl_dims / n
    active = activity(mu)  # (d,)
    nll = -float(ll.mean())
    result = {
        "nll": nll,
        "nll_se": float(ll.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan"),
        "elbo": (recon_sum - kl_sum) / n,
        "recon": recon_sum / n,
        "kl": kl_sum / n,
        "kl_per_dim": [round(v, 6) for v in kl_per_dim.tolist()],
        "active_units": int((active > ACTIVE).sum()),
        "k": k,
        "n": n,
    }
    if c is not None:  # nll is -log p(x|c): below the marginal -log p(x), not comparable with unconditional figures
        result["conditional"] = True
    if kl_layers is not None:
        result["kl_per_layer"] = [round(v, 6) for v in (kl_layers / n).tolist()]
    # images: also bits per dimension, only where p(x) is a probability (binary or 8-bit pixels). A Gaussian
    # gives a density of real values, whose "bits/dim" can go negative and would not compare with
    # the literature's discrete 8-bit figures
    if len(model.input_shape) == 3 and getattr(model.likelihood, "discrete", False):
        result["bits_per_dim"] = nll / (math.prod(model.input_shape) * math.log(2))
    return result


def _kl_terms(q, p, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """KL(q(z|x) || p(z)) per latent dimension (B, d) and in all (B,), at the sample z.

    Factorised Normals: closed form, and the dims sum to the total. Hierarchies: the one-sample
    log q(z_i|.) - log p(z_i|.) of each dim given the layers above, which also sum to the
    total. A mixture prior (VampPrior, mog) does not factorise: each dim is scored against the
    prior's marginal in that dim (a 1-D mixture), which says how far the dim moved from the
    prior; these need not sum to the total, whose remainder is the dependence between dims the
    mixture carries. Anything else: the total split evenly (there is no per-dim term to give).
    """
    try:
        per = kl_divergence(q.base_dist, p.base_dist).expand_as(z)  # (B, d)
        return per, per.sum(-1)
    except (NotImplementedError, AttributeError):
        pass
    if hasattr(q, "dim_log_probs") and hasattr(p, "dim_log_probs"):  # one pass each, the total their sum
        per = q.dim_log_probs(z) - p.dim_log_probs(z)
        return per, per.sum(-1)
    total = q.log_prob(z) - p.log_prob(z)  # (B,) one-sample estimate
    if isinstance(p, MixtureSameFamily) and isinstance(q, Independent) and isinstance(q.base_dist, Normal):
        comp = p.component_distribution.base_dist  # (K, d) locs and scales
        log_mix = torch.log_softmax(p.mixture_distribution.logits, -1)[:, None]  # (K, 1)
        marg = torch.stack([torch.logsumexp(log_mix + comp.log_prob(zb[None]), 0)  # (K, d) -> (d,)
                            for zb in z.reshape(-1, z.shape[-1])]).reshape(z.shape)  # (B, d), one row at a time
        return q.base_dist.log_prob(z) - marg, total
    return (total / z.shape[-1]).unsqueeze(-1).expand_as(z), total
