"""Variants as objectives and parts: IWAE, free bits, KL warm-up, WAE-MMD, VampPrior and a
mixture prior, each checked against its math and trained briefly."""

import math

import pytest
import torch

import vaekit
from vaekit import Config
from vaekit.objectives import elbo, iwae, mmd, wae_mmd
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from vaekit.priors import GaussianMixture, MixturePrior, VampPrior
from vaekit.train import kl_weight


def _model(**kw):
    torch.manual_seed(0)
    return vaekit.VAE.from_config(Config(latent_dim=2, hidden=[16], input_shape=[4], likelihood="gaussian", **kw))


def test_iwae_k1_is_the_single_sample_elbo_exactly():
    model = _model(prior="mog")  # no closed-form KL: both use the same one-sample estimate
    x = torch.randn(6, 4)
    torch.manual_seed(1)
    a = iwae(model, x, k=1).bound
    torch.manual_seed(1)
    b = elbo(model, x).bound
    assert torch.allclose(a, b, atol=1e-5)


def test_iwae_beta_weighs_the_log_ratio_in_each_weight_and_the_warmup_reaches_it():
    # --kl-warmup and --beta were silently ignored by --objective iwae (same losses bit for bit)
    model = _model()
    x = torch.randn(6, 4)
    torch.manual_seed(1)
    b = iwae(model, x, k=3, beta=0.25).bound
    torch.manual_seed(1)
    q = model.encode(x)
    z = q.rsample((3,))  # (3, 6, 2)
    log_w = model.decode(z).log_prob(x) - 0.25 * (q.log_prob(z) - model.prior_dist().log_prob(z))  # (3, 6)
    assert torch.allclose(b, torch.logsumexp(log_w, 0) - math.log(3), atol=1e-5)
    torch.manual_seed(1)
    bound = torch.logsumexp(log_w + 0.75 * (model.prior_dist().log_prob(z) - q.log_prob(z)), 0) - math.log(3)
    assert torch.allclose(iwae(model, x, k=3).bound, bound, atol=1e-5)  # beta = 1 (default): the IWAE bound
    data = vaekit.load_data("digits").x[:200]
    losses = [vaekit.fit(data, Config(latent_dim=4, hidden=[16], epochs=1, objective="iwae", k=2, progress=False, **kw))
              .history.epochs[0]["train_loss"] for kw in ({}, {"kl_warmup": 5.0}, {"beta": 3.0})]
    assert losses[1] < losses[0] < losses[2]  # a lower KL weight flatters the loss, a higher one costs


def test_iwae_with_one_sample_is_refused_not_trained_as_the_elbo():
    # Config(objective="iwae") keeps Config's k=1, and fit trained the plain ELBO without a word
    with pytest.raises(vaekit.errors.ConfigError, match="k=1 trains the ELBO"):
        vaekit.fit(torch.rand(20, 4), Config(objective="iwae", epochs=1, progress=False))


def test_wae_mmd_with_batches_of_one_is_refused():
    # the MMD of one code is left out (0): batch_size=1 trained a plain autoencoder without a word
    with pytest.raises(vaekit.errors.ConfigError, match="needs 2 or more"):
        vaekit.fit(torch.rand(8, 4), Config(objective="wae-mmd", batch_size=1, epochs=1, progress=False))


@pytest.mark.parametrize("kw", [dict(objective="wae-mmd", kl_warmup=2.0), dict(objective="wae-mmd", beta=4.0),
                                dict(objective="wae-mmd", free_bits=0.5), dict(objective="iwae", k=2, free_bits=0.5)])
def test_kl_weights_an_objective_cannot_use_are_refused(kw):
    with pytest.raises(vaekit.errors.ConfigError, match="drop it|--kl-warmup 0"):
        vaekit.fit(torch.rand(8, 4), Config(**kw, epochs=1, progress=False))
    Config.from_dict(Config(**kw).to_dict())  # refused when training starts: a run saved so still loads


