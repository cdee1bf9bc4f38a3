"""Training further from a trained run (`vaekit train --init-from RUN`, `fit(model=...)`): the
run's architecture is kept, its weights are the start, the training settings are the new ones."""

import json

import numpy as np
import pytest
import torch

import vaekit
from vaekit.cli import main
from vaekit.errors import IncompatibleError

FAST = ["--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """An ELBO run on digits whose architecture differs from every default."""
    out = tmp_path_factory.mktemp("init") / "elbo"
    assert main(["train", "digits", "--out", str(out), "--epochs", "2", "--latent-dim", "3", "--hidden", "24,12",
                 "--activation", "tanh", *FAST]) == 0
    return out


def test_second_stage_keeps_the_architecture_and_starts_from_the_weights(first, tmp_path, capsys):
    out = tmp_path / "iwae"
    # a learning rate so small that one epoch cannot move a weight visibly: what comes out is the start
    assert main(["train", "digits", "--out", str(out), "--init-from", str(first), "--objective", "iwae", "--k", "3",
                 "--epochs", "1", "--lr", "1e-9", *FAST]) == 0
    assert f"from {first}" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert (config["hidden"], config["latent_dim"], config["activation"]) == ([24, 12], 3, "tanh")  # the run's
    assert (config["objective"], config["k"], config["init_from"]) == ("iwae", 3, str(first))  # this command's
    before, after = vaekit.load(first).state_dict(), vaekit.load(out).state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.allclose(before[k], after[k], atol=1e-6), k
    # a fresh model of the same architecture is nowhere near
    assert main(["train", "digits", "--out", str(tmp_path / "fresh"), "--epochs", "1", "--lr", "1e-9",
                 "--latent-dim", "3", "--hidden", "24,12", "--activation", "tanh", *FAST]) == 0
    fresh = vaekit.load(tmp_path / "fresh").state_dict()
    assert not all(torch.allclose(before[k], fresh[k], atol=1e-3) for k in before)


def test_second_stage_trains_and_improves_on_the_first(first, tmp_path):
    start = vaekit.load(first)
    data = vaekit.load_data("digits")
    config = start.config.replace(epochs=3, lr=3e-3, progress=False)
    score = lambda m: -vaekit.log_likelihood(m, data.x[:300], k=20).mean().item()  # noqa: E731
    torch.manual_seed(0)
    base = score(start)
    model = vaekit.fit(data, config, model=start)
    torch.manual_seed(0)
    assert score(model) < base  # more training from there, a better model


def test_api_refuses_a_model_of_another_architecture(first):
    start = vaekit.load(first)
    with pytest.raises(IncompatibleError, match=r"hidden: \[24, 12\] in the model, \[256, 256\] here"):
        vaekit.fit(vaekit.load_data("digits"), vaekit.Config(latent_dim=3, activation="tanh", progress=False),
                   model=start)
    with pytest.raises(IncompatibleError, match="activation: tanh in the model, relu here"):
        vaekit.fit(vaekit.load_data("digits"), start.config.replace(activation="relu"), model=start)


def test_a_model_built_from_parts_still_trains(tmp_path):
    # no config to compare: only its input is checked (and a wrong one refused)
    import torch.nn as nn

    from vaekit.likelihoods import make_likelihood
    from vaekit.priors import make_prior

    encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))  # (B, 2d)
    decoder = nn.Sequential(nn.Linear(2, 64), nn.Unflatten(1, (1, 1, 8, 8)))  # (B, P=1, 1, 8, 8)
    model = vaekit.VAE(encoder, decoder, make_prior("normal", 2, (1, 8, 8), 1), make_likelihood("bernoulli", (1, 8, 8)),
                       2, (1, 8, 8))
    data = vaekit.load_data("digits")
    vaekit.fit(data, vaekit.Config(epochs=1, progress=False), model=model)
    with pytest.raises(IncompatibleError, match=r"input_shape: \[1, 8, 8\] in the model, \[5\] here"):
        vaekit.fit(torch.randn(50, 5), vaekit.Config(epochs=1, progress=False), model=model)


def test_gaussian_model_keeps_its_standardisation(tmp_path):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(300, 6, generator=gen) * 3 + 5  # real-valued data: Gaussian likelihood, standardised
    b = torch.randn(300, 6, generator=gen) * 0.5 - 2  # new data of the same shape, other scale
    config = vaekit.Config(latent_dim=2, hidden=[16], epochs=2, progress=False)
    start = vaekit.fit(a, config)
    shift = start.likelihood.shift.clone()
    torch.manual_seed(1)
    before = vaekit.log_likelihood(start, b, k=5)
    after_model = vaekit.fit(b, config.replace(epochs=1, lr=1e-9), model=start)
    assert torch.equal(after_model.likelihood.shift, shift)  # the trained model's, not b's
    torch.manual_seed(1)
    after = vaekit.log_likelihood(after_model, b, k=5)
    assert torch.allclose(before, after, atol=1e-3)  # lr 1e-9: still the start model


def test_conditional_run_continues_on_a_subset_of_its_classes(tmp_path):
    data = vaekit.load_data("digits")
    assert main(["train", "digits", "--out", str(tmp_path / "c"), "--condition-on", "labels", "--epochs", "1",
                 "--hidden", "16", "--latent-dim", "2", *FAST]) == 0
    keep = data.labels >= 5
    np.savez(tmp_path / "late.npz", x=data.x[keep].numpy(), labels=data.labels[keep].numpy())
    assert main(["train", str(tmp_path / "late.npz"), "--out", str(tmp_path / "c2"), "--init-from",
                 str(tmp_path / "c"), "--epochs", "1", *FAST]) == 0
    names = json.loads((tmp_path / "c" / "config.json").read_text())["condition_names"]
    assert json.loads((tmp_path / "c2" / "config.json").read_text())["condition_names"] == names  # all 10 kept


def test_table_runs_and_recorded_starts(tmp_path, capsys):
    import pandas as pd

    rng = torch.Generator().manual_seed(0)
    pd.DataFrame({"a": torch.randn(60, generator=rng).numpy(), "b": ["x", "y", "z"] * 20}).to_csv(tmp_path / "t.csv",
                                                                                                  index=False)
    assert main(["train", str(tmp_path / "t.csv"), "--out", str(tmp_path / "trun"), "--epochs", "1", *FAST]) == 0
    assert main(["train", "digits", "--out", str(tmp_path / "o"), "--init-from", str(tmp_path / "trun"), *FAST]) == 2
    assert "is a table run" in capsys.readouterr().err and not (tmp_path / "o").exists()
    # a start is recorded only when there is one: an init_from in a --config file is not a start
    (tmp_path / "c.json").write_text(json.dumps({"init_from": "runs/elsewhere", "epochs": 1}))
    assert main(["train", "digits", "--out", str(tmp_path / "p"), "--config", str(tmp_path / "c.json"),
                 "--hidden", "8", "--latent-dim", "2", *FAST]) == 0
    assert json.loads((tmp_path / "p" / "config.json").read_text())["init_from"] is None


def test_a_resumed_run_keeps_the_record_of_its_checkpoint(tmp_path, monkeypatch, interrupt_at):
    # interrupted, then resumed by a call that names a start: the checkpoint's weights continue,
    # so the run's record stays the checkpoint's (a fresh start, here)
    data = vaekit.load_data("digits").x[:600]
    config = vaekit.Config(latent_dim=2, hidden=[16], epochs=2, progress=False)
    interrupt_at(6)  # epoch 2's first batch: the checkpoint of epoch 1 is on disk
    with pytest.raises(KeyboardInterrupt):
        vaekit.fit(data, config, out=tmp_path / "r")
    monkeypatch.undo()
    model = vaekit.fit(data, config.replace(init_from="runs/other"), out=tmp_path / "r", resume=True)
    assert model.config.init_from is None
    assert json.loads((tmp_path / "r" / "config.json").read_text())["init_from"] is None


def test_a_preset_gives_way_to_the_run(first, tmp_path):
    # --preset mnist is an hvae recipe; from an MLP run only its training settings remain
    assert main(["train", "digits", "--out", str(tmp_path / "p"), "--init-from", str(first), "--preset", "mnist",
                 "--epochs", "1", *FAST]) == 0
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    preset = vaekit.Config.preset("mnist")
    assert (config["arch"], config["hidden"], config["activation"]) == ("mlp", [24, 12], "tanh")  # the run's
    assert config["groups"] == vaekit.Config().groups != preset.groups  # not the preset's hvae latent groups
    assert (config["lr_schedule"], config["ema"]) == (preset.lr_schedule, preset.ema)  # its training, kept
