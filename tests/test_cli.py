"""The CLI end to end through main([...]), and its answers to bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import vaekit
from vaekit.cli import main
from vaekit.sample import traversals

TRAIN_FAST = ["--epochs", "2", "--latent-dim", "4", "--hidden", "32", "--no-progress"]
CONV_FAST = ["--arch", "conv", "--channels", "4,8", "--epochs", "2", "--latent-dim", "4", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "digits", "--out", str(out), *TRAIN_FAST]) == 0
    return out


def test_train_sample_reconstruct_interpolate_evaluate(run, tmp_path, capsys):
    assert (run / "manifest.json").is_file()
    assert main(["sample", str(run), "-n", "9", "-o", str(tmp_path / "s.png")]) == 0
    assert Image.open(tmp_path / "s.png").size[0] > 0
    assert main(["sample", str(run), "-n", "5", "-o", str(tmp_path / "s.npy"), "--draw"]) == 0
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (5, 1, 8, 8) and set(np.unique(s)) <= {0.0, 1.0}
    assert main(["reconstruct", str(run), "digits", "-n", "6", "-o", str(tmp_path / "r.npy")]) == 0
    assert np.load(tmp_path / "r.npy").shape == (6, 1, 8, 8)
    assert main(["reconstruct", str(run), "digits", "-o", str(tmp_path / "r.png")]) == 0
    assert main(["interpolate", str(run), "digits", "--pairs", "2", "--steps", "5", "-o", str(tmp_path / "i.npy")]) == 0
    assert np.load(tmp_path / "i.npy").shape == (5, 2, 1, 8, 8)
    capsys.readouterr()
    assert main(["evaluate", str(run), "digits", "--k", "50", "-n", "40", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res) >= {"nll", "nll_se", "elbo", "recon", "kl", "kl_per_dim", "active_units", "k", "n", "bits_per_dim"}
    assert res["n"] == 40 and res["k"] == 50 and len(res["kl_per_dim"]) == 4
    assert res["nll"] <= -res["elbo"] + 0.5  # the IS estimate is (on average) at least the ELBO
    assert main(["evaluate", str(run), "digits", "--k", "5", "-n", "10"]) == 0
    assert "NLL" in capsys.readouterr().out


def test_traverse_walks_the_most_active_dimensions_or_the_chosen_ones(run, tmp_path, capsys):
    model = vaekit.load(run)
    x = vaekit.load_data("digits", "test").x[:200]
    with torch.no_grad():
        spread = model.encode(x).mean.var(0, unbiased=False)  # (d,): Burda et al.'s activity per unit
    dims, walks = traversals(model, x, top=2, index=3, steps=7)
    expected = [d for d in spread.argsort(descending=True).tolist() if spread[d] > 0.01][:2]
    assert dims == (expected or [int(spread.argmax())]) and walks.shape == (len(dims), 7, 1, 8, 8)
    # each row is model.traverse of example 3: its posterior mean with only that coordinate moved
    assert torch.allclose(walks[0], model.traverse(x[3], dims[0], steps=7))
    assert main(["traverse", str(run), "digits", "--dims", "1", "3", "--steps", "5", "-o", str(tmp_path / "t.npy")]) == 0
    t = np.load(tmp_path / "t.npy")
    assert t.shape == (2, 5, 1, 8, 8) and "dimension(s) 1, 3 of example 0" in capsys.readouterr().out
    with torch.no_grad():  # the CLI walks from the data as given, as model.traverse does
        z = model.encode(x[:1]).mean.repeat(5, 1)  # (5, d)
        z[:, 3] = torch.linspace(-3, 3, 5)
        assert np.allclose(t[1], model.decode(z).mean.numpy(), atol=1e-6)
    assert main(["traverse", str(run), "digits", "--top", "3", "-o", str(tmp_path / "t.png")]) == 0
    rows = len(traversals(model, vaekit.load_data("digits", "test").x[:1000], top=3)[0])
    w, h = Image.open(tmp_path / "t.png").size
    assert round(w / h) == round(9 / rows)  # 9 steps across, one row per dimension


@pytest.mark.parametrize("spread, dims, note", [
    ([0.5, 0.0, 0.2, 0.0], "0, 2", "only 2 of the 4 latent dimensions are active"),
    ([0.001, 0.004, 0.0, 0.002], "1", "none of the 4 latent dimensions is active"),
    ([0.5, 0.3, 0.2, 0.1], "0, 1, 2, 3", None)])
def test_traverse_says_when_fewer_dimensions_than_top_are_active(run, tmp_path, capsys, monkeypatch, spread, dims,
                                                                  note):
    # README: traverse walks "the --top 6 most active" dims; it walks the active ones only, and a
    # collapsed model got one row (or two of --top 6) with no word of why
    import vaekit.sample

    monkeypatch.setattr(vaekit.sample, "activity", lambda means: torch.tensor(spread)[:means.shape[1]])
    capsys.readouterr()
    assert main(["traverse", str(run), "digits", "--top", "6", "-o", str(tmp_path / "t.npy")]) == 0
    out = capsys.readouterr().out
    assert f"dimension(s) {dims} of example 0" in out and np.load(tmp_path / "t.npy").shape[0] == len(dims.split(","))
    if note:
        assert note in out and "--dims" in out
    else:
        assert "active" not in out


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback_before_or_after_the_command(tmp_path, capsys, where):
    # `vaekit sample RUN ... --debug` was 'unrecognized arguments: --debug'; only `vaekit --debug sample` worked
    from vaekit.errors import IntegrityError

    command = ["sample", str(tmp_path / "no-run"), "-n", "2", "-o", str(tmp_path / "s.png")]
    assert main(command) == 2 and "not a vaekit run folder" in capsys.readouterr().err
    with pytest.raises(IntegrityError, match="not a vaekit run folder"):
        main(["--debug", *command] if where == "before" else [*command, "--debug"])


def test_pictures_take_the_data_as_given_not_a_random_binarisation(run, tmp_path, capsys):
    # reconstruct, interpolate and traverse once encoded a copy binarised with seed 0 (as evaluate
    # scores): the .png showed speckled inputs, and a path between two equal examples moved
    model = vaekit.load(run)
    x = vaekit.load_data("digits", "test").x[:4]
    assert main(["reconstruct", str(run), "digits", "-n", "4", "-o", str(tmp_path / "r.npy")]) == 0
    assert np.allclose(np.load(tmp_path / "r.npy"), model.reconstruct(x).numpy(), atol=1e-6)
    np.save(tmp_path / "same.npy", torch.cat([x[:1], x[:1]]).numpy())
    assert main(["interpolate", str(run), str(tmp_path / "same.npy"), "--steps", "3", "-o",
                 str(tmp_path / "i.npy")]) == 0
    path = np.load(tmp_path / "i.npy")  # (3, 1, 1, 8, 8)
    assert np.abs(path - path[0]).max() == 0
    capsys.readouterr()


def test_train_on_image_folder_and_npy(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (10, 6), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    assert main(["train", str(folder), "--out", str(tmp_path / "r1"), *CONV_FAST]) == 0
    assert main(["sample", str(tmp_path / "r1"), "-n", "4", "-o", str(tmp_path / "a.npy")]) == 0
    assert np.load(tmp_path / "a.npy").shape == (4, 1, 10, 6)
    np.save(tmp_path / "real.npy", rng.normal(5, 2, (60, 3)).astype(np.float32))
    assert main(["train", str(tmp_path / "real.npy"), "--out", str(tmp_path / "r2"), *TRAIN_FAST]) == 0
    assert json.loads((tmp_path / "r2" / "config.json").read_text())["likelihood"] == "gaussian"


def test_channels_last_arrays_get_npy_outputs_back_channels_last(tmp_path):
    rng = np.random.default_rng(1)
    hwc = rng.random((40, 6, 5, 3)).astype(np.float32)  # (N, H, W, C): how most image arrays are saved
    np.save(tmp_path / "hwc.npy", hwc)
    out = tmp_path / "r"
    assert main(["train", str(tmp_path / "hwc.npy"), "--out", str(out), *CONV_FAST]) == 0
    model = vaekit.load(out)
    assert model.config.data_layout == "NHWC" and model.config.input_shape == [3, 6, 5]  # the model works in NCHW
    assert main(["sample", str(out), "-n", "4", "-o", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (4, 6, 5, 3)
    assert main(["reconstruct", str(out), str(tmp_path / "hwc.npy"), "-n", "3", "-o", str(tmp_path / "r.npy")]) == 0
    r = np.load(tmp_path / "r.npy")
    x = torch.from_numpy(hwc[:3]).permute(0, 3, 1, 2)  # as the CLI reads DATA: (N, C, H, W), not binarised
    assert r.shape == (3, 6, 5, 3) and np.allclose(r, model.reconstruct(x).permute(0, 2, 3, 1).numpy(), atol=1e-6)
    assert main(["interpolate", str(out), str(tmp_path / "hwc.npy"), "--pairs", "2", "--steps", "3",
                 "-o", str(tmp_path / "i.npy")]) == 0
    assert np.load(tmp_path / "i.npy").shape == (3, 2, 6, 5, 3)
    assert main(["traverse", str(out), str(tmp_path / "hwc.npy"), "--dims", "0", "--steps", "3",
                 "-o", str(tmp_path / "t.npy")]) == 0
    assert np.load(tmp_path / "t.npy").shape == (1, 3, 6, 5, 3)
    assert main(["sample", str(out), "-n", "4", "-o", str(tmp_path / "s.png")]) == 0  # grids are unaffected
    chw = rng.random((40, 3, 6, 5)).astype(np.float32)  # channels first stays channels first
    np.save(tmp_path / "chw.npy", chw)
    assert main(["train", str(tmp_path / "chw.npy"), "--out", str(tmp_path / "r2"), *TRAIN_FAST]) == 0
    assert main(["sample", str(tmp_path / "r2"), "-n", "2", "-o", str(tmp_path / "s2.npy")]) == 0
    assert np.load(tmp_path / "s2.npy").shape == (2, 3, 6, 5)


@pytest.mark.parametrize("stream", [False, True])
def test_greyscale_arrays_without_a_channel_axis_get_npy_outputs_without_one(tmp_path, stream):
    grey = np.random.default_rng(2).integers(0, 256, (40, 6, 5), dtype=np.uint8)  # (N, H, W), as MNIST arrays are
    np.save(tmp_path / "g.npy", grey)
    out = tmp_path / "r"
    assert main(["train", str(tmp_path / "g.npy"), "--out", str(out), *TRAIN_FAST,
                 *(["--stream"] if stream else [])]) == 0
    model = vaekit.load(out)
    assert model.config.data_layout == "NHW" and model.config.input_shape == [1, 6, 5]
    assert main(["sample", str(out), "-n", "4", "-o", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (4, 6, 5)
    assert main(["reconstruct", str(out), str(tmp_path / "g.npy"), "-n", "3", "-o", str(tmp_path / "r.npy")]) == 0
    r = np.load(tmp_path / "r.npy")
    x = torch.from_numpy(grey[:3, None] / np.float32(255))  # (N, 1, H, W) in [0, 1], as given
    assert r.shape == (3, 6, 5) and np.allclose(r, model.reconstruct(x)[:, 0].numpy(), atol=1e-6)
    assert main(["interpolate", str(out), str(tmp_path / "g.npy"), "--pairs", "2", "--steps", "3",
                 "-o", str(tmp_path / "i.npy")]) == 0
    assert np.load(tmp_path / "i.npy").shape == (3, 2, 6, 5)
    assert main(["traverse", str(out), str(tmp_path / "g.npy"), "--dims", "0", "--steps", "3",
                 "-o", str(tmp_path / "t.npy")]) == 0
    assert np.load(tmp_path / "t.npy").shape == (1, 3, 6, 5)


def test_evaluate_json_is_strict_json(run, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(run), "digits", "--k", "5", "-n", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert res["n"] == 1 and res["nll_se"] is None and np.isfinite(res["nll"])  # one example: no standard error
    assert main(["evaluate", str(run), "digits", "--k", "5", "-n", "1"]) == 0
    assert "+- n/a (one example)" in capsys.readouterr().out


def test_demo(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--epochs", "3"]) == 0
    out = capsys.readouterr().out
    for name in ("report.html", "samples.png", "reconstructions.png", "interpolations.png", "traversals.png"):
        assert (tmp_path / "demo" / name).is_file() and name in out
    assert main(["demo", "--out", str(tmp_path / "demo"), "--epochs", "2"]) == 0  # re-running replaces a demo


def _bad_cases(tmp_path, run):
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(np.zeros((9, 8), dtype=np.uint8)).save(folder / "b.png")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.png").write_bytes(b"garbage")
    np.save(tmp_path / "empty.npy", np.zeros((0, 4), dtype=np.float32))
    np.save(tmp_path / "nan.npy", np.array([[0.0, np.nan], [1.0, 2.0]], dtype=np.float32))
    np.save(tmp_path / "wrong.npy", np.random.rand(5, 7).astype(np.float32))
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep").write_text("x")
    out = str(tmp_path / "out")
    return [
        (["train", str(tmp_path / "nope.npy"), "--out", out], "no such file"),
        (["train", "cifar10", "--out", out], "not a dataset name"),
        (["train", str(broken), "--out", out], "not a readable image"),
        (["train", str(folder), "--out", out], "resize"),
        (["train", str(tmp_path / "empty.npy"), "--out", out], "N >= 1"),
        (["train", str(tmp_path / "nan.npy"), "--out", out], "NaN"),
        (["train", "digits", "--out", out, "--latent-dim", "0"], "latent_dim"),
        (["train", "digits", "--out", out, "--epochs", "-1"], "epochs"),
        (["train", "digits", "--out", str(full)], "--force"),
        (["train", "mnist", "--out", out], "--data-dir"),
        (["sample", str(tmp_path / "norun"), "-n", "4", "-o", str(tmp_path / "o.png")], "not a vaekit run folder"),
        (["sample", str(run), "-n", "0", "-o", str(tmp_path / "o.png")], "-n 0"),
        (["sample", str(run), "-n", "4", "-o", str(tmp_path / "o.txt")], ".png"),
        (["reconstruct", str(run), str(tmp_path / "wrong.npy"), "-o", str(tmp_path / "o.npy")], "expects"),
        (["evaluate", str(run), "digits", "--k", "0"], "--k 0"),
    ]


def test_bad_input_one_line_error_nonzero_exit_nothing_written(tmp_path, run, capsys):
    for argv, expected in _bad_cases(tmp_path, run):
        before = sorted(p.name for p in tmp_path.rglob("*"))
        capsys.readouterr()
        code = main(argv)
        err = capsys.readouterr().err
        assert code != 0, argv
        assert expected in err, (argv, err)
        assert err.startswith("vaekit: error:") and len(err.strip().splitlines()) == 1, err
        assert sorted(p.name for p in tmp_path.rglob("*")) == before, argv


def test_help_is_instant_and_exit_codes_from_a_shell(tmp_path):
    code = "import sys, vaekit.cli; vaekit.cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # --help never waits for torch
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    p = subprocess.run([sys.executable, "-m", "vaekit", "train", "digits", "--out", str(tmp_path / "r"),
                        "--latent-dim", "0"], capture_output=True, text=True, env=env)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "latent_dim" in p.stderr
    assert not (tmp_path / "r").exists()


def test_bits_per_dim_only_for_binary_likelihoods(run):
    """bits/dim is reported where p(x) is a probability (Bernoulli pixels); a Gaussian density's
    "bits/dim" is not comparable with the literature's discrete figures, so it is left out."""
    from vaekit.evaluate import evaluate

    x = vaekit.load_data("digits", "test").x[:20].bernoulli(generator=torch.Generator().manual_seed(0))
    r = evaluate(vaekit.load(run), x, k=5)
    assert r["bits_per_dim"] == pytest.approx(r["nll"] / (64 * np.log(2)))
    grey = torch.rand(60, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 3  # real values: Gaussian
    model = vaekit.fit(grey, vaekit.Config(epochs=1, latent_dim=2, hidden=[8], progress=False))
    assert type(model.likelihood).__name__ == "Gaussian" and "bits_per_dim" not in evaluate(model, grey[:5], k=5)


def test_discretized_logistic_models_8_bit_images_in_bits_per_dim(tmp_path, capsys):
    """Uniform 8-bit noise has 8 bits/dim of entropy: no model of it can score below that,
    so the reported bits/dim (a probability of the 8-bit data) must be >= 8."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "noise.npy", rng.integers(0, 256, (120, 6, 6, 3), dtype=np.uint8))
    run = tmp_path / "r"
    assert main(["train", str(tmp_path / "noise.npy"), "--out", str(run), "--likelihood", "discretized-logistic",
                 *TRAIN_FAST]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), str(tmp_path / "noise.npy"), "--k", "20", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["bits_per_dim"] == pytest.approx(r["nll"] / (108 * np.log(2))) and r["bits_per_dim"] > 7.9
    assert main(["sample", str(run), "-n", "5", "--draw", "-o", str(tmp_path / "s.npy")]) == 0
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (5, 6, 6, 3) and np.array_equal(s * 255, np.round(s * 255))  # 8-bit levels, channels last
    assert main(["train", "digits", "--out", str(tmp_path / "d"), "--likelihood", "discretized-logistic",
                 *TRAIN_FAST]) == 2  # digits are k/16: not 8-bit levels
    assert "not 8-bit data" in capsys.readouterr().err and not (tmp_path / "d").exists()


def test_kl_per_dim_text_lists_a_small_latent_and_summarises_a_large_one():
    from vaekit.cli import kl_per_dim_text

    assert kl_per_dim_text([0.5, 0.0, 2.25]) == "KL per dim: 0.50 0.00 2.25"
    kl = [0.01] * 1000
    kl[700], kl[3] = 5.0, 4.0
    text = kl_per_dim_text(kl)
    assert text.startswith("KL per dim: 1000 values, sum 18.98; the 16 largest: [700] 5.00 [3] 4.00 [")
    assert text.count("[") == 16 and "--json" in text


def test_version_help_and_no_arguments(capsys):
    from vaekit import __version__

    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"vaekit {__version__}"
    assert main([]) == 0 and "train" in capsys.readouterr().out  # `vaekit` alone: the commands, not an error
    assert main(["help", "train"]) == 0
    assert "--resume" in capsys.readouterr().out  # the same text as `vaekit train --help`
    assert main(["help"]) == 0 and "snapshot" in capsys.readouterr().out


def test_a_bernoulli_model_trained_on_soft_targets_is_scored_on_binarised_data(tmp_path, capsys):
    # --binarize none: evaluate scored the grey levels themselves, a cross-entropy printed as an NLL and bits/dim
    from vaekit.data import MNIST_TEST_BINARIZE_SEED, binarize_fixed
    from vaekit.evaluate import prepare_eval_data

    run = tmp_path / "soft"
    assert main(["train", "digits", "--out", str(run), "--binarize", "none", *TRAIN_FAST]) == 0
    model = vaekit.load(run)
    assert (model.config.likelihood, model.config.binarize) == ("bernoulli", "none")
    grey = vaekit.load_data("digits", "test").x[:40]
    assert torch.equal(prepare_eval_data(model, grey), binarize_fixed(grey, MNIST_TEST_BINARIZE_SEED))
    bits = (grey > 0.5).float()  # binary data is scored as it is
    assert torch.equal(prepare_eval_data(model, bits), bits)


def test_output_into_a_closed_pipe_is_not_reported_as_a_disk_error(run):
    # `vaekit evaluate RUN digits | head -3` said "error: Broken pipe; check the path, its permissions and free space"
    p = subprocess.Popen([sys.executable, "-m", "vaekit", "evaluate", str(run), "digits", "--k", "2", "-n", "5"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # the reader is gone before the command prints
    err = p.stderr.read().decode()
    assert p.wait() == 141 and err == "", err
