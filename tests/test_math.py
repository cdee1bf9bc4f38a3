"""The probability: KL, ELBO, IWAE and the importance-sampled log-likelihood against
closed forms and exact marginals."""

import math

import pytest
import torch
from torch import nn
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

import vaekit
from vaekit import VAE, Config, elbo, iwae, log_likelihood
from vaekit.likelihoods import Bernoulli, DiscretizedLogistic, Gaussian
from vaekit.objectives import kl_term
from vaekit.priors import StandardNormal


def test_kl_closed_form_matches_torch_and_monte_carlo():
    torch.manual_seed(0)
    mu, sigma = torch.randn(4, 3), torch.rand(4, 3) + 0.3
    q = Independent(Normal(mu, sigma), 1)
    p = StandardNormal(3)()
    by_hand = 0.5 * (mu**2 + sigma**2 - 1 - torch.log(sigma**2)).sum(-1)  # (4,)
    assert torch.allclose(kl_term(q, p, q.rsample()), by_hand, atol=1e-6)
    assert torch.allclose(kl_divergence(q, p), by_hand, atol=1e-6)
    z = q.sample((200_000,))  # (S, 4, 3)
    mc = (q.log_prob(z) - p.log_prob(z)).mean(0)
    assert torch.allclose(mc, by_hand, atol=0.02)


class Fixed(nn.Module):
    """Ignores its input and returns a fixed tensor per example."""

    def __init__(self, value):
        super().__init__()
        self.value = nn.Parameter(value)

    def forward(self, x):
        return self.value.expand(x.shape[0], *self.value.shape)


def test_elbo_matches_hand_computation():
    # decoder output does not depend on z: recon is exact, KL closed form by hand
    d, D = 2, 3
    enc = Fixed(torch.tensor([0.5, -1.0, 0.2, 0.3]))  # mu (0.5, -1), raw sigma
    loc, raw = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.0, 1.0, -1.0])
    dec = Fixed(torch.stack([loc, raw]))  # (2, D)
    model = VAE(enc, dec, StandardNormal(d), Gaussian((D,)), d, (D,))
    x = torch.tensor([[0.0, 1.0, 2.0]])
    b = elbo(model, x, beta=2.0)
    sd = torch.nn.functional.softplus(raw) + Gaussian.min_scale
    recon = sum(-0.5 * math.log(2 * math.pi) - math.log(s) - 0.5 * ((xi - m) / s) ** 2
                for xi, m, s in zip(x[0].tolist(), loc.tolist(), sd.tolist()))
    sig = torch.nn.functional.softplus(torch.tensor([0.2, 0.3])) + VAE.min_sigma
    mu = torch.tensor([0.5, -1.0])
    kl = float(0.5 * (mu**2 + sig**2 - 1 - torch.log(sig**2)).sum())
    assert b.recon.item() == pytest.approx(recon, rel=1e-5)
    assert b.kl.item() == pytest.approx(kl, rel=1e-5)
    assert b.bound.item() == pytest.approx(recon - 2.0 * kl, rel=1e-5)


@pytest.mark.parametrize("soft", [False, True])
def test_bernoulli_log_prob_matches_torch_with_broadcasting_and_gradients(soft):
    from torch.distributions import Bernoulli as TorchBernoulli

    torch.manual_seed(0)
    logits = (torch.randn(5, 3, 1, 4, 4) * 8).requires_grad_()  # (k, B, *shape), large logits included
    x = torch.rand(3, 1, 4, 4)  # (B, *shape): broadcast over k
    x = x if soft else (x < 0.5).float()
    ours = Bernoulli((1, 4, 4))(logits.unsqueeze(2)).log_prob(x)  # the decoder emits (..., n_params, *shape)
    ref = Independent(TorchBernoulli(logits=logits, validate_args=False), 3).log_prob(x)
    assert ours.shape == (5, 3)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-4)
    g_ours, = torch.autograd.grad(ours.sum(), logits)
    g_ref, = torch.autograd.grad(ref.sum(), logits)
    torch.testing.assert_close(g_ours, g_ref)  # x - sigmoid(l), the same gradient


def test_gradients_flow_through_reparameterised_sample():
    torch.manual_seed(0)
    model = VAE.from_config(Config(latent_dim=3, hidden=[8], input_shape=[5], likelihood="gaussian"))
    x = torch.randn(7, 5)
    (-elbo(model, x).bound.mean()).backward()
    first = model.encoder.net[0].weight.grad
    assert first is not None and first.abs().sum() > 0
    # with the KL removed, the encoder still learns through z alone
    model.zero_grad()
    (-elbo(model, x, beta=0.0).bound.mean()).backward()
    assert model.encoder.net[0].weight.grad.abs().sum() > 0


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    return VAE.from_config(Config(latent_dim=2, hidden=[16], input_shape=[4], likelihood="gaussian"))


