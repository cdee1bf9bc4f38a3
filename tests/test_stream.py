"""Streamed data: a .npy read batch by batch and image folders decoded per batch train like
their in-memory versions, and memory stays bounded for an array larger than the cap."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_measured
from PIL import Image

import vaekit
import vaekit.stream
from vaekit.cli import main
from vaekit.errors import DataError
from vaekit.stream import DeviceRows, LazyRows, hashed_uniform

def _cfg(**kw):
    return vaekit.Config(**{"epochs": 2, "hidden": [16], "latent_dim": 2, "batch_size": 32, "patience": 0,
                            "progress": False, "device": "cpu", **kw})


def test_streamed_npy_trains_exactly_like_the_array_in_memory(tmp_path, capsys):
    x = np.random.default_rng(0).random((300, 20), dtype=np.float32)  # in [0, 1]
    np.save(tmp_path / "x.npy", x)
    lazy, mem = vaekit.load_data(str(tmp_path / "x.npy"), stream=True), vaekit.load_data(str(tmp_path / "x.npy"))
    assert isinstance(lazy.x, LazyRows) and isinstance(mem.x, torch.Tensor)
    assert torch.equal(lazy.x[:], mem.x) and torch.equal(lazy.x[[5, 2, 5]], mem.x[[5, 2, 5]])
    mask = mem.x[:, 0] > 0.5
    assert torch.equal(lazy.x[mask], mem.x[mask]) and torch.equal(lazy.x[mask.numpy()], mem.x[mask])  # not rows 0/1
    with pytest.raises(IndexError, match="rows only"):
        lazy.x[0, 3]
    config = _cfg(likelihood="bernoulli", binarize="none")
    a, b = vaekit.fit(lazy, config), vaekit.fit(mem, config)
    assert a.history.epochs[-1]["val_loss"] == b.history.epochs[-1]["val_loss"]
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k
    # Gaussian likelihood: the data statistics come from a chunked float64 pass
    g_lazy, g_mem = (vaekit.fit(d, _cfg(likelihood="gaussian", epochs=0)) for d in (lazy, mem))
    assert torch.allclose(g_lazy.likelihood.shift, g_mem.likelihood.shift, atol=1e-6)
    assert torch.allclose(g_lazy.likelihood.scale, g_mem.likelihood.scale, atol=1e-6)
    assert main(["train", str(tmp_path / "x.npy"), "--stream", "--out", str(tmp_path / "run"), "--epochs", "1",
                 "--hidden", "8", "--latent-dim", "2", "--no-progress", "--device", "cpu"]) == 0
    assert "trained 1 epoch on x.npy (300 examples)" in capsys.readouterr().out


def test_streamed_uint8_channels_last_images_match_the_in_memory_loader(tmp_path):
    x = np.random.default_rng(1).integers(0, 256, (40, 6, 5, 3), dtype=np.uint8)  # (N, H, W, C)
    np.save(tmp_path / "img.npy", x)
    lazy, mem = vaekit.load_data(str(tmp_path / "img.npy"), stream=True), vaekit.load_data(str(tmp_path / "img.npy"))
    assert lazy.image and mem.image and lazy.x.shape == mem.x.shape == (40, 3, 6, 5)
    assert torch.equal(lazy.x[:], mem.x)
    np.save(tmp_path / "f.npy", np.asfortranarray(np.ones((10, 4), dtype=np.float32)))
    np.savez(tmp_path / "z.npz", x=np.ones((10, 4), dtype=np.float32))
    for bad in ("f.npy", "z.npz"):
        with pytest.raises(DataError, match="numpy.save"):
            vaekit.load_data(str(tmp_path / bad), stream=True)
    np.save(tmp_path / "nan.npy", np.array([[0.0, np.nan]] * 3, dtype=np.float32))
    with pytest.raises(DataError, match="3 NaN/Inf"):
        vaekit.load_data(str(tmp_path / "nan.npy"), stream=True)


def test_streamed_image_folder_decodes_per_batch_and_binarises_validation_once(tmp_path):
    rng = np.random.default_rng(2)
    for i in range(24):
        (tmp_path / "imgs" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (7, 9), dtype=np.uint8), "L").save(tmp_path / "imgs" / f"c{i % 2}" / f"{i:02d}.png")
    lazy = vaekit.load_data(str(tmp_path / "imgs"), stream=True)
    mem = vaekit.load_data(str(tmp_path / "imgs"))
    assert lazy.x.shape == mem.x.shape == (24, 1, 7, 9)
    assert torch.equal(lazy.x[:], mem.x) and torch.equal(lazy.labels, mem.labels)
    # validation bits depend on (seed, row, value) only, not on how the rows are batched
    val = DeviceRows(lazy.x, np.arange(5, 17), torch.device("cpu")).binarized(7)
    whole = val[:]
    assert torch.equal(torch.cat([val[0:5], val[5:12]]), whole) and set(whole.unique().tolist()) <= {0.0, 1.0}
    u = hashed_uniform(7, np.arange(100_000), 1)
    assert abs(float(u.mean()) - 0.5) < 0.01 and u.min() >= 0 and u.max() < 1
    model = vaekit.fit(lazy, _cfg(arch="conv", channels=[4], val_fraction=0.25))
    assert model.config.binarize == "dynamic" and np.isfinite(model.history.epochs[-1]["val_loss"])
    Image.fromarray(np.zeros((8, 9), dtype=np.uint8), "L").save(tmp_path / "imgs" / "c0" / "odd.png")
    with pytest.raises(DataError, match="resize all images"):
        vaekit.load_data(str(tmp_path / "imgs"), stream=True)


MEASURE = """
import json, sys
import torch, vaekit