def test_mmd_zero_for_identical_positive_for_shifted():
    torch.manual_seed(0)
    a = torch.randn(200, 3)
    for kernel in ("imq", "rbf"):
        assert mmd(a, a.clone(), kernel, unbiased=False).abs() < 1e-6
        same = mmd(a, torch.randn(200, 3), kernel)
        shifted = mmd(a, torch.randn(200, 3) + 1.0, kernel)
        assert abs(float(same)) < 0.05 and shifted > 10 * abs(float(same)) and shifted > 0.1


def _integral(prior, encode=None, lim=7.0, n=281):
    g = torch.linspace(-lim, lim, n)
    zz = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)  # (n*n, 2)
    with torch.no_grad():
        dens = prior(encode).log_prob(zz).exp()
    return float(dens.sum() * (g[1] - g[0]) ** 2)


def test_vamp_and_mixture_priors_integrate_to_one_and_sample():
    model = _model(prior="vamp", prior_components=7)
    assert isinstance(model.prior, VampPrior)
    assert _integral(model.prior, model.encode) == pytest.approx(1.0, abs=2e-3)
    mog = MixturePrior(2, 5)
    assert _integral(mog) == pytest.approx(1.0, abs=2e-3)
    z = model.prior.draw(500, generator=torch.Generator().manual_seed(0), encode=model.encode)
    assert z.shape == (500, 2)
    z0 = model.prior.draw(50, temperature=0.0, encode=model.encode)
    with torch.no_grad():
        centres = model.encode(model.prior.pseudo_inputs).mean  # (K, 2)
    assert torch.cdist(z0, centres).min(1).values.max() < 1e-5  # temperature 0: component means


@pytest.mark.parametrize("scale", [1.0, 0.01])
def test_mixture_log_prob_by_matrix_products_matches_torch_in_value_and_gradient(scale):
    # narrow components far from 0 are where expanding the square cancels worst
    torch.manual_seed(0)
    K, d = 40, 12
    logits = torch.randn(K, requires_grad=True)
    loc = (3 * torch.randn(K, d)).requires_grad_()
    s = (scale * (torch.rand(K, d) + 0.1)).requires_grad_()
    z = (loc[torch.randint(K, (5, 6))].detach() + scale * torch.randn(5, 6, d)).requires_grad_()  # (k, B, d)

    def both(cls):
        dist = cls(Categorical(logits=logits), Independent(Normal(loc, s), 1))
        lp = dist.log_prob(z)
        return lp, torch.autograd.grad(lp.sum(), [logits, loc, s, z])

    (a, ga), (b, gb) = both(GaussianMixture), both(MixtureSameFamily)
    assert a.shape == b.shape == (5, 6) and a.dtype == torch.float32
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-4)
    for x, y in zip(ga, gb):
        assert torch.allclose(x, y, rtol=1e-4, atol=1e-4 * float(y.abs().max()))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # --amp must not lower the cancelling product
        c = GaussianMixture(Categorical(logits=logits), Independent(Normal(loc, s), 1)).log_prob(z)
    assert torch.allclose(c, a)


def test_kl_per_dim_of_a_mixture_prior_is_against_each_dims_marginal():
    from vaekit.evaluate import _kl_terms
    x = torch.randn(30, 4)
    with torch.no_grad():
        one = _model(prior="mog", prior_components=1)  # one component: the prior factorises
        q, p = one.encode(x), one.prior_dist()
        z = q.rsample()
        per, total = _kl_terms(q, p, z)
        assert torch.allclose(per.sum(-1), total, atol=1e-5)
        exact = q.base_dist.log_prob(z) - p.component_distribution.base_dist.log_prob(z)  # (B, d)
        assert torch.allclose(per, exact, atol=1e-5)
        vamp = _model(prior="vamp", prior_components=7)
        q, p = vamp.encode(x), vamp.prior_dist()
        z = q.rsample()
        per, total = _kl_terms(q, p, z)
        assert per.shape == z.shape and total.shape == (30,)
        assert torch.allclose(total, q.log_prob(z) - p.log_prob(z))
        assert not torch.allclose(per[:, 0], per[:, 1])  # not the total split evenly
    from vaekit.evaluate import evaluate
    res = evaluate(vamp, x, k=10)
    assert res["elbo"] == pytest.approx(res["recon"] - res["kl"])


