"""Training further from a trained run (`vaekit train --init-from RUN`, `fit(model=...)`): the
run's architecture is kept, its weights are the start, the training settings are the new ones."""

import json

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
