"""The conditional VAE: q(z|x, c), p(x|z, c). Samples for a chosen class must be that class
(judged by a classifier trained here on the real data), from the API and from the CLI."""

import json

import numpy as np
import pytest
import torch

import vaekit
from vaekit import Config
from vaekit.cli import main
from vaekit.data import load_data
from vaekit.errors import DataError
from vaekit.evaluate import log_likelihood
from vaekit.objectives import elbo, iwae
from vaekit.train import build_condition


@pytest.fixture(scope="module")
def digits_cvae():
    train = load_data("digits", "train")
    config = Config(latent_dim=8, hidden=[128, 128], epochs=30, batch_size=64, lr=2e-3, patience=0,
                    condition_on="labels", progress=False)
    return vaekit.fit(train, config), train


def test_samples_of_class_c_are_classified_as_c(digits_cvae):
    from sklearn.linear_model import LogisticRegression

    model, train = digits_cvae
    clf = LogisticRegression(max_iter=2000).fit(train.x.flatten(1).numpy(), train.labels.numpy())
    g = torch.Generator().manual_seed(0)
    hits = []
    for c in range(10):
        x = model.sample(40, generator=g, condition=model.label_condition(c))  # (40, 1, 8, 8)
        hits.append(float((clf.predict(x.flatten(1).cpu().numpy()) == c).mean()))  # samples: on the model's device
    # chance is 0.1; a model that ignored c would score about that
    assert np.mean(hits) > 0.8 and min(hits) > 0.4, hits


def test_condition_changes_the_likelihood_and_bounds_agree(digits_cvae):
    model, train = digits_cvae
    x = torch.bernoulli(train.x[:20], generator=torch.Generator().manual_seed(0))  # (20, 1, 8, 8)
    right = torch.nn.functional.one_hot(train.labels[:20], 10).float()  # (20, 10)
    wrong = torch.nn.functional.one_hot((train.labels[:20] + 5) % 10, 10).float()
    torch.manual_seed(0)
    ll_right = log_likelihood(model, x, k=200, c=right)
    ll_wrong = log_likelihood(model, x, k=200, c=wrong)
    assert ll_right.mean() > ll_wrong.mean() + 5  # log p(x|true class) >> log p(x|other class)
    e = torch.stack([elbo(model, x, c=right).bound for _ in range(50)]).mean(0)  # (20,) E_q[ELBO]
    assert e.mean() < ll_right.mean()  # the ELBO bounds log p(x|c) from below, IS at k=200 is tighter
    assert iwae(model, x, k=3, c=right).bound.shape == (20,)


def test_condition_is_checked():
    plain = vaekit.VAE.from_config(Config(latent_dim=2, hidden=[8], input_shape=[4], likelihood="gaussian"))
    # typed (IncompatibleError, still a ValueError): a bare ValueError was a traceback under the CLI's rules
    with pytest.raises(vaekit.errors.IncompatibleError, match="unconditional"):
        plain.encode(torch.zeros(3, 4), torch.zeros(3, 2))
    cond = vaekit.VAE.from_config(Config(latent_dim=2, hidden=[8], input_shape=[4], likelihood="gaussian",
                                         condition_on="columns", condition_dim=3))
    with pytest.raises(vaekit.errors.IncompatibleError, match="needs a condition"):
        cond.encode(torch.zeros(3, 4))
    with pytest.raises(vaekit.errors.IncompatibleError, match="needs a condition"):
        vaekit.log_likelihood(cond, torch.zeros(3, 4), k=2)
    with pytest.raises(vaekit.errors.IncompatibleError, match="shape"):
        cond.decode(torch.zeros(3, 2), torch.zeros(3, 2))
    assert cond.sample(5, condition=torch.tensor([1.0, 0, 0])).shape == (5, 4)
    with pytest.raises(vaekit.errors.ConfigError, match="not --arch ladder; change"):
        Config(arch="ladder", latent_dims=[4, 2], condition_on="labels")
    # the message names only what clashes: the plain mlp is fine, the VampPrior is not
    with pytest.raises(vaekit.errors.ConfigError, match="not --prior vamp; change") as err:
        Config(prior="vamp", prior_components=10, condition_on="labels")
    assert "--arch mlp;" not in str(err.value) and "not --arch" not in str(err.value)


def test_conv_and_array_conditions():
    x = torch.rand(40, 1, 12, 10)
    c = np.eye(3, dtype=np.float32)[np.arange(40) % 3]  # (40, 3): any condition array
    model = vaekit.fit(x, Config(arch="conv", channels=[8, 8], latent_dim=3, epochs=1, progress=False), condition=c)
    assert model.config.condition_dim == 3 and model.config.condition_on == "columns"
    assert model.sample(4, condition=c[:4]).shape == (4, 1, 12, 10)
    assert model.reconstruct(x[:2], c=torch.as_tensor(c[:2])).shape == (2, 1, 12, 10)
    with pytest.raises(vaekit.errors.DataError, match="one row per example"):
        vaekit.fit(x, Config(epochs=1, progress=False), condition=c[:5])
    with pytest.raises(vaekit.errors.DataError, match="no labels"):
        vaekit.fit(x, Config(epochs=1, progress=False, condition_on="labels"))