def hwm_mb():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024

torch.set_num_threads(1)
config = vaekit.Config(epochs=1, hidden=[32], latent_dim=2, batch_size=512, patience=0, progress=False, device="cpu")
vaekit.fit(torch.randn(1000, 1024), config)  # warm-up: the runtime's one-off memory (allocator, kernels)
baseline = hwm_mb()
ds = vaekit.load_data(sys.argv[1], stream=True)
model = vaekit.fit(ds, config)
print(json.dumps({"baseline_mb": baseline, "peak_mb": hwm_mb(), "rows": len(ds.x),
                  "epochs": len(model.history.epochs)}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_training_on_a_200_mb_array_stays_under_a_100_mb_cap(tmp_path):
    path = tmp_path / "big.npy"
    big = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(50_000, 1024))  # 204.8 MB
    rng = np.random.default_rng(0)
    for i in range(0, len(big), 5000):
        big[i:i + 5000] = rng.standard_normal((5000, 1024), dtype=np.float32)
    big.flush()
    del big
    cap_mb = 100  # above the warm baseline; half the array's size
    r = run_measured(MEASURE, path, timeout=180)
    print(json.dumps({**r, "array_mb": round(path.stat().st_size / 1e6, 1), "cap_mb": cap_mb}))  # pytest -s shows it
    assert r["rows"] == 50_000 and r["epochs"] == 1
    assert r["peak_mb"] - r["baseline_mb"] < cap_mb, r


def test_large_npy_streams_by_default_from_the_cli_only(tmp_path, monkeypatch):
    np.save(tmp_path / "x.npy", np.zeros((50, 10), dtype=np.float32))  # 2,000 bytes as float32
    monkeypatch.setattr(vaekit.stream, "AUTO_STREAM_BYTES", 1000)
    assert isinstance(vaekit.load_data(str(tmp_path / "x.npy"), stream=None).x, LazyRows)  # the CLI's default
    assert isinstance(vaekit.load_data(str(tmp_path / "x.npy")).x, torch.Tensor)  # the API's default
    monkeypatch.setattr(vaekit.stream, "AUTO_STREAM_BYTES", 4000)
    assert isinstance(vaekit.load_data(str(tmp_path / "x.npy"), stream=None).x, torch.Tensor)


def test_huge_outputs_are_written_in_pieces_or_refused_naming_the_memory(tmp_path, monkeypatch):
    """Memory for generation is bounded: `vaekit sample -o FILE.npy` draws and writes a chunk at a
    time, so it works with 1 MiB of memory free; results that must be held whole (model.sample,
    a .png grid, interpolate, traverse) are refused up front, naming the memory they need, instead
    of being granted by Linux's overcommit and killed half-way."""
    import vaekit.model
    from vaekit.sample import write_samples

    config = _cfg(input_shape=[1, 8, 8], likelihood="bernoulli", binarize="none", data_layout="NHW")
    model = vaekit.VAE.from_config(config).eval()
    model.config = config
    monkeypatch.setattr(vaekit.VAE, "sample_chunk_values", 100 * 64)  # 100 rows a chunk
    monkeypatch.setattr(vaekit.model, "available_memory", lambda device: 1 << 20)
    write_samples(model, tmp_path / "s.npy", 5000, generator=torch.Generator().manual_seed(0), layout="NHW")
    got = np.load(tmp_path / "s.npy")  # 1.3 MB of samples, more than the memory "free"
    assert got.shape == (5000, 8, 8) and got.dtype == np.float32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npy"]
    g = torch.Generator().manual_seed(0)
    same = torch.cat([model.sample(100, generator=g) for _ in range(50)])[:, 0]  # the generator carries on
    assert np.array_equal(got, same.numpy())
    x = torch.rand(2, 1, 8, 8)
    for call in (lambda: model.sample(5000), lambda: model.interpolate(x[0], x[1], steps=10 ** 6),
                 lambda: model.traverse(x[0], 0, steps=10 ** 6),
                 lambda: write_samples(model, tmp_path / "g.png", 5000)):
        with pytest.raises(vaekit.errors.ConfigError, match=r"MiB of memory needed, more than the 1 MiB available"):
            call()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npy"]  # nothing half-written
    monkeypatch.setattr(vaekit.model, "available_memory", lambda device: 1 << 40)
    assert model.interpolate(x[0], x[1], steps=450).shape == (450, 1, 8, 8)  # decoded in 5 chunks
    assert model.sample(np.int64(3)).shape == (3, 1, 8, 8)  # numpy's integers are integers


def test_image_folders_decode_into_one_array_and_stream_when_large(tmp_path, monkeypatch):
    """An image folder is decoded straight into one (N, C, H, W) float32 array (it was held as
    PIL images, a list of arrays, their stack and its channels-first copy: 476 MB peak for 141 MB
    of pixels, now 152 MB), and with stream=None (`vaekit train` without --stream/--no-stream) one
    whose float32 copy exceeds the cap is streamed, as a large .npy is."""
    rng = np.random.default_rng(0)
    for i in range(7):
        Image.fromarray(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    whole = vaekit.load_data(str(tmp_path), stream=None)
    assert isinstance(whole.x, torch.Tensor) and whole.x.shape == (7, 3, 5, 6)
    assert whole.x.is_contiguous() and torch.equal(whole.x[3], torch.from_numpy(
        np.asarray(Image.open(tmp_path / "3.png"), dtype=np.float32).transpose(2, 0, 1) / 255))
    monkeypatch.setattr(vaekit.stream, "AUTO_STREAM_BYTES", 7 * 3 * 5 * 6 * 4 - 1)
    lazy = vaekit.load_data(str(tmp_path), stream=None)
    assert isinstance(lazy.x, LazyRows) and torch.equal(lazy.x[:], whole.x)
    assert isinstance(vaekit.load_data(str(tmp_path), stream=False).x, torch.Tensor)  # --no-stream


def test_commands_on_a_large_folder_decode_only_the_rows_they_use(tmp_path, monkeypatch, capsys):
    """`vaekit reconstruct RUN FOLDER -n 2` decoded every image of the folder first (a large one
    was killed for memory); now data over the streaming cap stays on disk until its first n rows
    are taken, and all of it is read only when it fits in memory, else refused naming -n."""
    import vaekit.model

    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    vaekit.fit(vaekit.load_data(str(folder)), _cfg(epochs=1), out=tmp_path / "run")
    monkeypatch.setattr(vaekit.stream, "AUTO_STREAM_BYTES", 100)  # the folder's 768 bytes are "large"
    decoded = []
    real = vaekit.stream.ImageFiles._read
    monkeypatch.setattr(vaekit.stream.ImageFiles, "_read",
                        lambda self, idx: decoded.append(len(idx)) or real(self, idx))
    assert main(["reconstruct", str(tmp_path / "run"), str(folder), "-n", "2", "-o", str(tmp_path / "r.npy")]) == 0
    assert sum(decoded) == 2 and np.load(tmp_path / "r.npy").shape == (2, 1, 4, 4)
    assert main(["evaluate", str(tmp_path / "run"), str(folder), "--k", "2"]) == 0  # all 12: they fit
    monkeypatch.setattr(vaekit.model, "available_memory", lambda device: 100)
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run"), str(folder), "--k", "2"]) == 2
    assert "imgs (12 examples) as float32" in capsys.readouterr().err  # ... more than the memory: pass -n N
    assert main(["evaluate", str(tmp_path / "run"), str(folder), "--k", "2", "-n", "1"]) == 0


def test_the_memory_guard_counts_a_containers_limit(tmp_path, monkeypatch):
    """MemAvailable is the host's; a container or batch job's cgroup limit (less its usage, page
    cache excepted) caps what a result may take."""
    import vaekit.model

    (tmp_path / "memory.max").write_text("1073741824\n")  # a 1 GiB container
    (tmp_path / "memory.current").write_text(str(900 << 20))
    (tmp_path / "memory.stat").write_text("anon 600000000\ninactive_file 104857600\n")
    cgroup = (str(tmp_path), "memory.max", "memory.current", "inactive_file")
    monkeypatch.setattr(vaekit.model, "CGROUP_MEMORY", (cgroup,))
    assert vaekit.model.available_memory(torch.device("cpu")) == (1 << 30) - (900 << 20) + (100 << 20)
    (tmp_path / "memory.max").write_text("max\n")
    assert vaekit.model.available_memory(torch.device("cpu")) > 1 << 30  # no limit: the machine's MemAvailable