def test_free_bits_and_kl_warmup():
    model = _model()
    x = torch.randn(8, 4)
    torch.manual_seed(0)
    plain = elbo(model, x)
    torch.manual_seed(0)
    fb = elbo(model, x, free_bits=50.0)  # every dim under its allowance
    assert torch.allclose(fb.kl, plain.kl) and torch.allclose(fb.recon, plain.recon)
    assert torch.allclose(fb.bound, fb.recon - 2 * 50.0)
    grads = []
    for use_bound in (True, False):  # under the allowance the KL adds no gradient at all
        model.zero_grad()
        torch.manual_seed(0)
        b = elbo(model, x, free_bits=50.0)
        (-(b.bound if use_bound else b.recon).mean()).backward()
        grads.append(model.encoder.net[-1].weight.grad.clone())
    assert torch.allclose(grads[0], grads[1]) and grads[0].abs().sum() > 0
    c = Config(beta=2.0, kl_warmup=2)
    assert kl_weight(c, 0, 10) == pytest.approx(0.1) and kl_weight(c, 9, 10) == pytest.approx(1.0)
    assert kl_weight(c, 20, 10) == 2.0 and kl_weight(Config(beta=0.5), 0, 10) == 0.5


def test_wae_mmd_objective_terms():
    model = _model()
    x = torch.randn(16, 4)
    b = wae_mmd(model, x, weight=3.0)
    assert torch.allclose(b.bound, b.recon - 3.0 * b.kl)
    assert torch.allclose(b.kl, b.kl[0].expand(16))  # one batch-level penalty


@pytest.mark.parametrize("kw", [
    dict(prior="vamp", prior_components=20),
    dict(prior="mog"),
    dict(objective="iwae", k=4),
    dict(objective="wae-mmd", mmd_kernel="rbf"),
    dict(kl_warmup=1.0, free_bits=0.1, beta=2.0),
])
def test_each_variant_trains_samples_and_evaluates_on_digits(kw):
    data = vaekit.load_data("digits", "train")
    model = vaekit.fit(data, Config(latent_dim=4, hidden=[64], epochs=3, batch_size=64, progress=False, **kw))
    val = model.history.column("val_loss")
    assert all(math.isfinite(v) for v in val) and val[-1] < val[0]
    assert model.sample(5).shape == (5, 1, 8, 8)
    x = data.x[:20].bernoulli(generator=torch.Generator().manual_seed(0))
    ll = vaekit.log_likelihood(model, x, k=50)
    assert torch.isfinite(ll).all() and ll.shape == (20,)
    if kw.get("objective") != "wae-mmd":
        torch.manual_seed(0)
        with torch.no_grad():
            assert float(ll.mean()) >= float(elbo(model, x).bound.mean()) - 0.5


def _ladder(dims=(1, 1)):
    torch.manual_seed(0)
    return vaekit.VAE.from_config(Config(arch="ladder", latent_dims=list(dims), ladder_hidden=[8], hidden=[16],
                                         input_shape=[4], likelihood="gaussian", activation="tanh"))


