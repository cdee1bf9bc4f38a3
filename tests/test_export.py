"""ONNX export: the decoder (and encoder) under onnxruntime match PyTorch for any batch size."""

import numpy as np
import pytest
import torch

import vaekit
from vaekit import export
from vaekit.cli import main

ort = pytest.importorskip("onnxruntime")


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("kind", ["mlp-bernoulli", "conv-gaussian"])
def test_onnx_decoder_and_encoder_match_pytorch_for_batches_1_7_64(kind, tmp_path, capsys):
    if kind == "mlp-bernoulli":
        data, config = vaekit.load_data("digits").x[:300], vaekit.Config(hidden=[32], latent_dim=3)
    else:
        data = torch.randn(200, 2, 6, 5) * 3 + 1  # real-valued, odd-sized "images"
        config = vaekit.Config(arch="conv", channels=[4, 8], latent_dim=3, likelihood="gaussian")
    model = vaekit.fit(data, config.replace(epochs=1, batch_size=50, progress=False, device="cpu"))
    vaekit.save(model, tmp_path / "run")
    dec, enc = tmp_path / "decoder.onnx", tmp_path / "encoder.onnx"
    assert main(["export", str(tmp_path / "run"), "--onnx", str(dec), "--encoder", str(enc)]) == 0
    assert "onnxruntime matches PyTorch" in capsys.readouterr().out
    decoder, encoder = _session(dec), _session(enc)
    assert [i.name for i in decoder.get_inputs()] == ["z"] and [o.name for o in encoder.get_outputs()] == ["mu", "sigma"]
    # the graphs declare the README's shapes, only the batch axis left open (the outputs' other axes
    # were tracer names such as 'Sigmoidmean_dim_1')
    shape = list(data.shape[1:])
    assert decoder.get_inputs()[0].shape == ["batch", 3] and decoder.get_outputs()[0].shape == ["batch", *shape]
    assert encoder.get_inputs()[0].shape == ["batch", *shape]
    assert [o.shape for o in encoder.get_outputs()] == [["batch", 3], ["batch", 3]]
    gen = torch.Generator().manual_seed(1)
    for b in (1, 7, 64):
        z = torch.randn(b, 3, generator=gen)  # (B, d)
        with torch.no_grad():
            want = model.decode(z).mean  # (B, *shape)
        got = decoder.run(None, {"z": z.numpy()})[0]
        assert got.shape == tuple(want.shape)
        assert np.abs(got - want.numpy()).max() < 1e-5
        x = data[:b]
        with torch.no_grad():
            q = model.encode(x)
        mu, sigma = encoder.run(None, {"x": x.numpy()})
        assert np.abs(mu - q.mean.numpy()).max() < 1e-5 and np.abs(sigma - q.stddev.numpy()).max() < 1e-5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["decoder.onnx", "encoder.onnx", "run"]  # no temp files


def test_export_refuses_bad_paths_ladder_encoders_and_mismatches(tmp_path, capsys, monkeypatch):
    model = vaekit.fit(vaekit.load_data("digits").x[:100], vaekit.Config(
        arch="ladder", latent_dims=[4, 2], hidden=[16], ladder_hidden=[8], epochs=1, progress=False, device="cpu"))
    vaekit.save(model, tmp_path / "run")
    assert main(["export", str(tmp_path / "run"), "--onnx", str(tmp_path / "d.txt")]) == 2
    assert main(["export", str(tmp_path / "run"), "--onnx", str(tmp_path / "d.onnx"),
                 "--encoder", str(tmp_path / "e.onnx")]) == 2
    assert "hierarchical" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "run"), "--onnx", str(tmp_path / "d.onnx")]) == 0  # decoder alone works
    (tmp_path / "d.onnx").write_bytes(b"stale")
    assert main(["export", str(tmp_path / "run"), "--onnx", str(tmp_path / "d.onnx")]) == 2  # never overwritten...
    assert "pass --force" in capsys.readouterr().err and (tmp_path / "d.onnx").read_bytes() == b"stale"
    assert main(["export", str(tmp_path / "run"), "--onnx", str(tmp_path / "d.onnx"), "--force"]) == 0  # ...unless asked
    assert _session(tmp_path / "d.onnx").get_inputs()[0].name == "z"
    (tmp_path / "d.onnx").unlink()
    monkeypatch.setattr(export, "CHECK_ATOL", -1.0)  # every graph now "differs": nothing may be written
    assert main(["export", str(tmp_path / "run"), "--onnx", str(tmp_path / "d.onnx")]) == 2
    assert "differs from PyTorch" in capsys.readouterr().err
    assert not (tmp_path / "d.onnx").exists()


