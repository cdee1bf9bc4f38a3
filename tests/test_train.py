"""fit(), generation and saving, on the real bundled digits."""

import json

import numpy as np
import pytest
import torch

import vaekit
from vaekit import Config
from vaekit.errors import ConfigError, DataError, IntegrityError, NonFiniteError, OutputExistsError

FAST = dict(latent_dim=4, hidden=[64], epochs=3, batch_size=64, progress=False)


@pytest.fixture(scope="module")
def digits():
    return vaekit.load_data("digits", "train")


def test_training_lowers_validation_loss_and_samples_fit_the_data(digits):
    model = vaekit.fit(digits, Config(latent_dim=8, hidden=[128], epochs=25, batch_size=64, lr=2e-3, progress=False))
    val = model.history.column("val_loss")
    # 64 pixels: the decoder starts at the average digit (the independent-pixel loss, ~27.6 nats), and
    # training goes well below it
    assert val[0] < 30 and min(val) < 0.9 * val[0]
    assert model.config.likelihood == "bernoulli" and model.config.binarize == "dynamic"
    x = model.sample(10)
    assert x.shape == (10, 1, 8, 8) and x.min() >= 0 and x.max() <= 1
    drawn = model.sample(10, mean=False)
    assert set(drawn.unique().tolist()) <= {0.0, 1.0}
    r = model.reconstruct(digits.x[:5])
    assert r.shape == (5, 1, 8, 8)
    # reconstructions are closer to their own input than to other inputs
    d = torch.cdist(r.flatten(1), digits.x[:5].flatten(1))
    assert (d.argmin(1) == torch.arange(5)).float().mean() >= 0.8
    path = model.interpolate(digits.x[0], digits.x[1], steps=5)
    assert path.shape == (5, 1, 8, 8)
    assert model.traverse(digits.x[0], dim=0, steps=7).shape == (7, 1, 8, 8)


def test_same_seed_same_losses_and_samples(digits):
    runs = [vaekit.fit(digits, Config(seed=3, **FAST)) for _ in range(2)]
    assert runs[0].history.column("train_loss") == runs[1].history.column("train_loss")
    assert runs[0].history.column("val_loss") == runs[1].history.column("val_loss")
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    assert torch.equal(runs[0].sample(8, generator=g()), runs[1].sample(8, generator=g()))
    other = vaekit.fit(digits, Config(seed=4, **FAST))
    assert other.history.column("train_loss") != runs[0].history.column("train_loss")


def test_save_load_round_trip_and_tamper_refusal(digits, tmp_path):
    model = vaekit.fit(digits, Config(**FAST), out=tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "config.json", "manifest.json", "metrics.jsonl", "model.safetensors"]
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 3
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    loaded = vaekit.load(tmp_path / "run", device=str(model.device))  # the same device: the same kernels
    loaded = vaekit.load(tmp_path / "run")
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(model.sample(6, generator=g()), loaded.sample(6, generator=g()))
    x = digits.x[:32].bernoulli(generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    a = vaekit.elbo(model, x).bound
    torch.manual_seed(0)
    b = vaekit.elbo(loaded, x).bound
    assert torch.equal(a, b)
    vaekit.save(loaded, tmp_path / "copy")
    with pytest.raises(OutputExistsError):
        vaekit.save(loaded, tmp_path / "copy")

    weights = tmp_path / "copy" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="model.safetensors"):
        vaekit.load(tmp_path / "copy")
    cfg = tmp_path / "run" / "config.json"
    cfg.write_text(cfg.read_text().replace('"latent_dim": 4', '"latent_dim": 5'))
    with pytest.raises(IntegrityError, match="config.json"):
        vaekit.load(tmp_path / "run")
    with pytest.raises(IntegrityError, match="not a vaekit run folder"):
        vaekit.load(tmp_path / "nowhere")


def test_conv_on_odd_sized_colour_images_and_gaussian_arrays():
    torch.manual_seed(0)
    x = torch.rand(40, 3, 13, 9)
    model = vaekit.fit(x, Config(arch="conv", channels=[8, 16], latent_dim=3, epochs=2, batch_size=16, progress=False))
    assert model.config.likelihood == "bernoulli"
    assert model.sample(4).shape == (4, 3, 13, 9)
    assert model.reconstruct(x[:2]).shape == (2, 3, 13, 9)
    real = torch.randn(200, 5) * 100 + 50  # real-valued, far from [0, 1]
    gm = vaekit.fit(real, Config(latent_dim=2, hidden=[32], epochs=30, lr=3e-3, progress=False))
    assert gm.config.likelihood == "gaussian"
    s = gm.sample(2000, mean=False)
    assert abs(float(s.mean()) - 50) < 25 and 50 < float(s.std()) < 160  # in data units, not standardised


