"""The HTML report (rendered in a real headless Chromium), the tables section, TensorBoard
event files and the live loss terms in the progress bar."""

import base64
import importlib
import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import vaekit
from vaekit.cli import main
from vaekit.errors import ConfigError

DATA_URI = re.compile(r"""src=['"]data:image/png;base64,([A-Za-z0-9+/=]+)['"]""")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny digits run (2 epochs, validation NLL logged) and its folder."""
    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("report") / "run"
    config = vaekit.Config(latent_dim=4, hidden=[32], epochs=2, val_nll_k=3, progress=False)
    vaekit.fit(vaekit.load_data("digits"), config, out=out)
    return out


@pytest.fixture(scope="module")
def page(run, tmp_path_factory):
    """The report of `run` on digits, written through the CLI."""
    out = tmp_path_factory.mktemp("page") / "report.html"
    assert main(["report", str(run), "digits", "-o", str(out), "--k", "10", "-n", "200"]) == 0
    return out


def decoded_images(text: str) -> list[Image.Image]:
    images = []
    for b64 in DATA_URI.findall(text):
        im = Image.open(io.BytesIO(base64.b64decode(b64, validate=True)))
        im.load()  # raises on a truncated or corrupt PNG
        images.append(im)
    return images


def test_report_is_one_self_contained_file(page):
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>")
    for heading in ("Training", "Samples from the prior", "Reconstructions", "Interpolations",
                    "Latent traversals", "Latent space", "Evaluation", "Config"):
        assert f"<h2>{heading}</h2>" in text
    # nothing to fetch: every src is an inline PNG, no scripts, links, stylesheets or URLs
    assert "<script" not in text and "<link" not in text and "url(" not in text
    assert not re.search(r"https?://", text)
    sources = re.findall(r"""\b(?:src|href)=['"]([^'"]*)""", text)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    images = decoded_images(text)
    assert len(images) == len(sources) >= 7
    assert all(im.format == "PNG" and im.width > 20 and im.height > 20 for im in images)
    assert "nll_se" in text and "active_units" in text  # evaluation numbers
    assert [p.name for p in page.parent.iterdir()] == ["report.html"]  # no temp files left behind


def test_report_reads_the_runs_metrics(run, tmp_path):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and "val_nll" in rows[0]
    out = vaekit.report(run, out=tmp_path / "r.html")  # no data: curves, samples, config
    text = out.read_text()
    assert "<h2>Training</h2>" in text and "2 epochs from metrics.jsonl" in text
    assert "<h2>Latent space</h2>" not in text and "No data given" in text
    assert len(decoded_images(text)) == 2


def chromium() -> str:
    exe = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs it with apt-get install chromium")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return exe


CHECK = """<script>
var errors = [];
window.addEventListener("error", function (e) { errors.push(String(e.message || e.type)); }, true);
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var out = document.createElement("pre");
  out.id = "vaekit-check";
  out.textContent = JSON.stringify({images: imgs.length, errors: errors,
    decoded: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length});
  document.body.appendChild(out);
});
</script>"""


def headless(exe: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=120)


def test_report_renders_in_headless_chromium(page, tmp_path):
    exe = chromium()
    # a copy with the check script injected: the report itself carries no script
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("<head>", "<head>" + CHECK, 1))
    dom = headless(exe, tmp_path, "--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'<pre id="vaekit-check">(.*?)</pre>', dom.stdout, flags=re.S)
    assert found, "the page did not finish loading: " + dom.stderr[-2000:]
    check = json.loads(found.group(1))
    assert check["errors"] == []
    assert check["images"] >= 7 and check["decoded"] == check["images"]  # every <img> decoded

    shot = tmp_path / "shot.png"
    r = headless(exe, tmp_path, f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri())
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (2400, 1200)
    assert pixels.std() > 20  # not a blank page
    assert (pixels < 128).mean() > 0.01  # text, plots and digits drew dark pixels


def test_report_for_flat_arrays_with_extra_sections(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(150, 6, generator=gen) - 2, torch.randn(150, 6, generator=gen) + 2])  # (300, 6)
    model = vaekit.fit(x, vaekit.Config(latent_dim=3, hidden=[16], epochs=2, progress=False))
    import pandas as pd

    extra = vaekit.table_section(pd.DataFrame({"a": [1.0, 2.0, 3.0]}), pd.DataFrame({"a": [1.0, 2.5, 2.0]}))
    importlib.import_module("vaekit.report")  # the submodule, once imported, stays callable
    assert callable(vaekit.report) and callable(vaekit.report.table_section)

    out = vaekit.report(model, x.numpy(), out=tmp_path / "flat.html", k=5, n=100, sections=[extra])
    text = out.read_text()
    assert "per-feature histograms" in text and "Tables: real vs synthetic" in text
    assert "<h2>Latent space</h2>" in text and "coloured by label" not in text  # no labels in an array
    images = decoded_images(text)
    assert len(images) >= 9 and all(im.width > 20 for im in images)