def test_cli_condition_on_labels(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "digits", "--out", str(run), "--epochs", "2", "--condition-on", "labels",
                 "--no-progress"]) == 0
    assert json.loads((run / "config.json").read_text())["condition_names"] == [str(i) for i in range(10)]
    out = tmp_path / "sevens.npy"
    assert main(["sample", str(run), "-n", "6", "--condition", "7", "-o", str(out)]) == 0
    assert np.load(out).shape == (6, 1, 8, 8)
    assert main(["sample", str(run), "-n", "20", "-o", str(tmp_path / "all.png")]) == 0  # classes in turn
    from PIL import Image  # each column one class: 10 columns of 8x8 digits shown 32x32 (a square grid mixed them)

    assert Image.open(tmp_path / "all.png").size == (10 * 33 + 1, 2 * 33 + 1)
    capsys.readouterr()
    assert main(["sample", str(run), "-n", "6", "--condition", "12", "-o", str(tmp_path / "bad.npy")]) == 2
    assert "knows the classes 0, 1" in capsys.readouterr().err and not (tmp_path / "bad.npy").exists()
    assert main(["evaluate", str(run), "digits", "--k", "5", "-n", "30", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)  # its nll is -log p(x|c), and says so (it did not)
    assert result["n"] == 30 and result["conditional"] is True
    assert main(["evaluate", str(run), "digits", "--k", "5", "-n", "30"]) == 0
    assert "-log p(x|c) given the data's labels" in capsys.readouterr().out
    assert main(["reconstruct", str(run), "digits", "-n", "4", "-o", str(tmp_path / "r.npy")]) == 0
    assert main(["interpolate", str(run), "digits", "--pairs", "2", "-o", str(tmp_path / "i.npy")]) == 0
    # the report takes the conditions from the data's labels, and samples the classes in turn
    pytest.importorskip("matplotlib")
    assert main(["report", str(run), "-o", str(tmp_path / "r0.html")]) == 0
    assert main(["report", str(run), "digits", "-n", "30", "--k", "2", "-o", str(tmp_path / "r1.html")]) == 0
    page = (tmp_path / "r1.html").read_text()
    assert "the classes 0, 1, 2" in page and "the NLL is -log p(x|c) given the data" in page  # not a plain NLL


def test_class_names_from_sub_folders_and_string_labels(tmp_path, capsys):
    """Sub-folder names and string labels are the class names `sample --condition` takes; data
    with only some of the classes is scored with the model's own one-hot positions."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, level in (("cats", 40), ("dogs", 200)):  # two visibly different classes
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(np.clip(rng.normal(level, 10, (6, 6)), 0, 255).astype(np.uint8)).save(
                tmp_path / "imgs" / cls / f"{i}.png")
    assert load_data(str(tmp_path / "imgs")).classes == ["cats", "dogs"]
    assert load_data(str(tmp_path / "imgs"), stream=True).classes == ["cats", "dogs"]
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "imgs"), "--out", str(run), "--epochs", "1", "--condition-on", "labels",
                 "--latent-dim", "2", "--hidden", "16", "--no-progress"]) == 0
    model = vaekit.load(run)
    assert model.config.condition_names == ["cats", "dogs"]
    assert main(["sample", str(run), "-n", "3", "--condition", "dogs", "-o", str(tmp_path / "d.npy")]) == 0
    assert torch.equal(model.label_condition("dogs"), torch.tensor([0.0, 1.0]))
    # a folder holding one of the classes is that class (one sub-folder is a label, not no labels)
    (tmp_path / "some" / "dogs").mkdir(parents=True)
    for f in (tmp_path / "imgs" / "dogs").iterdir():
        (tmp_path / "some" / "dogs" / f.name).write_bytes(f.read_bytes())
    assert load_data(str(tmp_path / "some")).classes == ["dogs"]
    capsys.readouterr()
    assert main(["evaluate", str(run), str(tmp_path / "some"), "--k", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 8

    x = rng.random((9, 4)).astype(np.float32)
    np.savez(tmp_path / "s.npz", x=x, labels=np.array(["eel", "cat", "dog"] * 3))
    ds = load_data(str(tmp_path / "s.npz"))
    assert ds.classes == ["cat", "dog", "eel"] and ds.labels.tolist() == [2, 0, 1] * 3
    config = Config(latent_dim=2, hidden=[8], epochs=1, condition_on="labels", progress=False)
    model = vaekit.fit(ds, config)
    assert model.config.condition_names == ["cat", "dog", "eel"]
    np.savez(tmp_path / "some.npz", x=x[:4], labels=np.array(["eel", "eel", "cat", "eel"]))
    c, _ = build_condition(load_data(str(tmp_path / "some.npz")), model.config, None)
    assert c.argmax(1).tolist() == [2, 2, 0, 2] and c.shape == (4, 3)  # the model's positions, not 0..1
    np.savez(tmp_path / "new.npz", x=x[:2], labels=np.array(["cow", "cat"]))
    with pytest.raises(DataError, match=r"classes \['cow'\] that the model was not trained on"):
        build_condition(load_data(str(tmp_path / "new.npz")), model.config, None)
    np.savez(tmp_path / "float.npz", x=x[:2], labels=np.array([0.5, 1.0]))
    with pytest.raises(DataError, match="whole numbers or strings"):
        load_data(str(tmp_path / "float.npz"))
    np.savez(tmp_path / "whole.npz", x=x[:2], labels=np.array([3.0, 1.0]))
    assert load_data(str(tmp_path / "whole.npz")).labels.tolist() == [3, 1]


def test_cli_sample_of_a_run_conditioned_on_vectors_says_how_to_sample_it(tmp_path, capsys):
    # it said "conditioned on columns, not labels; sample it as a table" of an image run
    x = vaekit.load_data("digits").x[:100]
    run = tmp_path / "vec"
    vaekit.fit(x, Config(latent_dim=2, hidden=[8], epochs=1, progress=False), out=run, condition=torch.randn(100, 3))
    capsys.readouterr()
    assert main(["sample", str(run), "-n", "4", "-o", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err
    assert "own vectors" in err and "model.sample(n, condition=C)" in err and "table" not in err, err