def test_bad_inputs_raise_typed_errors(digits, tmp_path):
    with pytest.raises(DataError, match="NaN"):
        vaekit.fit(torch.tensor([[0.1, float("nan")], [0.2, 0.3]]), Config(**FAST))
    with pytest.raises(DataError, match="empty"):
        vaekit.fit(np.zeros((0, 4), dtype=np.float32), Config(**FAST))
    with pytest.raises(ConfigError, match="latent_dim"):
        Config(latent_dim=0)
    with pytest.raises(ConfigError, match="epochs"):
        Config(epochs=-1)
    with pytest.raises(ConfigError, match="arch"):
        Config(arch="transformer")
    with pytest.raises(ConfigError, match="conv"):
        vaekit.fit(torch.rand(10, 5), Config(arch="conv", **FAST))
    with pytest.raises(DataError, match="outside"):
        vaekit.fit(torch.randn(10, 5) * 3, Config(likelihood="bernoulli", **FAST))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("precious")
    with pytest.raises(OutputExistsError, match="--force"):
        vaekit.fit(digits, Config(**FAST), out=tmp_path / "full")
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]


def test_nonfinite_loss_is_caught_at_its_step(digits, tmp_path):
    model = vaekit.VAE.from_config(Config(input_shape=[1, 8, 8], likelihood="bernoulli", **FAST))
    with torch.no_grad():
        model.decoder.net[0].weight.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="epoch 1, step 0"):
        vaekit.fit(digits, Config(**FAST), out=tmp_path / "nan", model=model)
    assert not (tmp_path / "nan").exists() and not (tmp_path / "nan.partial").exists()


def test_config_json_round_trip():
    c = Config(latent_dim=7, hidden=[10, 20], beta=0.5, arch="conv", input_shape=[1, 8, 8])
    assert Config.from_json(c.to_json()) == c
    with pytest.raises(ConfigError, match="unknown config field"):
        Config.from_dict({"latent_dimz": 3})


def test_clip_gradients_matches_torch():
    from vaekit.train import clip_gradients

    torch.manual_seed(0)
    a, b = torch.nn.Linear(5, 4), torch.nn.Linear(5, 4)
    b.load_state_dict(a.state_dict())
    for p, q in zip(a.parameters(), b.parameters()):
        p.grad = torch.randn_like(p) * 10
        q.grad = p.grad.clone()
    for max_norm in (1.0, 1e6):
        ours = clip_gradients(a, max_norm)
        theirs = torch.nn.utils.clip_grad_norm_(b.parameters(), max_norm)
        assert torch.allclose(ours, theirs)
        for p, q in zip(a.parameters(), b.parameters()):
            assert torch.allclose(p.grad, q.grad, atol=1e-6)
    assert float(torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in a.parameters()]))) <= 1.0 + 1e-5
    a.weight.grad[0, 0] = float("nan")
    assert not torch.isfinite(clip_gradients(a, 1.0))


