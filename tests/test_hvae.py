"""The convolutional hierarchical VAE (arch=hvae) and its stabilisers: shapes on any image size,
log q and log p normalised and consistent with the sampler, one top-down pass per step, a fit
that learns, the CLI, save/load, the weight average (--ema), gradient skipping (--grad-skip),
the preset, and a bit-identical resume with the average on."""

import json
import math

import pytest
import torch

import vaekit
from vaekit import hvae, stabilise, train
from vaekit.cli import main
from vaekit.config import Config
from vaekit.errors import ConfigError, NonFiniteError
from vaekit.evaluate import evaluate, log_likelihood
from vaekit.model import VAE
from vaekit.objectives import elbo, iwae

TINY = dict(arch="hvae", channels=[8, 16], latent_channels=2, batch_size=64, lr=3e-3, progress=False, seed=1)


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny convs: one thread is faster than two, and far faster on a shared, busy machine
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    return vaekit.load_data("digits")


def build(shape, likelihood="bernoulli", **kw):
    return VAE.from_config(Config(**{**TINY, **kw}, input_shape=list(shape), likelihood=likelihood))


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def rows(model):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in model.history.epochs]


@pytest.mark.parametrize("shape, likelihood", [((1, 8, 8), "bernoulli"), ((1, 28, 28), "bernoulli"),
                                               ((3, 5, 7), "gaussian")])
def test_shapes_on_any_image_size(shape, likelihood):
    torch.manual_seed(0)
    m = build(shape, likelihood)
    x = torch.rand(4, *shape).round() if likelihood == "bernoulli" else torch.randn(4, *shape)
    q = m.encode(x)
    d = m.latent_dim
    assert d == sum(m.prior.dims) and len(m.prior.dims) == 3  # default groups: 1 at the finest scale, 2 at the top
    assert m.prior.dims[0] == 2 * math.prod(hvae.conv_sizes(shape[1:], 2)[1])  # z_1: latent_channels x finest map
    z = q.rsample((5,))  # (k, B, D)
    assert z.shape == (5, 4, d) and q.log_prob(z).shape == (5, 4)
    assert m.decode(z).log_prob(x).shape == (5, 4) and m.prior_dist().log_prob(z).shape == (5, 4)
    assert m.sample(3).shape == (3, *shape) and m.reconstruct(x).shape == (4, *shape)
    assert [t.shape for t in q.layer_log_probs(z)] == [(5, 4)] * 3


def test_cached_pass_equals_a_fresh_one_and_runs_once_per_step(monkeypatch):
    torch.manual_seed(0)
    m = build((1, 8, 8))
    x = torch.rand(6, 1, 8, 8).round()
    q, p = m.encode(x), m.prior_dist()
    z = q.rsample((3,))
    cached = (q.log_prob(z), p.log_prob(z), m.decode(z).mean)
    fresh_z = z.clone()  # other memory: a fresh top-down pass
    fresh = (q.log_prob(fresh_z), p.log_prob(fresh_z), m.decode(fresh_z).mean)
    for a, b in zip(cached, fresh):
        assert torch.allclose(a, b, atol=1e-5)
    z.add_(0.5)  # modified in place: the cache must not answer for it
    assert torch.allclose(q.log_prob(z), q.log_prob(z.clone()), atol=1e-5)
    # the ELBO of a step: one top-down pass gives z, log q, log p and p(x|z)'s parameters
    calls = {"n": 0}
    real = hvae.HVAEPrior.walk

    def counting(self, *a, **kw):
        calls["n"] += 1
        return real(self, *a, **kw)

    monkeypatch.setattr(hvae.HVAEPrior, "walk", counting)
    elbo(m, x).bound.mean().backward()
    assert calls["n"] == 1


def test_log_q_and_log_p_are_normalised_and_match_their_samplers():
    """E_q[p(z)/q(z)] = 1 and E_p[q(z)/p(z)] = 1 exactly when both densities are normalised
    and each sampler draws from its own density (a small latent: 4 dims, 20,000 draws)."""
    torch.manual_seed(0)
    m = build((1, 8, 8), channels=[8, 8], groups=[0, 1], latent_channels=1)  # one group on a 2x2 map
    assert m.latent_dim == 4
    x = torch.rand(1, 1, 8, 8).round()
    with torch.no_grad():
        q, p = m.encode(x), m.prior_dist()
        zq = q.sample((20000,))  # (k, 1, 4)
        ratio_q = p.log_prob(zq) - q.log_prob(zq)
        zp = p.sample((20000,))  # (k, 4)
        ratio_p = q.log_prob(zp.unsqueeze(1)) - p.log_prob(zp.unsqueeze(1))
    for r in (ratio_q, ratio_p):
        est = torch.logsumexp(r.double().flatten(), 0) - math.log(r.numel())
        assert abs(float(est)) < 0.05