def test_iwae_k1_equals_elbo_in_expectation_and_rises_with_k():
    model = _tiny_model()
    x = torch.randn(3, 4)
    with torch.no_grad():
        torch.manual_seed(1)
        e = torch.stack([elbo(model, x).bound for _ in range(4000)]).mean(0)
        torch.manual_seed(2)
        i1 = torch.stack([iwae(model, x, k=1).bound for _ in range(4000)]).mean(0)
        i20 = torch.stack([iwae(model, x, k=20).bound for _ in range(1000)]).mean(0)
    assert torch.allclose(e, i1, atol=0.1 + 0.01 * e.abs().max())
    assert (i20 > i1).all()


def linear_gaussian_vae(exact_posterior: bool):
    """p(z) = N(0, I), p(x|z) = N(Wz + b, s^2 I) with orthogonal columns of W, so the exact
    posterior is diagonal; returns (model, exact marginal p(x))."""
    torch.manual_seed(0)
    d, D, s = 2, 4, 0.5
    Q, _ = torch.linalg.qr(torch.randn(D, d))
    lam = torch.tensor([2.0, 0.7])
    W, b = Q * lam, torch.randn(D)  # (D, d)
    post_var = 1 / (1 + lam**2 / s**2)  # (d,)
    floor_s, floor_q = Gaussian.min_scale, VAE.min_sigma
    inv_softplus = lambda y: torch.log(torch.expm1(y))  # noqa: E731

    class Enc(nn.Module):
        def forward(self, x):  # exact posterior mean: post_var * W^T (x - b) / s^2
            mu = (x - b) @ W * (post_var / s**2)
            if not exact_posterior:
                mu = mu * 1.1 + 0.05
            sd = post_var.sqrt() * (1.0 if exact_posterior else 1.3)
            return torch.cat([mu, inv_softplus(sd - floor_q).expand_as(mu)], -1)

    class Dec(nn.Module):
        def forward(self, z):
            loc = z @ W.T + b  # (B, D)
            return torch.stack([loc, inv_softplus(torch.tensor(s - floor_s)).expand_as(loc)], 1)

    model = VAE(Enc(), Dec(), StandardNormal(d), Gaussian((D,)), d, (D,))
    model.register_parameter("dummy", nn.Parameter(torch.zeros(1)))
    marginal = MultivariateNormal(b, W @ W.T + s**2 * torch.eye(D))
    return model, marginal


def test_log_likelihood_exact_on_linear_gaussian_vae():
    model, marginal = linear_gaussian_vae(exact_posterior=True)
    x = marginal.sample((50,))
    est = log_likelihood(model, x, k=3)
    assert torch.allclose(est, marginal.log_prob(x).double(), atol=1e-4)


def test_log_likelihood_converges_with_imperfect_posterior():
    model, marginal = linear_gaussian_vae(exact_posterior=False)
    torch.manual_seed(3)
    x = marginal.sample((40,))
    exact = marginal.log_prob(x).double()
    elbo_gap = (exact - elbo(model, x).bound.double()).mean()
    est = log_likelihood(model, x, k=5000)
    assert elbo_gap > 0.05  # the proposal is visibly off ...
    assert (est - exact).abs().max() < 0.02  # ... and importance sampling still finds log p(x)


def test_chunked_and_unchunked_agree():
    model = _tiny_model()
    x = torch.randn(10, 4)
    eps = torch.randn(64, 10, 2)  # (k, N, d): the same draws, fed in any grouping

    def feeder(batch_size):
        state = {"i": 0, "b": 0}

        def noise(shape):
            c, b, _ = shape
            out = eps[state["i"]:state["i"] + c, state["b"]:state["b"] + b]
            state["i"] += c
            if state["i"] == len(eps):
                state["i"], state["b"] = 0, state["b"] + b
            return out
        return noise

    whole = log_likelihood(model, x, k=64, chunk=64, batch_size=10, noise=feeder(10))
    for chunk, bs in [(7, 10), (1, 10), (64, 3), (5, 4)]:
        part = log_likelihood(model, x, k=64, chunk=chunk, batch_size=bs, noise=feeder(bs))
        assert torch.allclose(whole, part, atol=1e-5, rtol=0)  # float32 matmuls differ by shape
    by_hand = torch.logsumexp(torch.stack([
        log_likelihood(model, x, k=1, noise=lambda s, i=i: eps[i:i + 1]) for i in range(64)]), 0) - math.log(64)
    assert torch.allclose(whole, by_hand, atol=1e-5, rtol=0)


