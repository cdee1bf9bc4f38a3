"""Training objectives as pure functions of (model, x): each returns the bound itself,
per example, and its terms, so the loss you see is the quantity it is named after.

    ELBO  log p(x) >= E_q[log p(x|z)] - KL(q(z|x) || p(z))           Kingma & Welling 2014
    IWAE  log p(x) >= E[log 1/k sum_i p(x, z_i) / q(z_i|x)]           Burda et al. 2016
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch.distributions import kl_divergence


class Bound(NamedTuple):
    bound: torch.Tensor  # (B,) the objective's value per example (higher is better)
    recon: torch.Tensor  # (B,) E_q[log p(x|z)], one-sample estimate
    kl: torch.Tensor  # (B,) KL(q(z|x) || p(z)), closed form where it exists


def kl_term(q, p, z: torch.Tensor) -> torch.Tensor:
    """KL(q || p) per example: closed form if torch knows it, else the one-sample estimate
    log q(z) - log p(z) at the reparameterised z (unbiased, and its gradient flows)."""
    try:
        return kl_divergence(q, p)  # (B,)
    except NotImplementedError:
        return q.log_prob(z) - p.log_prob(z)


def elbo(model, x: torch.Tensor, beta: float = 1.0) -> Bound:
    """ELBO with KL weight `beta` (beta = 1: the evidence lower bound; otherwise a beta-VAE
    objective, Higgins et al. 2017). x: (B, *shape) -> per-example terms (B,)."""
    q = model.encode(x)
    z = q.rsample()  # (B, d), reparameterised: gradients reach the encoder
    recon = model.decode(z).log_prob(x)  # (B,)
    kl = kl_term(q, model.prior_dist(), z)  # (B,)
    return Bound(recon - beta * kl, recon, kl)


def log_weights(model, x: torch.Tensor, k: int, eps: torch.Tensor | None = None, q=None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Importance log-weights log p(x, z_i) - log q(z_i|x) for z_i ~ q(z|x), i = 1..k.

    `eps` (k, B, d), if given, is the standard-normal noise to use (z = mu + sigma * eps);
    `q`, if given, is q(z|x) already computed (evaluation reuses it across chunks of k).
    Returns (log_w, log_px_z, log_ratio), each (k, B); log_ratio = log q(z_i|x) - log p(z_i).
    """
    q = model.encode(x) if q is None else q
    z = q.rsample((k,)) if eps is None else q.mean + q.stddev * eps  # (k, B, d)
    log_px_z = model.decode(z).log_prob(x)  # (k, B): x broadcasts over the k samples
    log_ratio = q.log_prob(z) - model.prior_dist().log_prob(z)  # (k, B)
    return log_px_z - log_ratio, log_px_z, log_ratio


def iwae(model, x: torch.Tensor, k: int = 5) -> Bound:
    """The importance-weighted bound with k samples; k = 1 is the ELBO (single-sample)."""
    log_w, log_px_z, log_ratio = log_weights(model, x, k)
    bound = torch.logsumexp(log_w, dim=0) - math.log(k)  # (B,)
    return Bound(bound, log_px_z.mean(0), log_ratio.mean(0))