def test_fit_learns_and_the_bounds_are_consistent(digits, tmp_path):
    model = vaekit.fit(digits.x[:600], Config(**TINY, epochs=4, kl_warmup=1.0), out=tmp_path / "run")
    losses = [r["train_loss"] for r in model.history.epochs]
    assert losses[-1] < losses[0] - 5
    x = digits.x[:40]
    torch.manual_seed(3)
    a = elbo(model, x).bound
    torch.manual_seed(3)
    b = iwae(model, x, k=1).bound
    assert torch.equal(a, b)  # IWAE(k=1) is the ELBO, term by term
    ll = log_likelihood(model, x, k=100)
    torch.manual_seed(4)
    with torch.no_grad():
        assert float(ll.mean()) >= float(elbo(model, x).bound.mean()) - 0.5  # the importance-sampled bound is tighter
    res = evaluate(model, x, k=20)
    assert len(res["kl_per_layer"]) == 3 and all(v > -0.5 for v in res["kl_per_layer"])
    assert abs(sum(res["kl_per_layer"]) - res["kl"]) < 2.0  # the groups' KL adds up (separate draws)
    assert len(res["kl_per_dim"]) == model.latent_dim and sum(res["kl_per_dim"]) == pytest.approx(res["kl"], abs=1e-3)
    with torch.no_grad():
        q = model.encode(x[:6])
        z = q.rsample()
        for dist in (q, model.prior_dist()):  # per latent value, in z's order, summing to each group
            per = dist.dim_log_probs(z)
            assert per.shape == z.shape
            starts = [0, *torch.tensor(dist.layer_sizes).cumsum(0).tolist()]
            for (a, b), layer in zip(zip(starts, starts[1:]), dist.layer_log_probs(z)):
                assert torch.allclose(per[:, a:b].sum(-1), layer, atol=1e-3)
    # save/load round trip: the same numbers from the same draws
    loaded = vaekit.load(tmp_path / "run", device=str(model.device))  # the same device: the same kernels
    z = torch.randn(5, model.latent_dim)
    assert torch.equal(loaded.decode(z).mean, model.decode(z).mean)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(loaded.sample(4, generator=g1), model.sample(4, generator=g2))


@pytest.fixture
def small_npy(digits, tmp_path):
    """300 digits as a .npy file: the CLI tests train on it in a second or two."""
    import numpy as np

    np.save(tmp_path / "d.npy", digits.x[:300].numpy(), allow_pickle=False)
    return str(tmp_path / "d.npy")


