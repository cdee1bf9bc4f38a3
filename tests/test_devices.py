"""Devices, mixed precision and torch.compile. GPU tests are marked `gpu` and skip without CUDA."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import vaekit
import vaekit.stream
from vaekit.cli import main
from vaekit.errors import ConfigError

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _config(**kw):
    return vaekit.Config(**{"hidden": [32], "latent_dim": 3, "epochs": 2, "batch_size": 64, "progress": False, **kw})


@pytest.fixture(scope="module")
def small():
    return vaekit.load_data("digits").x[:400]


def test_compiled_training_saves_unwrapped_weights_identical_to_eager(small, tmp_path, monkeypatch):
    # the eager backend runs dynamo's capture without inductor's code generation (minutes on
    # 2 shared cores): the wrapping, and so the checkpoint keys, are the same
    calls = []
    real = torch.compile

    def eager_compile(module, **kw):
        calls.append(type(module).__name__)
        return real(module, backend="eager", **kw)

    monkeypatch.setattr(torch, "compile", eager_compile)
    # 360 training rows in batches of 60: one batch shape, one capture
    compiled = vaekit.fit(small, _config(device="cpu", compile=True, batch_size=60), out=tmp_path / "compiled")
    eager = vaekit.fit(small, _config(device="cpu", batch_size=60), out=tmp_path / "eager")
    assert calls == ["_Step"]
    saved = load_file(tmp_path / "compiled" / "model.safetensors")
    assert not [k for k in saved if "_orig_mod" in k or k.startswith("model.")]
    assert saved.keys() == load_file(tmp_path / "eager" / "model.safetensors").keys()
    for (k, v), w in zip(compiled.state_dict().items(), eager.state_dict().values()):
        assert torch.allclose(v, w, atol=1e-6), k
    assert vaekit.load(tmp_path / "compiled").config.compile is True


def test_amp_without_cuda_is_a_clear_error(small, tmp_path, capsys):
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        vaekit.fit(small, _config(device="cpu", amp=True))
    assert main(["train", "digits", "--out", str(tmp_path / "r"), "--device", "cpu", "--amp", "--epochs", "1"]) == 2
    assert "drop --amp on CPU" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="auto, cpu, cuda or cuda:N"):
        vaekit.Config(device="gpu")
    with pytest.raises(ConfigError, match="true or false"):
        vaekit.Config(amp="yes")
    old = vaekit.Config().to_dict()
    del old["amp"], old["compile"]  # a config.json written before these fields still loads
    assert vaekit.Config.from_dict(old).amp is False


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_device_without_cuda_names_the_fix(tmp_path, capsys):
    assert main(["train", "digits", "--out", str(tmp_path / "r"), "--device", "cuda:0", "--epochs", "1"]) == 2
    assert "use --device cpu" in capsys.readouterr().err


@pytest.mark.gpu
@gpu
def test_gpu_amp_and_compile_train_and_save_float32(small, tmp_path):
    model = vaekit.fit(small, _config(device="cuda", amp=True, compile=True), out=tmp_path / "run")
    assert model.device.type == "cuda" and np.isfinite(model.history.epochs[-1]["val_loss"])
    saved = load_file(tmp_path / "run" / "model.safetensors")
    assert all(v.dtype == torch.float32 for v in saved.values()) and not [k for k in saved if "_orig_mod" in k]
    fp32 = vaekit.fit(small, _config(device="cuda"))
    a, b = model.history.epochs[-1]["val_loss"], fp32.history.epochs[-1]["val_loss"]
    assert abs(a - b) < 0.1 * abs(b)  # bf16 matmuls change the path, not where it goes


@pytest.mark.gpu
@gpu
def test_gpu_streamed_batches_use_pinned_non_blocking_copies(tmp_path):
    x = np.random.default_rng(0).random((500, 30), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    config = _config(device="cuda", likelihood="bernoulli", binarize="none")
    lazy = vaekit.fit(vaekit.load_data(str(tmp_path / "x.npy"), stream=True), config)
    mem = vaekit.fit(vaekit.load_data(str(tmp_path / "x.npy")), config)
    for v, w in zip(lazy.state_dict().values(), mem.state_dict().values()):
        assert torch.allclose(v, w, atol=1e-5)
    rows = vaekit.stream.take(vaekit.load_data(str(tmp_path / "x.npy"), stream=True).x, torch.arange(10),
                              torch.device("cuda"))
    assert rows[torch.arange(4)].device.type == "cuda"