def test_generation_in_chunks_matches_one_pass(monkeypatch):
    torch.manual_seed(0)
    model = vaekit.VAE.from_config(Config(latent_dim=3, hidden=[16], input_shape=[1, 4, 4],
                                          likelihood="bernoulli")).eval()
    whole = model.sample(10, generator=torch.Generator().manual_seed(1))  # one pass: 10 rows < the chunk
    monkeypatch.setattr(vaekit.VAE, "sample_chunk_values", 3 * 16)  # 3 rows at a time: 4 chunks
    chunked = model.sample(10, generator=torch.Generator().manual_seed(1))
    assert chunked.shape == (10, 1, 4, 4)
    torch.testing.assert_close(chunked, whole)  # the same z, decoded piece by piece
    bits = model.sample(10, mean=False, generator=torch.Generator().manual_seed(2))
    assert set(bits.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(bits, model.sample(10, mean=False, generator=torch.Generator().manual_seed(2)))


def test_save_of_a_fitted_model_keeps_its_metrics_for_the_report(digits, tmp_path):
    # README: fit() in memory, vaekit.save(model, "runs/api-demo"), then vaekit.report on that
    # folder; the folder had no metrics.jsonl, so the report had no training curves
    model = vaekit.fit(digits, Config(**FAST))
    vaekit.save(model, tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows == model.history.epochs and len(rows) == 3
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert "metrics.jsonl" in manifest["files"]
    loaded = vaekit.load(tmp_path / "run")  # verified against the manifest like fit's own metrics
    assert loaded.history.epochs == rows  # and given back as model.history (a loaded model had none)
    vaekit.save(loaded, tmp_path / "copy")  # so a copy keeps the curves too
    assert (tmp_path / "copy" / "metrics.jsonl").read_text() == (tmp_path / "run" / "metrics.jsonl").read_text()


def test_a_numpy_array_trains_as_the_cli_reads_it_saved(tmp_path):
    """vaekit.fit(np.load(f)) and `vaekit train f` see the same data: 0..255 integer images
    scaled to [0, 1], (N, H, W) given a channel axis, channels-last made channels-first."""
    from vaekit.cli import main

    grey = np.random.default_rng(0).integers(0, 256, (60, 6, 5), dtype=np.uint8)  # (N, H, W)
    np.save(tmp_path / "g.npy", grey)
    api = vaekit.fit(grey, Config(**FAST))
    assert main(["train", str(tmp_path / "g.npy"), "--out", str(tmp_path / "r"), "--epochs", str(FAST["epochs"]),
                 "--latent-dim", str(FAST["latent_dim"]), "--hidden", ",".join(map(str, FAST["hidden"])),
                 "--batch-size", str(FAST["batch_size"]), "--no-progress"]) == 0
    cli = vaekit.load(tmp_path / "r")
    for field in ("input_shape", "likelihood", "binarize", "data_layout"):
        assert getattr(api.config, field) == getattr(cli.config, field), field
    assert api.config.input_shape == [1, 6, 5] and api.config.likelihood == "bernoulli"
    hwc = np.random.default_rng(1).random((60, 6, 5, 3)).astype(np.float32)  # (N, H, W, C)
    assert vaekit.fit(hwc, Config(**FAST)).config.input_shape == [3, 6, 5]
    with pytest.raises(DataError, match=r"load it first, vaekit.fit\(vaekit.load_data\('x.npy'\)\)"):
        vaekit.fit("x.npy", Config(**FAST))


@pytest.mark.parametrize("arch, kw", [("mlp", {}), ("conv", {"channels": [8, 16]}), ("ladder", {"latent_dims": [8, 4]}),
                                      ("hvae", {"channels": [8, 16], "groups": [1, 1], "latent_channels": 2})])
def test_a_bernoulli_decoder_starts_at_the_data_mean(digits, arch, kw):
    """fit() starts a fresh Bernoulli decoder's output bias at the data's log-odds (per value,
    or per channel for conv outputs), so training does not begin on the average-image plateau."""
    x = digits.x[:200]  # (200, 1, 8, 8) in [0, 1]
    target = torch.logit(x.double().mean(0).clamp(1e-3, 1 - 1e-3))  # (1, 8, 8)
    model = vaekit.VAE.from_config(Config(arch=arch, likelihood="bernoulli", input_shape=[1, 8, 8], **kw))
    assert model.likelihood.start_output(model.output_layer(), x.mean(0))
    bias = model.output_layer().bias.detach().double()
    if arch in ("mlp", "ladder"):
        assert torch.allclose(bias, target.reshape(-1), atol=1e-5)
    else:
        assert torch.allclose(bias, torch.logit(x.double().mean().clamp(1e-3, 1 - 1e-3)).reshape(1), atol=1e-5)
    # through fit: one short epoch moves the bias a little from there, not back to zero
    fitted = vaekit.fit(x, Config(arch=arch, epochs=1, likelihood="bernoulli", val_fraction=0, **kw))
    after = fitted.output_layer().bias.detach().double().cpu()
    if arch in ("mlp", "ladder"):
        assert np.corrcoef(after.numpy(), target.reshape(-1).numpy())[0, 1] > 0.95
    else:
        assert abs(float(after[0]) - float(torch.logit(x.double().mean()))) < 0.5


def test_an_output_layer_of_another_shape_is_left_alone():
    model = vaekit.VAE.from_config(Config(likelihood="bernoulli", input_shape=[1, 8, 8]))
    odd = torch.nn.Linear(4, 10)
    before = odd.bias.detach().clone()
    assert not model.likelihood.start_output(odd, torch.full((1, 8, 8), 0.3))  # 10 outputs, 64 values
    assert not model.likelihood.start_output(model.output_layer(), torch.full((8, 8), 0.3))  # the wrong shape
    assert torch.equal(odd.bias, before)
