"""Devices, mixed precision and torch.compile. GPU tests are marked `gpu` and skip without CUDA."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import vaekit
import vaekit.distributed
import vaekit.resume
import vaekit.stream
import vaekit.train
from vaekit.cli import main
from vaekit.data import binarize_fixed
from vaekit.errors import ConfigError, IncompatibleError
from vaekit.evaluate import evaluate, prepare_eval_data

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


@pytest.mark.parametrize("free_bits", [0.0, 0.5])  # the KL as a whole, and per dimension
def test_compiled_step_is_one_graph(small, monkeypatch, free_bits):
    # torch's KL lookup, run uncached inside the compiled step, cannot be traced and split it
    # into several graphs; fit resolves it eagerly first. The eager backend: capture only.
    from torch._dynamo.utils import counters

    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module, **kw: real(module, backend="eager", **kw))

    def breaks(**patch):
        monkeypatch.setattr(torch.distributions.kl, "_KL_MEMOIZE", {})  # as in a fresh process
        for name, value in patch.items():
            monkeypatch.setattr(vaekit.train, name, value)
        torch._dynamo.reset()
        counters.clear()
        vaekit.fit(small[:120], _config(device="cpu", compile=True, batch_size=60, epochs=1, val_fraction=0.0,
                                        free_bits=free_bits))
        return sum(counters["graph_break"].values())

    assert breaks() == 0
    assert breaks(resolve_kl=lambda *a, **kw: None) > 0  # the break this guards against


@pytest.mark.parametrize("arch", ["mlp", "ladder"])
def test_dreg_compiles_as_one_graph_with_the_eager_gradients(arch):
    # DReG reweights z's gradient by a hook set after the weights are known; traced through
    # autograd (aot_eager: inductor's capture without its code generation) it must stay one
    # graph and give eager's gradients (a hook filling a tensor in place did not, for the ladder)
    from torch._dynamo.utils import counters

    from vaekit.objectives import iwae

    extra = {"arch": "ladder", "latent_dims": [3, 2], "ladder_hidden": [8]} if arch == "ladder" else {"latent_dim": 2}
    torch.manual_seed(0)
    model = vaekit.VAE.from_config(vaekit.Config(hidden=[16], input_shape=[4], likelihood="gaussian", **extra))
    x = torch.randn(6, 4)

    def step(x):
        return iwae(model, x, k=5, dreg=True).bound.sum()

    grads = []
    for f in (step, torch.compile(step, backend="aot_eager")):
        torch._dynamo.reset()
        counters.clear()
        model.zero_grad()
        torch.manual_seed(3)
        f(x).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
        assert not counters["graph_break"]
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_a_kl_warmup_compiles_the_iwae_step_as_few_times_as_the_elbo_step(small, monkeypatch):
    # a branch on the warm-up's beta in iwae() made a graph more, compiled when the warm-up ended
    from torch._dynamo.utils import counters

    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module, **kw: real(module, backend="eager", **kw))

    def graphs(**kw):
        torch._dynamo.reset()
        counters.clear()
        vaekit.fit(small[:240], _config(device="cpu", compile=True, batch_size=60, epochs=2, val_fraction=0.0,
                                        kl_warmup=1.0, **kw))
        return counters["stats"]["unique_graphs"]
    assert graphs(objective="iwae", k=2) == graphs()


def test_amp_on_a_cpu_without_native_bf16_is_a_clear_error(small, tmp_path, capsys, monkeypatch):
    # emulated bf16 is slower than float32: a CPU without AMX / AVX512-BF16 gets an error, not a slow run
    monkeypatch.setattr(vaekit.distributed, "cpu_bf16", lambda: False)
    with pytest.raises(ConfigError, match="native bfloat16"):
        vaekit.fit(small, _config(device="cpu", amp=True))
    assert main(["train", "digits", "--out", str(tmp_path / "r"), "--device", "cpu", "--amp", "--epochs", "1"]) == 2
    assert "drop --amp" in capsys.readouterr().err and not (tmp_path / "r").exists()
    with pytest.raises(ConfigError, match="auto, cpu, cuda or cuda:N"):
        vaekit.Config(device="gpu")
    with pytest.raises(ConfigError, match="true or false"):
        vaekit.Config(amp="yes")
    old = vaekit.Config().to_dict()
    del old["amp"], old["compile"]  # a config.json written before these fields still loads
    assert vaekit.Config.from_dict(old).amp is False


@pytest.mark.skipif(not vaekit.distributed.cpu_bf16(), reason="needs a CPU with AMX or AVX512-BF16")
@pytest.mark.parametrize("arch", [{}, {"arch": "conv", "channels": [8, 16]}, {"arch": "hvae", "channels": [8, 16]}])
def test_cpu_amp_multiplies_in_bf16_and_saves_float32(small, tmp_path, arch, monkeypatch):
    images = small.reshape(-1, 1, 8, 8)
    autocast, dtypes, real = [], [], vaekit.train.objective

    def watching(model, x, config, **kw):  # the training step's objective, as fit calls it
        autocast.append(torch.is_autocast_enabled("cpu"))
        if not dtypes:
            layer = next(m for m in model.encoder.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))
            layer.register_forward_hook(lambda m, a, out: dtypes.append(out.dtype))
        return real(model, x, config, **kw)

    monkeypatch.setattr(vaekit.train, "objective", watching)
    model = vaekit.fit(images, _config(device="cpu", amp=True, **arch), out=tmp_path / "run")
    assert autocast[0] and dtypes[0] == torch.bfloat16  # the matmuls of the training steps ran in bf16
    saved = load_file(tmp_path / "run" / "model.safetensors")
    assert all(v.dtype == torch.float32 for v in saved.values() if v.is_floating_point())
    fp32 = vaekit.fit(images, _config(device="cpu", **arch))
    a, b = model.history.epochs[-1]["val_loss"], fp32.history.epochs[-1]["val_loss"]
    # bf16 changes the path, not where it goes (the sums alone can round to the same float: compare terms)
    terms = [[run.history.epochs[-1][key] for key in ("train_loss", "val_recon", "val_kl")] for run in (model, fp32)]
    assert np.isfinite(a) and terms[0] != terms[1] and abs(a - b) < 0.1 * abs(b)
    loaded = vaekit.load(tmp_path / "run")  # scored in float32 whatever it trained in
    assert loaded.config.amp and evaluate(loaded, images[:16], k=4)["nll"] > 0


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


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, gpu])])
@pytest.mark.parametrize("arch", ["mlp", "hvae", "conditional"])
def test_model_takes_cpu_data_in_every_api_call(arch, device):
    # found on the first GPU lease: evaluate/log_likelihood/reconstruct/elbo with a CPU tensor on a
    # CUDA model raised a device-mismatch RuntimeError; data may live anywhere, results follow x
    x = vaekit.load_data("digits").x[:120]  # (120, 1, 8, 8) on the CPU
    extra = {"mlp": {}, "hvae": {"arch": "hvae", "channels": [8, 16], "latent_channels": 2},
             "conditional": {"condition_on": "labels"}}[arch]
    data = vaekit.load_data("digits") if arch == "conditional" else x
    model = vaekit.fit(data, _config(device=device, likelihood="bernoulli", **extra))
    assert model.device.type == device
    c = model.label_condition(3).cpu().expand(len(x), -1) if arch == "conditional" else None
    ll = vaekit.log_likelihood(model, x, k=8, c=c)
    assert ll.device.type == "cpu" and torch.isfinite(ll).all()
    assert np.isfinite(evaluate(model, x, k=8, c=c)["nll"])
    assert vaekit.elbo(model, x, c=None if c is None else c).bound.isfinite().all()
    assert vaekit.iwae(model, x, k=3, c=c).bound.isfinite().all()
    assert model.reconstruct(x[:4], c=None if c is None else c[:4]).device.type == "cpu"
    if arch != "conditional":
        assert model.interpolate(x[0], x[1], steps=3).device.type == "cpu"
        assert model.traverse(x[0], 0, steps=3).shape == (3, 1, 8, 8)


def _untrained(device, **kw):
    config = _config(input_shape=[1, 8, 8], likelihood="bernoulli", **kw)
    return vaekit.VAE.from_config(config).to(device)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, gpu])])
def test_evaluation_bits_are_the_same_on_every_device(device):
    # prepare_eval_data moves the data to the model, and binarize_fixed drew with a generator on the
    # data's device: a CUDA generator with seed 0 gives other bits, so a model scored on a GPU was
    # scored on another test set than on the CPU (silently: no error, other numbers)
    x = vaekit.load_data("digits", "test").x[:50]  # grey levels, on the CPU
    cpu_bits = torch.bernoulli(x, generator=torch.Generator().manual_seed(0))
    bits = prepare_eval_data(_untrained(device, binarize="dynamic"), x)
    assert bits.device.type == device and torch.equal(bits.cpu(), cpu_bits)
    assert torch.equal(binarize_fixed(x.to(device)).cpu(), cpu_bits)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, gpu])])
def test_validation_bits_are_the_same_on_every_device(device):
    # fit's validation rows are binarised once with seed + 1; drawn with a CUDA generator they were
    # other bits on a GPU, so the same run's validation curve differed by device
    x = vaekit.load_data("digits").x[:50]
    cpu_bits = torch.bernoulli(x, generator=torch.Generator().manual_seed(7))
    bits = vaekit.stream.binarize_once(x.to(device), 7)
    assert bits.device.type == device and torch.equal(bits.cpu(), cpu_bits)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, gpu])])
def test_onnx_export_leaves_the_model_on_its_device(tmp_path, device):
    # export traced the caller's model after model.to("cpu"), which moves it in place: a CUDA
    # model came back from export_onnx living on the CPU
    pytest.importorskip("onnxruntime")
    model = _untrained(device)
    result = vaekit.export_onnx(model, tmp_path / "d.onnx", tmp_path / "e.onnx")
    assert result["decoder_max_abs_diff"] < 1e-4 and result["encoder_max_abs_diff"] < 1e-4
    assert model.device.type == device and all(p.device.type == device for p in model.parameters())
    assert model.sample(2).device.type == device


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, gpu])])
def test_fit_takes_conditions_on_any_device(device):
    # fit(condition=C) read C through numpy, which refuses a CUDA tensor (TypeError) while the data
    # itself may live on the GPU
    ds = vaekit.load_data("digits")
    x, c = ds.x[:200].to(device), torch.nn.functional.one_hot(ds.labels[:200], 10).float().to(device)  # (200, 10)
    model = vaekit.fit(x, _config(device=device, epochs=1), condition=c)
    assert model.condition_dim == 10 and model.device.type == device
    assert model.sample(3, condition=c[:3]).device.type == device
    assert model.reconstruct(x[:4], c=c[:4]).device.type == device


class _Stop(Exception):
    pass


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, gpu])])
def test_a_gpu_checkpoint_resumed_on_a_cpu_is_refused_by_name(small, tmp_path, monkeypatch, device):
    # --device auto resolves per machine, so a run checkpointed on a GPU can be resumed on a CPU: its
    # CUDA generator state cannot seed a CPU generator, and the sound checkpoint was called damaged,
    # with the advice to discard it. The CPU half stands in for a CUDA checkpoint with the key one has.
    monkeypatch.setattr(vaekit.train, "resolve_device", lambda name: torch.device(device))
    if device == "cpu":
        tensors = vaekit.resume._tensors
        monkeypatch.setattr(vaekit.resume, "_tensors",
                            lambda *a: {**tensors(*a), "rng.cuda": torch.zeros(16, dtype=torch.uint8)})
    objective, steps = vaekit.train.objective, []

    def stopping(model, x, config, *a, **kw):
        steps.append(model.training)  # validation calls run in eval mode
        if sum(steps) == 8:  # in epoch 2 of 6 steps: epoch 1 is checkpointed
            raise _Stop
        return objective(model, x, config, *a, **kw)

    monkeypatch.setattr(vaekit.train, "objective", stopping)
    with pytest.raises(_Stop):
        vaekit.fit(small, _config(), out=tmp_path / "r")
    monkeypatch.undo()
    monkeypatch.setattr(vaekit.train, "resolve_device", lambda name: torch.device("cpu"))
    with pytest.raises(IncompatibleError, match="made on a CUDA GPU.*--device"):
        vaekit.fit(small, _config(), out=tmp_path / "r", resume=True)
    assert vaekit.resume.latest(tmp_path / "r.partial") is not None  # kept for a resume on a GPU