@pytest.mark.parametrize("arch", ["ladder", "hvae"])
def test_free_bits_per_stochastic_layer_of_a_hierarchy(arch):
    torch.manual_seed(0)
    if arch == "ladder":
        config = Config(arch="ladder", latent_dims=[3, 2], ladder_hidden=[8], hidden=[16], input_shape=[6],
                        likelihood="gaussian")
        x = torch.randn(16, 6)
    else:
        config = Config(arch="hvae", channels=[4, 8], groups=[1, 1], latent_channels=2, input_shape=[1, 8, 8],
                        likelihood="bernoulli")
        x = (torch.rand(16, 1, 8, 8) < 0.4).float()
    model = vaekit.VAE.from_config(config)

    def run(fb: float):
        torch.manual_seed(1)  # the same z for every call
        b = elbo(model, x, free_bits=fb)
        torch.manual_seed(1)
        q = model.encode(x)
        z = q.rsample()
        per = torch.stack([a - b for a, b in zip(q.layer_log_probs(z), model.prior_dist().layer_log_probs(z))], -1)
        return b, per.detach(), torch.tensor(q.layer_sizes, dtype=per.dtype)

    plain, per, sizes = run(1e-12)
    assert len(sizes) == 2 and torch.allclose(plain.kl, per.sum(-1), atol=1e-4)  # the layers add up to the KL
    torch.testing.assert_close(plain.bound, plain.recon - plain.kl)  # a negligible allowance: the plain ELBO
    # an allowance between the two layers' batch-mean KLs per dim: one layer is floored, one is not
    rate = per.mean(0) / sizes  # (2,) batch-mean KL per dim of each layer
    fb = float(rate.mean()) if rate[0] * rate[1] > 0 else float(rate.max()) / 2
    b, per, sizes = run(fb)
    floor = fb * sizes
    low = per.mean(0) < floor
    assert low.any() and not low.all()  # a real per-layer decision, not all-or-nothing
    expected = torch.where(low, floor, per).sum(-1)  # (B,)
    torch.testing.assert_close(b.bound, b.recon - expected, atol=1e-4, rtol=1e-5)
    assert torch.allclose(b.kl, plain.kl, atol=1e-4)  # the reported KL stays the true one


def test_ladder_prior_and_posterior_are_normalised_joint_densities():
    model = _ladder()
    assert model.latent_dim == 2
    assert _integral(model.prior) == pytest.approx(1.0, abs=2e-3)
    q = model.encode(torch.randn(1, 4))

    class One(torch.nn.Module):  # the posterior of one example as a "prior" for _integral
        def forward(self, encode=None):
            return type("D", (), {"log_prob": lambda self, z: q.log_prob(z.unsqueeze(1)).squeeze(1)})()
    assert _integral(One(), lim=8.0, n=401) == pytest.approx(1.0, abs=5e-3)
    z = q.rsample((7,))
    assert z.shape == (7, 1, 2) and torch.isfinite(q.log_prob(z)).all()


def test_ladder_is_estimate_converges_to_the_exact_marginal():
    # a decoder that ignores z makes p(x) = p(x|.) exactly; IS must find it through the
    # hierarchical q and p (its weights p(z)/q(z|x) average to 1)
    model = _ladder((2, 2))
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.zero_()
        for head in model.encoder.heads:  # wide bottom-up estimates: finite-variance weights
            head.weight.zero_()
            head.bias.copy_(torch.tensor([0.3, -0.2, 3.0, 3.0]))
    x = torch.randn(5, 4)
    exact = model.decode(torch.zeros(5, 4)).log_prob(x).double()
    torch.manual_seed(0)
    est = vaekit.log_likelihood(model, x, k=5000)
    assert torch.allclose(est, exact, atol=0.03)
    torch.manual_seed(0)
    assert (vaekit.elbo(model, x).bound.double() < exact - 0.05).all()  # the ELBO pays the KL


def test_ladder_trains_on_digits_and_reports_kl_per_layer():
    from vaekit.evaluate import evaluate
    data = vaekit.load_data("digits", "train")
    model = vaekit.fit(data, Config(arch="ladder", latent_dims=[8, 4], ladder_hidden=[32], hidden=[64],
                                    activation="tanh", epochs=6, kl_warmup=3, batch_size=64, lr=2e-3, progress=False))
    assert model.sample(3).shape == (3, 1, 8, 8)
    x = data.x[:50].bernoulli(generator=torch.Generator().manual_seed(0))
    res = evaluate(model, x, k=20)
    assert len(res["kl_per_layer"]) == 2 and sum(res["kl_per_layer"]) == pytest.approx(res["kl"], rel=0.3, abs=0.3)
    # per dim: each dim's log q - log p given the layer above, summing to the layer's and the total KL
    per = res["kl_per_dim"]
    assert len(per) == 12 and len(set(round(v, 4) for v in per)) > 2
    assert sum(per[:8]) == pytest.approx(res["kl_per_layer"][0], abs=1e-4)
    assert sum(per) == pytest.approx(res["kl"], abs=1e-4)
    with torch.no_grad():
        q = model.encode(x)
        z = q.rsample()
        for dist in (q, model.prior_dist()):
            assert torch.allclose(dist.dim_log_probs(z).sum(-1), dist.log_prob(z), atol=1e-4)
    assert math.isfinite(res["nll"]) and res["nll"] <= -res["elbo"] + 0.5