def test_compiled_estimator_matches_eager():
    model = _tiny_model()
    x = torch.randn(10, 4)
    eps = torch.randn(32, 10, 2)

    def feed():
        chunks = iter(eps.split(8))  # (8, 10, 2) each: the chunking asked for below
        return lambda shape: next(chunks)
    eager = log_likelihood(model, x, k=32, chunk=8, batch_size=10, noise=feed())
    compiled = log_likelihood(model, x, k=32, chunk=8, batch_size=10, noise=feed(), compile=True)
    assert torch.allclose(eager, compiled, atol=1e-4)


@pytest.mark.parametrize("loc,log_scale", [(0.3, -2.0), (-0.99, -5.0), (0.999, -7.0), (0.0, 1.0), (2.5, -3.0),
                                           (0.1234, -6.5), (-3.0, 0.5)])
def test_discretized_logistic_is_a_probability_over_256_levels(loc, log_scale):
    """Summed over the 256 levels k/255 the bin probabilities make 1 (the end bins take the
    tails), any location and scale, down to the clamp; gradients stay finite at the ends."""
    grid = torch.arange(256) / 255.0  # (256,)
    lk = DiscretizedLogistic((1,))
    params = torch.tensor([loc, log_scale]).reshape(1, 2, 1).expand(256, 2, 1).clone().requires_grad_()
    lp = lk(params).log_prob(grid[:, None])  # (256,): one example per level
    assert float(lp.detach().logsumexp(0)) == pytest.approx(0.0, abs=2e-5)
    lp.sum().backward()
    assert torch.isfinite(params.grad).all()


def test_discretized_logistic_draws_land_on_the_grid_with_the_bin_probabilities():
    lk = DiscretizedLogistic((1,))
    n = 200_000
    x = lk(torch.tensor([0.2, -2.0]).reshape(1, 2, 1).expand(n, 2, 1)).draw(torch.Generator().manual_seed(0))
    assert torch.equal(x * 255, torch.round(x * 255)) and x.min() >= 0 and x.max() <= 1
    freq = torch.bincount((x[:, 0] * 255).round().long(), minlength=256).double() / n  # (256,)
    p = lk(torch.tensor([0.2, -2.0]).reshape(1, 2, 1).expand(256, 2, 1)).log_prob(
        (torch.arange(256) / 255.0)[:, None]).exp().double()  # (256,)
    assert float((freq - p).abs().max()) < 5 * math.sqrt(float(p.max()) / n)  # within sampling noise
    mean = lk(torch.tensor([0.2, -2.0]).reshape(1, 2, 1)).mean  # the location on the [0, 1] scale
    assert float(mean) == pytest.approx(0.6) and float(mean) == pytest.approx(float(x.mean()), abs=0.01)


def test_gaussian_density_is_exact_and_stays_finite_for_data_in_huge_units():
    """Data near 1e20 (finite in float32, but its square is not): the per-value scale is found in
    float64 and the log-density standardises before it squares, so log p(x) is the standardised
    density minus log(scale), finite, and training does not stop at step 0."""
    torch.manual_seed(0)
    x = torch.randn(64, 3) * 1e20  # (N, 3)
    lik = Gaussian((3,))
    lik.set_data_stats(x)
    assert torch.isfinite(lik.scale).all() and torch.allclose(lik.scale.double(), x.double().std(0, unbiased=False),
                                                                rtol=1e-5)
    params = torch.randn(64, 2, 3)  # (N, [loc, raw scale], 3)
    px = lik(params)
    lp = px.log_prob(x)  # (N,)
    loc, sd = params[:, 0], torch.nn.functional.softplus(params[:, 1]) + lik.min_scale
    u = (x.double() - lik.shift.double()) / lik.scale.double()  # standard units, in float64
    want = (Normal(loc.double(), sd.double()).log_prob(u) - lik.scale.double().log()).sum(-1)
    assert torch.isfinite(lp).all() and torch.allclose(lp.double(), want, rtol=1e-5, atol=1e-3)
    # the same density as torch's own Normal where that one does not overflow
    small = Gaussian((3,))
    small.set_data_stats(x / 1e20)
    assert torch.allclose(small(params).log_prob(x / 1e20),
                          Independent(Normal(small.shift + small.scale * loc, small.scale * sd), 1).log_prob(x / 1e20),
                          atol=1e-5)
    model = vaekit.fit(x, Config(latent_dim=2, hidden=[8], epochs=2, val_fraction=0.0, patience=0, progress=False))
    assert math.isfinite(model.history.epochs[-1]["train_loss"])