def test_cli_train_sample_reconstruct_evaluate(tmp_path, capsys, small_npy):
    run = str(tmp_path / "run")
    assert main(["train", small_npy, "--out", run, "--arch", "hvae", "--channels", "8,16", "--groups", "1,1",
                 "--latent-channels", "2", "--epochs", "2", "--no-progress", "--ema", "0.9", "--grad-skip", "1e6"]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["arch"] == "hvae" and saved["groups"] == [1, 1] and saved["ema"] == 0.9
    assert main(["sample", run, "-n", "16", "-o", str(tmp_path / "s.png")]) == 0
    assert main(["reconstruct", run, small_npy, "-n", "8", "-o", str(tmp_path / "r.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 100 and (tmp_path / "r.png").stat().st_size > 100
    capsys.readouterr()
    assert main(["evaluate", run, small_npy, "-n", "20", "--k", "10"]) == 0
    out = capsys.readouterr().out
    assert "KL per stochastic layer (bottom first):" in out
    dims = int(out.split("active units: ")[1].split(" of ")[1].split()[0])
    kl_line = next(line for line in out.splitlines() if line.startswith("KL per dim:"))
    assert dims == 40 and len(kl_line.split()) == 3 + dims  # 40 dims are listed; a larger latent is summarised
    pytest.importorskip("onnxruntime")
    assert main(["export", run, "--onnx", str(tmp_path / "d.onnx")]) == 0  # the decoder: z -> image
    assert main(["export", run, "--onnx", str(tmp_path / "d2.onnx"), "--encoder", str(tmp_path / "e.onnx")]) == 2
    assert "hierarchical" in capsys.readouterr().err


def test_preset_and_flags_override_it(tmp_path, small_npy):
    c = Config.preset("mnist", epochs=3)
    assert (c.arch, c.epochs, c.ema) == ("hvae", 3, 0.999) and c.grad_skip > 0 and c.kl_warmup > 0
    with pytest.raises(ConfigError, match="unknown preset"):
        Config.preset("cifar")
    with pytest.raises(ConfigError, match="groups"):
        Config(arch="hvae", channels=[8, 16], groups=[1])
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"latent_channels": 3}))
    run = tmp_path / "run"
    assert main(["train", small_npy, "--preset", "mnist", "--config", str(cfg), "--out", str(run), "--epochs", "1",
                 "--channels", "8,16", "--no-progress"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["arch"] == "hvae" and saved["ema"] == 0.999 and saved["lr_schedule"] == "cosine"  # the preset
    assert saved["epochs"] == 1 and saved["channels"] == [8, 16] and saved["latent_channels"] == 3  # flags, file


def test_ema_is_what_is_validated_and_saved(digits):
    x = digits.x[:300]
    # on the CPU, where equal seeds give equal updates bit for bit (cuDNN's backward need not)
    plain = vaekit.fit(x, Config(**TINY, epochs=2, device="cpu"))
    avg = vaekit.fit(x, Config(**TINY, epochs=2, ema=0.9, device="cpu"))
    a, b = rows(plain), rows(avg)
    # the average never steers training: the same updates, so the same training losses ...
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]
    # ... but other weights are scored and kept
    assert [r["val_loss"] for r in a] != [r["val_loss"] for r in b]
    assert any(not torch.equal(v, weights(avg)[k]) for k, v in weights(plain).items())
    # the update rule, with its early warm-up of the decay
    model = torch.nn.Linear(2, 1)
    ema = stabilise.ema_start(model, Config(ema=0.9))
    before = ema["weight"].clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    stabilise.ema_update(ema, model, 0.9, step=1000)
    assert torch.allclose(ema["weight"], 0.9 * before + 0.1 * model.weight)
    stabilise.ema_update(ema, model, 0.9, step=0)  # d = 1/10 at the first step: mostly the new weights
    with stabilise.averaged(model, ema):
        assert torch.equal(model.weight, ema["weight"])
    assert not torch.equal(model.weight, ema["weight"])  # the live weights are back


def test_grad_skip_counts_reports_and_refuses_to_skip_everything(digits, monkeypatch, capsys):
    """Every third step's gradient is made a spike (x1000): exactly those updates are skipped."""
    x = digits.x[:600]  # 540 for training: 9 steps per epoch
    real, calls = train.clip_gradients, {"n": 0}

    def spiky(params, max_norm, norm=None):
        calls["n"] += 1
        norm = real(params, max_norm, norm)
        return norm * 1000 if calls["n"] % 3 == 0 else norm

    monkeypatch.setattr(train, "clip_gradients", spiky)
    ref = vaekit.fit(x, Config(**TINY, epochs=2))
    calls["n"] = 0
    capsys.readouterr()
    model = vaekit.fit(x, Config(**TINY, epochs=2, grad_skip=5000.0))  # real norms here are ~10-100
    assert model.history.column("grad_skipped") == [3, 3]
    assert "skipped 3 of 9 updates with gradient norm > 5000 (--grad-skip)" in capsys.readouterr().err  # never silent
    assert any(not torch.equal(v, weights(model)[k]) for k, v in weights(ref).items())
    monkeypatch.undo()
    with pytest.raises(NonFiniteError, match="every update"):
        vaekit.fit(x, Config(**TINY, epochs=1, grad_skip=1e-9))


class Interrupt(Exception):
    pass


def test_resume_with_ema_is_bit_identical(digits, tmp_path, monkeypatch):
    x = digits.x[:400]  # 360 for training: 6 batches per epoch
    # a checkpoint after every step; on the CPU, where the README promises bit-identical resumes (on CUDA,
    # cuDNN's backward is not deterministic unless torch.use_deterministic_algorithms is on)
    config = Config(**TINY, epochs=3, ema=0.9, checkpoint_minutes=1e-9, device="cpu")
    ref = vaekit.fit(x, config, out=tmp_path / "ref")
    real, calls = train.objective, {"n": 0}

    def objective(model, xb, cfg, *args, **kw):
        if model.training:
            calls["n"] += 1
            if calls["n"] == 8:  # mid-epoch 2
                raise Interrupt
        return real(model, xb, cfg, *args, **kw)

    monkeypatch.setattr(train, "objective", objective)
    with pytest.raises(Interrupt):
        vaekit.fit(x, config, out=tmp_path / "run")
    monkeypatch.undo()
    model = vaekit.fit(x, config, out=tmp_path / "run", resume=True)
    assert rows(model) == rows(ref)
    saved = (tmp_path / "run" / "model.safetensors").read_bytes()
    assert saved == (tmp_path / "ref" / "model.safetensors").read_bytes()