def test_best_model_is_never_an_epoch_under_the_kl_warmup():
    # without a validation split the train loss picks the best epoch; under the warm-up's lower
    # KL weight that loss is below the objective's, and an early epoch used to be kept (a
    # VampPrior MNIST run returned its epoch 15 of 800: 95.8 nats instead of the trained model).
    # A learning rate of ~0 keeps the weights fixed, so only the KL weight moves the loss
    data = vaekit.load_data("digits", "train")
    model = vaekit.fit(data, Config(latent_dim=16, hidden=[64], epochs=4, kl_warmup=3, lr=1e-12,
                                    val_fraction=0.0, patience=0, progress=False, seed=0))
    losses = [r["train_loss"] for r in model.history.epochs]
    assert losses[0] < losses[1] < losses[2] < losses[3]  # the trap: warm-up epochs score lower
    assert model.history.best_epoch == 4


def test_ladder_traversal_of_an_upper_layer_reaches_the_decoder():
    # the decoder reads only z_1: walking a z_2 coordinate with z_1 held gave the same picture at every step
    model = _ladder((2, 2)).eval()
    x = torch.randn(1, 4)
    q = model.encode(x)
    for dim in range(4):
        walk = model.traverse(x[0], dim, span=2.0, steps=5)  # (5, 4)
        assert (walk - walk[0]).abs().amax() > 1e-3, dim
    z = q.walk(2, torch.linspace(-2, 2, 5))  # (5, 4): a walk in the top layer
    assert torch.allclose(z[:, 2], torch.linspace(-2, 2, 5)) and torch.equal(z[:, 3], q.mean[0, 3].expand(5))
    assert torch.allclose(z[:, :2], q._layer(0, z[:, 2:]).loc)  # z_1: q's conditional mean given the walked z_2
    z = q.walk(1, torch.linspace(-2, 2, 5))  # in the bottom layer: the others held, as for a one-layer model
    assert torch.equal(z[:, [0, 2, 3]], q.mean[:, [0, 2, 3]].expand(5, 3))


def _dreg_models():
    def make(**kw):
        torch.manual_seed(0)
        return vaekit.VAE.from_config(Config(**kw))
    flat = dict(input_shape=[4], likelihood="gaussian")
    return {"mlp": (lambda: make(latent_dim=2, hidden=[16], **flat), lambda: torch.randn(6, 4)),
            "vamp": (lambda: make(latent_dim=2, hidden=[16], prior="vamp", prior_components=3, **flat),
                     lambda: torch.randn(6, 4)),
            "ladder": (lambda: make(arch="ladder", latent_dims=[3, 2], ladder_hidden=[8], hidden=[16],
                                    activation="tanh", **flat), lambda: torch.randn(6, 4)),
            "hvae": (lambda: make(arch="hvae", channels=[4, 8], latent_channels=2, input_shape=[1, 8, 8],
                                  likelihood="bernoulli"), lambda: torch.rand(3, 1, 8, 8).bernoulli())}


def _grads(model):
    return torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel()) for p in model.parameters()])


