"""`vaekit demo`: a VAE trained on scikit-learn's digits in seconds, with everything it makes
(samples, reconstructions, interpolations, traversals, the HTML report) in one folder that
appears whole or not at all."""

from __future__ import annotations

import importlib.util
import json
import shutil
import uuid
from pathlib import Path

import torch

from .checkpoint import check_folder_name, publish
from .config import Config
from .data import load_data
from .errors import ConfigError, OutputExistsError
from .sample import traversals, write_output

MARKER = "demo.json"  # what marks a folder as a demo's, so a rerun may replace it
FILES = ("report.html", "samples.png", "reconstructions.png", "interpolations.png", "traversals.png", "run")


def demo(out: str | Path, epochs: int = 80, force: bool = False):
    """Train on digits for up to `epochs` epochs and write the demo folder `out`; returns the
    model. An existing folder is replaced only if it is an earlier demo's (or with `force`)."""
    from .report import report
    from .train import fit

    if epochs < 1:
        raise ConfigError(f"--epochs {epochs} must be >= 1")
    out = Path(out)
    check_folder_name(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} is a file; choose a folder path for --out")
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists() and not force:
        raise ConfigError(f"{out} exists and is not a vaekit demo folder; choose another --out or pass --force")
    staging = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.partial-demo")  # two demos at once: one each
    staging.mkdir(parents=True)
    # a model this small (8x8 inputs) loses to a second thread's handover: on 2 shared cores 20
    # epochs took 4.3 s on one thread and 9.8 s on two
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train, test = load_data("digits", "train"), load_data("digits", "test")
        # batch 128 at lr 3e-3 reaches batch 64's validation loss (22.98 vs 22.86 nats) in 45% of the time
        config = Config(latent_dim=8, hidden=[256, 128], epochs=epochs, batch_size=128, lr=3e-3,
                        patience=15, seed=0, progress=False, checkpoint_every=0)  # seconds long: nothing to resume
        print(f"training a VAE on scikit-learn's digits for up to {epochs} epochs ...", flush=True)
        model = fit(train, config, out=staging / "run")
        write_output(model.sample(64, generator=torch.Generator().manual_seed(0)), staging / "samples.png")
        x = test.x[:16]
        write_output(torch.cat([x, model.reconstruct(x)]), staging / "reconstructions.png", nrow=16)
        path = model.interpolate(x[0:8:2], x[1:8:2], steps=10)  # (10, 4, 1, 8, 8)
        write_output(path.transpose(0, 1).reshape(-1, *path.shape[2:]), staging / "interpolations.png", nrow=10)
        _, walks = traversals(model, test.x[:500])  # (dims, 9, 1, 8, 8): the most active dims
        write_output(walks.reshape(-1, *walks.shape[2:]), staging / "traversals.png", nrow=walks.shape[1])
        if importlib.util.find_spec("matplotlib") is not None:  # the report is optional: vaekit[report]
            report(model, test, staging / "report.html", k=100, title="digits demo")
        (staging / MARKER).write_text(json.dumps({"epochs": len(model.history.epochs)}))
        publish(staging, out)
    finally:
        torch.set_num_threads(threads)
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return model