class _Conditioned(torch.nn.Module):
    """Any model with `condition_dim` > 0 and encode(x, c) / decode(z, c) exports with an input c."""

    condition_dim, latent_dim = 2, 3

    def __init__(self, base):
        super().__init__()
        self.base, self.prior, self.shift = base, base.prior, torch.nn.Linear(2, 3)

    def decode(self, z, c):
        return self.base.decode(z + self.shift(c))

    def encode(self, x, c):
        q = self.base.encode(x)
        return torch.distributions.Independent(torch.distributions.Normal(q.mean + self.shift(c), q.stddev), 1)


def test_a_conditional_model_exports_with_a_condition_input(tmp_path):
    base = vaekit.VAE.from_config(vaekit.Config(hidden=[16], latent_dim=3, input_shape=[1, 8, 8], likelihood="bernoulli"))
    model = _Conditioned(base).eval()
    result = vaekit.export_onnx(model, tmp_path / "d.onnx", tmp_path / "e.onnx")
    assert result["decoder_max_abs_diff"] < 1e-5 and result["encoder_max_abs_diff"] < 1e-5
    decoder, encoder = _session(tmp_path / "d.onnx"), _session(tmp_path / "e.onnx")
    assert [i.name for i in decoder.get_inputs()] == ["z", "c"] and [i.name for i in encoder.get_inputs()] == ["x", "c"]
    z, c = torch.randn(5, 3), torch.rand(5, 2)
    with torch.no_grad():
        want = model.decode(z, c).mean
    assert np.abs(decoder.run(None, {"z": z.numpy(), "c": c.numpy()})[0] - want.numpy()).max() < 1e-5


@pytest.mark.parametrize("conditional", [False, True])
def test_a_table_model_exports_and_its_output_decodes_to_the_table(tmp_path, conditional):
    pd = pytest.importorskip("pandas")
    from vaekit import table_codec
    rng = np.random.default_rng(0)
    n = 120
    df = pd.DataFrame({"x": rng.normal(size=n), "kind": rng.choice(["a", "b", "c"], n),
                       "k": rng.integers(0, 6, n).astype(float), "flag": rng.choice([True, False], n)})
    df.loc[::9, "k"] = np.nan  # a missingness indicator among the heads
    config = vaekit.table_config(epochs=2, hidden=[16], latent_dim=3, progress=False, device="cpu")
    model = vaekit.fit_table(df, config, condition_columns=["flag"] if conditional else None)
    result = vaekit.export_onnx(model, tmp_path / "d.onnx", tmp_path / "e.onnx")
    assert result["decoder_max_abs_diff"] < 1e-5 and result["encoder_max_abs_diff"] < 1e-5
    decoder = _session(tmp_path / "d.onnx")
    z = torch.randn(9, 3, generator=torch.Generator().manual_seed(2))  # (B, d)
    c = (torch.tensor([[1.0, 0.0]]).repeat(9, 1),) if conditional else ()  # (B, C): one-hot of a flag value
    with torch.no_grad():
        want = model.decode(z, *c).mean  # (B, D_enc)
    got = decoder.run(None, {"z": z.numpy(), **({"c": c[0].numpy()} if conditional else {})})[0]
    assert got.shape == tuple(want.shape) and np.abs(got - want.numpy()).max() < 1e-5
    schema = model.schema
    rows = table_codec.decode(schema, got)  # what the README tells ONNX users to do with `mean`
    assert set(rows) == {c.name for c in schema.modelled}
    assert set(rows["kind"].dropna()) <= {"a", "b", "c"} and len(rows["x"]) == 9