def test_report_refuses_bad_input_before_work(run, tmp_path, capsys):
    assert main(["report", str(run), "-o", str(tmp_path / "r.png")]) == 2
    assert ".html" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nope"), "-o", str(tmp_path / "r.html")]) == 2
    np.save(tmp_path / "flat.npy", np.zeros((5, 3), dtype=np.float32))
    assert main(["report", str(run), str(tmp_path / "flat.npy"), "-o", str(tmp_path / "r.html")]) == 2
    assert "shape" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat.npy"]


def test_report_replaces_a_file_only_with_force(run, tmp_path, capsys):
    out = tmp_path / "r.html"
    out.write_text("stale")
    assert main(["report", str(run), "-o", str(out), "--k", "2", "-n", "20"]) == 2
    assert "pass --force" in capsys.readouterr().err and out.read_text() == "stale"
    assert main(["report", str(run), "-o", str(out), "--k", "2", "-n", "20", "--force"]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_report_without_matplotlib_names_the_fix(run, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if matplotlib were not installed
    assert main(["report", str(run), "digits", "-o", str(tmp_path / "r.html")]) == 2
    assert "pip install matplotlib" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_same_seed_same_report(run, tmp_path):
    a = vaekit.report(run, "digits", out=tmp_path / "a.html", k=2, n=30, seed=3)
    b = vaekit.report(run, "digits", out=tmp_path / "b.html", k=2, n=30, seed=3)
    assert a.read_bytes() == b.read_bytes()


def hand_made_tables():
    import pandas as pd

    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    real = pd.DataFrame({
        "x": x,
        "y": 2 * x + 0.1 * rng.normal(size=400),  # nearly a copy of x
        "sign": np.where(x > 0, "pos", "neg"),  # a category decided by x
        "<odd> name": rng.choice(["a", "b", "c"], size=400),  # independent of the rest
    })
    # each column shuffled on its own: the marginals are kept, the links between columns broken
    synthetic = pd.DataFrame({c: real[c].sample(frac=1, random_state=i).to_numpy() for i, c in enumerate(real)})
    return real, synthetic


def test_table_section_renders_marginals_matrices_and_scores():
    real, synthetic = hand_made_tables()
    section = vaekit.table_section(real, synthetic, {"fidelity": {"ks": 0.04, "tv": 0.1}, "privacy": 0.9})
    images = decoded_images(section)
    assert len(images) == 4 + 1  # one marginal per column, the two matrices in one picture
    assert "fidelity.ks" in section and "privacy" in section
    assert "&lt;odd&gt; name" in section and "<odd>" not in section  # column names escaped
    gap = float(re.search(r"off the diagonal: ([0-9]+\.[0-9]+)", section).group(1))
    assert gap > 0.3  # shuffling broke the x-y and x-sign links
    with pytest.raises(ConfigError, match="lacks column"):
        vaekit.table_section(real, synthetic.drop(columns=["y"]))


def test_associations_match_their_definitions():
    import pandas as pd

    from vaekit.report import associations

    real, synthetic = hand_made_tables()
    a = associations(real)
    assert a[0, 1] == pytest.approx(np.corrcoef(real.x, real.y)[0, 1])
    assert a[0, 2] > 0.7  # eta: the sign category explains most of x's variance
    assert abs(a[2, 3]) < 0.15 and np.allclose(a, a.T) and np.allclose(np.diag(a), 1)
    # Cramér's V of the 2x2 table [[30, 10], [10, 30]]: chi2 = 20, n = 80, V = sqrt(20 / 80) = 0.5
    u = ["p"] * 30 + ["p"] * 10 + ["q"] * 10 + ["q"] * 30
    v = ["r"] * 30 + ["s"] * 10 + ["r"] * 10 + ["s"] * 30
    assert associations(pd.DataFrame({"u": u, "v": v}))[0, 1] == pytest.approx(0.5)
    # eta of two groups with means -1 and 1 and no spread inside them is 1
    two_groups = pd.DataFrame({"n": [-1.0, -1.0, 1.0, 1.0], "g": ["a", "a", "b", "b"]})
    assert associations(two_groups)[0, 1] == pytest.approx(1)
    assert associations(synthetic)[0, 1] == pytest.approx(np.corrcoef(synthetic.x, synthetic.y)[0, 1])


def test_tensorboard_event_files(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(["train", "digits", "--out", str(tmp_path / "run"), "--epochs", "2", "--hidden", "16",
                 "--latent-dim", "2", "--tensorboard", "--no-progress"]) == 0
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss/train", "loss/val", "recon/train", "kl/train", "kl/val", "lr"} <= tags
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    events = acc.Scalars("loss/val")
    assert [e.step for e in events] == [1, 2]
    assert [e.value for e in events] == pytest.approx([r["val_loss"] for r in rows], rel=1e-6)
    assert vaekit.load(tmp_path / "run").config.tensorboard  # the run folder still verifies


def test_tensorboard_errors_name_the_fix(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="pass out="):
        vaekit.fit(torch.rand(20, 4), vaekit.Config(epochs=1, tensorboard=True, progress=False))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        vaekit.fit(torch.rand(20, 4), vaekit.Config(epochs=1, tensorboard=True, progress=False), out=tmp_path / "r")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="true or false"):
        vaekit.Config(tensorboard="yes")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("objective,second", [("elbo", "kl"), ("wae-mmd", "mmd")])
def test_progress_bar_shows_the_objectives_terms(monkeypatch, objective, second):
    import tqdm

    term, shown = Terminal(), []
    monkeypatch.setattr(sys, "stderr", term)
    original = tqdm.tqdm.set_postfix

    def record(bar, ordered_dict=None, refresh=True, **kwargs):  # the bar redraws at most every 0.5 s
        shown.append(dict(ordered_dict or {}, **kwargs))
        return original(bar, ordered_dict, refresh=True, **kwargs)

    monkeypatch.setattr(tqdm.tqdm, "set_postfix", record)
    config = vaekit.Config(latent_dim=2, hidden=[8], epochs=1, batch_size=50, objective=objective)
    vaekit.fit(torch.rand(200, 4), config)
    assert len(shown) == 4 and list(shown[-1]) == ["loss", "recon", second]
    loss, recon, other = (float(v) for v in shown[-1].values())
    assert loss == pytest.approx(-recon + (other * config.mmd_weight if second == "mmd" else other), abs=0.01)
    text = term.getvalue()
    assert re.search(rf"loss=-?[0-9.]+, recon=-?[0-9.]+, {second}=-?[0-9.]+", text), text[-500:]
    assert re.search(rf"epoch 1/1: loss .*\(recon .*, {second} ", text)


def test_evaluate_shows_its_progress_on_a_terminal_only(run, monkeypatch, capsys):
    # k = 5000 on MNIST is minutes (hours for a deep model): a terminal sees how far it is
    argv = ["evaluate", str(run), "digits", "--k", "3", "-n", "150", "--batch-size", "50", "--json"]
    assert main(argv) == 0
    plain = capsys.readouterr()
    assert plain.err == ""  # not a terminal (a log, a pipe): no bar
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert main(argv) == 0
    assert "log p(x), k = 3:" in term.getvalue() and "/150 [" in term.getvalue()  # examples done of all (it
    # redraws at most every 0.5 s, and clears its line at the end)
    assert capsys.readouterr().out == plain.out  # the same numbers either way