@pytest.mark.parametrize("beta", [1.0, 0.3])
@pytest.mark.parametrize("name", ["mlp", "vamp", "ladder", "hvae"])
def test_dreg_gradient_is_the_doubly_reparameterised_formula_and_the_bound_is_iwaes(name, beta):
    # Tucker et al. 2019, written out with autograd.grad: the decoder and prior get IWAE's
    # sum_i w_i d log w_i / dtheta (log q's direct part left out), z's path gets
    # w_i ((1 - beta) + beta w_i) d log w_i / dz_i. The hierarchies share networks between p
    # and q (ladder) or cache the pass that drew z (hvae): both must come out the same.
    make, data = _dreg_models()[name]
    model, x = make(), data()
    k = 7

    def reference():
        q = model.encode(x)
        z = q.rsample((k,))  # (k, B, D)
        zd = z.detach().clone().requires_grad_()  # clone: a fresh tensor, not hvae's cached pass
        lpx, lpz = model.decode(zd).log_prob(x), model.prior_dist().log_prob(zd)  # (k, B)
        log_w = lpx - beta * (model.encode(x).log_prob(zd) - lpz)  # (k, B)
        w = torch.softmax(log_w.detach(), 0)
        gz, = torch.autograd.grad((w * ((1 - beta) + beta * w) * log_w).sum(), zd, retain_graph=True)
        return (w * (lpx + beta * lpz)).sum() + (gz * z).sum()

    torch.manual_seed(5)
    bound = iwae(model, x, k=k, beta=beta, dreg=True).bound
    bound.sum().backward()
    got = _grads(model)
    model.zero_grad()
    torch.manual_seed(5)
    reference().backward()
    want = _grads(model)
    assert want.abs().max() > 1.0
    assert torch.allclose(got, want, atol=1e-4 * float(want.abs().max())), float((got - want).abs().max())
    torch.manual_seed(5)
    with torch.no_grad():
        assert torch.equal(bound.detach(), iwae(model, x, k=k, beta=beta).bound)  # the value is IWAE's


def test_dreg_is_unbiased_for_the_iwae_gradient_with_far_less_variance():
    model, _ = _dreg_models()["mlp"][0](), None
    x0 = torch.randn(2, 4)
    enc = list(model.encoder.parameters())

    def encoder_grad(x, **kw):
        model.zero_grad()
        iwae(model, x, k=10, **kw).bound.sum().backward()
        return torch.cat([p.grad.flatten() for p in enc]) / len(x)

    def gap(**kw):  # largest z-score between the mean encoder gradient of IWAE and of the estimator
        torch.manual_seed(1)
        x = x0.repeat(250, 1)  # 500 independent draws per batch, 40 batches
        a = torch.stack([encoder_grad(x) for _ in range(40)])
        b = torch.stack([encoder_grad(x, **kw) for _ in range(40)])
        se = (a.var(0) / 40 + b.var(0) / 40).sqrt()
        keep = se > 0  # a few weights get no gradient from this data (exactly zero in both)
        assert torch.equal(a.mean(0)[~keep], b.mean(0)[~keep])
        return float(((a.mean(0) - b.mean(0))[keep] / se[keep]).abs().max())

    assert gap(dreg=True) < 4.5
    # the test can tell: log q held fixed without the w_i reweighting of the path is biased
    real = torch.Tensor.register_hook
    try:
        torch.Tensor.register_hook = lambda self, hook: None
        assert gap(dreg=True) > 20
    finally:
        torch.Tensor.register_hook = real
    torch.manual_seed(2)
    one = x0[:1]
    v_iwae = torch.stack([encoder_grad(one) for _ in range(300)]).var(0).sum()
    v_dreg = torch.stack([encoder_grad(one, dreg=True) for _ in range(300)]).var(0).sum()
    assert v_dreg < v_iwae / 3  # measured: 9x less at k = 10, 27x at k = 50


def test_dreg_trains_through_fit_and_cli_and_is_refused_without_iwae(tmp_path):
    data = vaekit.load_data("digits").x[:300]
    for arch in ({}, {"arch": "ladder", "latent_dims": [4, 2], "ladder_hidden": [16]}):
        model = vaekit.fit(data, Config(hidden=[32], epochs=4, batch_size=25, objective="iwae", k=5, dreg=True,
                                        progress=False, **({"latent_dim": 3} if not arch else arch)))
        losses = model.history.column("val_loss")
        assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert Config.from_dict(Config(objective="iwae", k=5, dreg=True).to_dict()).dreg is True
    with pytest.raises(vaekit.errors.ConfigError, match="add --objective iwae"):
        Config(dreg=True)
    from vaekit.cli import main
    assert main(["train", "digits", "--epochs", "1", "--objective", "iwae", "--k", "3", "--dreg", "--no-progress",
                 "--hidden", "16", "--latent-dim", "2", "--out", str(tmp_path / "r")]) == 0
    assert vaekit.load(tmp_path / "r").config.dreg is True
