"""What vaekit guarantees: a kill costs at most the work since the last checkpoint and a
resumed run is bit-identical; every file is checked before use and none is ever unpickled;
NaN stops (or skips) at its step and never reaches a checkpoint; bad input gets one line,
a non-zero exit code and an untouched output folder."""

import hashlib
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import vaekit
from vaekit import resume, train
from vaekit.checkpoint import load
from vaekit.cli import main
from vaekit.config import Config
from vaekit.errors import (ConfigError, DataError, IncompatibleError, IntegrityError, NonFiniteError,
                           OutputExistsError, VaekitError)

TINY = dict(latent_dim=2, hidden=[16], batch_size=128, lr=3e-3, progress=False, seed=1)
SRC = str(Path(vaekit.__file__).resolve().parents[1])


@pytest.fixture(scope="module")
def digits():
    return vaekit.load_data("digits")


def losses(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def tensors_of(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Interrupt(Exception):
    pass


def stop_at(monkeypatch, n):
    """Make the n-th training batch raise, as a crash would (validation calls are not counted)."""
    real, calls = train.objective, {"n": 0}

    def objective(model, x, config, *args, **kw):
        if model.training:
            calls["n"] += 1
            if calls["n"] == n:
                raise Interrupt(f"batch {n}")
        return real(model, x, config, *args, **kw)

    monkeypatch.setattr(train, "objective", objective)


# ---------------------------------------------------------------- checkpoints and --resume

@pytest.mark.parametrize("minutes", [0.0, 1e-9])  # epoch-end checkpoints only; and one after every step
def test_interrupted_and_resumed_in_process_is_bit_identical(digits, tmp_path, monkeypatch, minutes):
    x = digits.x[:600]  # 540 for training: 5 batches per epoch
    config = Config(epochs=4, checkpoint_minutes=minutes, **TINY)
    ref = vaekit.fit(x, config, out=tmp_path / "ref")
    ref_rows, ref_w = losses(ref.history.epochs), tensors_of(ref)
    out = tmp_path / "run"
    for n in (3, 6, 9):  # batches into each attempt: mid-epoch, across epoch boundaries
        stop_at(monkeypatch, n)
        with pytest.raises(Interrupt):
            vaekit.fit(x, config, out=out, resume=True)
        monkeypatch.undo()
        # the work so far is on disk (before the first epoch ends, only with minute-based checkpoints)
        assert (resume.latest(out.with_name("run.partial")) is not None) == (n > 5 or minutes > 0)
    model = vaekit.fit(x, config, out=out, resume=True)
    assert losses(model.history.epochs) == ref_rows and same_weights(tensors_of(model), ref_w)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert losses(lines) == ref_rows
    assert (out / "model.safetensors").read_bytes() == (tmp_path / "ref" / "model.safetensors").read_bytes()
    assert not (out / "checkpoints").exists() and not out.with_name("run.partial").exists()


def test_checkpoint_contents_and_atomic_layout(digits, tmp_path, monkeypatch):
    stop_at(monkeypatch, 25)  # in epoch 3 of 11 batches
    with pytest.raises(Interrupt):
        vaekit.fit(digits, Config(epochs=5, checkpoint_every=2, **TINY), out=tmp_path / "r")
    root = tmp_path / "r.partial" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["e0002-s000000", "latest"]  # every 2 epochs, no temp folders
    folder = resume.latest(tmp_path / "r.partial")
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "state.json", "tensors.safetensors"]
    state = json.loads((folder / "state.json").read_text())
    assert state["loop"]["epoch"] == 2 and len(state["loop"]["history"]) == 2 and state["loop"]["best_epoch"] >= 1
    from safetensors.torch import load_file

    keys = set(load_file(folder / "tensors.safetensors"))
    assert {"rng.batches", "rng.torch"} <= keys
    assert any(k.startswith("optim.") and k.endswith("exp_avg_sq") for k in keys)
    assert any(k.startswith("best.") for k in keys) and any(k.startswith("model.") for k in keys)
    # without --resume, an interrupted run's checkpoints are never deleted silently
    with pytest.raises(OutputExistsError, match="--resume"):
        vaekit.fit(digits, Config(epochs=5, checkpoint_every=2, **TINY), out=tmp_path / "r")
    assert resume.latest(tmp_path / "r.partial") == folder


def test_resume_refuses_other_options_or_data(digits, tmp_path, monkeypatch):
    config = Config(epochs=3, **TINY)
    stop_at(monkeypatch, 15)
    with pytest.raises(Interrupt):
        vaekit.fit(digits, config, out=tmp_path / "r")
    monkeypatch.undo()
    with pytest.raises(IncompatibleError, match="latent_dim=2 .now 3."):
        vaekit.fit(digits, config.replace(latent_dim=3), out=tmp_path / "r", resume=True)
    with pytest.raises(IncompatibleError, match="other training data"):
        vaekit.fit(digits.x[:1000], config, out=tmp_path / "r", resume=True)
    code = main(["train", "digits", "--out", str(tmp_path / "r"), "--latent-dim", "2", "--hidden", "16",
                 "--batch-size", "128", "--lr", "3e-3", "--seed", "1", "--epochs", "3", "--no-progress", "--resume"])
    assert code == 0 and (tmp_path / "r" / "manifest.json").is_file()
    assert main(["train", "digits", "--out", str(tmp_path / "r"), "--resume"]) == 2  # complete: nothing to resume


def test_snapshot_of_a_run_in_progress_is_its_best_weights_so_far(digits, tmp_path, monkeypatch, capsys):
    """`vaekit snapshot`: a model folder from the latest checkpoint, the run itself untouched."""
    config = Config(epochs=4, **TINY)
    stop_at(monkeypatch, 25)  # in epoch 3 of 11 batches: checkpoints at the ends of epochs 1 and 2
    with pytest.raises(Interrupt):
        vaekit.fit(digits, config, out=tmp_path / "r")
    monkeypatch.undo()
    partial = tmp_path / "r.partial"
    folder = resume.latest(partial)
    for unfinished in (tmp_path / "r", partial):  # loading it as a run points to the snapshot
        with pytest.raises(IntegrityError, match=f"`vaekit snapshot {partial} -o FOLDER`"):
            load(unfinished)
    before = {p: p.read_bytes() for p in sorted(partial.rglob("*")) if p.is_file()}
    # not into the run's own folders: --resume took a snapshot at --out for the finished run (and offered
    # to delete the training), and one inside .partial would have been published with the run
    for own in (tmp_path / "r", partial, partial / "snap", tmp_path / "r" / "snap"):
        with pytest.raises(ConfigError, match="the run's own folder"):
            vaekit.snapshot(partial, own)
    assert main(["snapshot", str(tmp_path / "r"), "-o", str(tmp_path / "r")]) == 2
    assert "own folder" in capsys.readouterr().err and not (tmp_path / "r").exists()
    path, loop = vaekit.snapshot(tmp_path / "r", tmp_path / "snap")  # the --out or the .partial folder
    assert (loop.epoch, loop.step) == (2, 0) and loop.best_epoch in (1, 2)
    from safetensors.torch import load_file

    saved = load_file(folder / "tensors.safetensors")
    model = load(path)
    assert same_weights(model.state_dict(), {k[5:]: v for k, v in saved.items() if k.startswith("best.")})
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows == loop.history
    assert torch.isfinite(vaekit.log_likelihood(model, digits.x[:20], k=5)).all()
    assert {p: p.read_bytes() for p in sorted(partial.rglob("*")) if p.is_file()} == before  # only read
    # an existing folder is never overwritten without --force; the CLI says the same in one line
    with pytest.raises(OutputExistsError):
        vaekit.snapshot(partial, path)
    assert main(["snapshot", str(tmp_path / "r"), "-o", str(path)]) == 2
    assert "--force" in capsys.readouterr().err and load(path) is not None
    assert main(["snapshot", str(partial), "-o", str(path), "--force"]) == 0
    assert "end of epoch 2" in capsys.readouterr().out
    # the run goes on and finishes as if nothing had happened
    model = vaekit.fit(digits, config, out=tmp_path / "r", resume=True)
    assert len(model.history.epochs) == 4
    with pytest.raises(ConfigError, match="finished run"):
        vaekit.snapshot(tmp_path / "r", tmp_path / "snap2")
    with pytest.raises(ConfigError, match="no training checkpoint"):
        vaekit.snapshot(tmp_path / "nothing", tmp_path / "snap2")
    assert not (tmp_path / "snap2").exists()


def test_snapshot_before_the_first_epoch_ends_takes_the_current_or_averaged_weights(digits, tmp_path, monkeypatch):
    config = Config(epochs=2, checkpoint_minutes=1e-9, ema=0.9, **TINY)  # a checkpoint after every step
    stop_at(monkeypatch, 4)
    with pytest.raises(Interrupt):
        vaekit.fit(digits, config, out=tmp_path / "r")
    monkeypatch.undo()
    path, loop = vaekit.snapshot(tmp_path / "r", tmp_path / "snap")
    assert (loop.epoch, loop.step, loop.best_epoch) == (0, 3, -1)
    from safetensors.torch import load_file

    saved = load_file(resume.latest(tmp_path / "r.partial") / "tensors.safetensors")
    ema = {k[4:]: v for k, v in saved.items() if k.startswith("ema.")}
    assert ema and same_weights(load(path).state_dict(), ema)
    assert (path / "metrics.jsonl").read_text() == ""


def test_snapshot_follows_a_checkpoint_that_training_replaced_meanwhile(digits, tmp_path, monkeypatch):
    """The trainer may move `latest` on and prune the folder a snapshot is reading: it reads the new one."""
    stop_at(monkeypatch, 25)
    with pytest.raises(Interrupt):
        vaekit.fit(digits, Config(epochs=4, **TINY), out=tmp_path / "r")
    monkeypatch.undo()
    partial = tmp_path / "r.partial"
    newest, real = resume.latest(partial), resume.latest
    stale = newest.with_name("e0001-s000000")
    calls = []

    def first_a_pruned_one(run_dir):  # the first answer names a folder that is gone by the time it is read
        calls.append(run_dir)
        return stale if len(calls) == 1 else real(run_dir)

    monkeypatch.setattr(resume, "latest", first_a_pruned_one)
    path, loop = vaekit.snapshot(tmp_path / "r", tmp_path / "snap")
    assert len(calls) == 2 and (loop.epoch, loop.step) == (2, 0) and load(path) is not None


def _train_cmd(data, out, *extra):
    return [sys.executable, "-m", "vaekit", "train", str(data), "--out", str(out), "--epochs", "10",
            "--latent-dim", "2", "--hidden", "32", "--batch-size", "32", "--lr", "3e-3", "--seed", "2",
            "--no-progress", "--checkpoint-minutes", "0.003", *extra]


def _wait_for_checkpoints(pointer: Path, proc, count: int, timeout=120.0) -> None:
    """Return once `proc` has moved `latest` on `count` times (or has ended)."""
    def read():
        try:
            return pointer.read_bytes()
        except FileNotFoundError:  # not written yet, or the run folder is being replaced
            return None

    seen, last = 0, read()
    end = time.monotonic() + timeout
    while seen < count and time.monotonic() < end and proc.poll() is None:
        now = read()
        if now != last:
            seen, last = seen + 1, now
        time.sleep(0.002)


def test_kill_9_at_random_moments_then_resume_is_bit_identical(digits, tmp_path):
    """Real processes, real SIGKILL: the resumed run's losses and weights equal an uninterrupted run's."""
    data = tmp_path / "digits.npy"
    np.save(data, digits.x.numpy())
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    out = tmp_path / "run"
    partial, pointer = tmp_path / "run.partial", tmp_path / "run.partial" / "checkpoints" / "latest"
    ref = subprocess.Popen(_train_cmd(data, tmp_path / "ref"), env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)  # runs alongside the first victim
    rng = random.Random(8)
    hits = 0
    for round_ in range(3):
        proc = subprocess.Popen(_train_cmd(data, out, "--resume"), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        # at a random moment: start-up included in the first round, then after 1-2 checkpoints of its own
        # (10 epochs, one checkpoint per epoch at least: three rounds never reach the end of training)
        _wait_for_checkpoints(pointer, proc, 0 if round_ == 0 else rng.randint(1, 2))
        time.sleep(rng.uniform(0.0, 1.5 if round_ == 0 else 0.05))
        proc.send_signal(signal.SIGKILL)
        rc = proc.wait()
        hits += rc == -signal.SIGKILL and pointer.exists()
    assert hits >= 2, "the kills should land while training, with checkpoints on disk"
    assert partial.exists() and not out.exists()
    final = subprocess.run(_train_cmd(data, out, "--resume"), env=env, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    assert ref.wait() == 0, ref.stderr.read()
    ref_rows = losses(json.loads(x) for x in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines())
    got_rows = losses(json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines())
    assert len(ref_rows) == 10 and got_rows == ref_rows
    assert (out / "model.safetensors").read_bytes() == (tmp_path / "ref" / "model.safetensors").read_bytes()
    assert vaekit.load(out).input_shape == (1, 8, 8)


# ---------------------------------------------------------------- integrity

def _corrupt(data: bytes, rng: random.Random) -> bytes:
    """One random damage: truncation, a flipped bit, an overwritten or inserted byte, a cut range."""
    n = len(data)
    kind = rng.randrange(5)
    i = rng.randrange(n)
    if kind == 0:
        out = data[:i]
    elif kind == 1:
        out = data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1:]
    elif kind == 2:
        out = data[:i] + bytes([rng.choice([b for b in range(256) if b != data[i]])]) + data[i + 1:]
    elif kind == 3:
        out = data[:i] + bytes([rng.randrange(256)]) + data[i:]
    else:
        out = data[:i] + data[i + rng.randint(1, max(1, min(64, n - i))):]
    return out if out != data else data[:-1]


def _all_refused(path: Path, loader, rng: random.Random, times=200):
    original = path.read_bytes()
    try:
        for _ in range(times):
            path.write_bytes(_corrupt(original, rng))
            with pytest.raises(IntegrityError) as info:
                loader()
            assert path.name in str(info.value) or "latest" in str(info.value) or \
                path.parent.name in str(info.value), str(info.value)
    finally:
        path.write_bytes(original)
    loader()  # and the intact file still loads


def test_200_random_corruptions_of_every_saved_file_are_refused(digits, tmp_path, monkeypatch):
    rng = random.Random(0)
    stop_at(monkeypatch, 20)
    with pytest.raises(Interrupt):
        vaekit.fit(digits, Config(epochs=3, **TINY), out=tmp_path / "r")
    monkeypatch.undo()
    run = tmp_path / "r.partial"
    folder = resume.latest(run)
    config = json_config(folder)
    model = vaekit.VAE.from_config(config)
    opt = torch.optim.Adam(model.parameters())
    fingerprint = resume.data_fingerprint(digits.x)

    def load_state():
        return resume.restore(run, model, opt, torch.Generator(), config, fingerprint)

    for name in ("state.json", "tensors.safetensors", "manifest.json"):
        _all_refused(folder / name, load_state, rng)
    _all_refused(run / "checkpoints" / "latest", load_state, rng)
    saved = vaekit.fit(digits, Config(epochs=1, **TINY), out=tmp_path / "m")
    assert saved is not None
    for name in ("config.json", "model.safetensors", "manifest.json", "metrics.jsonl"):
        _all_refused(tmp_path / "m" / name, lambda: load(tmp_path / "m"), rng)


def json_config(folder: Path) -> Config:
    return Config.from_dict(json.loads((folder / "state.json").read_text())["config"])


# ---------------------------------------------------------------- no pickle, ever

class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def _pickle_bytes(marker: Path) -> bytes:
    return pickle.dumps({"x": Payload(marker)})


def _torch_save_bytes(marker: Path, tmp: Path) -> bytes:
    path = tmp / "evil.pt"
    torch.save({"w": torch.zeros(2), "p": Payload(marker)}, path)  # a zip holding a pickle
    return path.read_bytes()


@pytest.mark.parametrize("force_unsafe", [False, True])
def test_planted_pickles_are_never_executed(digits, tmp_path, monkeypatch, force_unsafe):
    if force_unsafe:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "MARKER"
    evil = {"pickle": _pickle_bytes(marker), "torch.save": _torch_save_bytes(marker, tmp_path)}
    stop_at(monkeypatch, 15)
    with pytest.raises(Interrupt):
        vaekit.fit(digits, Config(epochs=3, **TINY), out=tmp_path / "r")
    monkeypatch.undo()
    if force_unsafe:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    vaekit.fit(digits, Config(epochs=1, **TINY), out=tmp_path / "m")
    ckpt = resume.latest(tmp_path / "r.partial")
    model_files = [tmp_path / "m" / n for n in ("config.json", "model.safetensors", "manifest.json", "metrics.jsonl")]
    ckpt_files = [ckpt / n for n in ("state.json", "tensors.safetensors", "manifest.json")]
    ckpt_files.append(tmp_path / "r.partial" / "checkpoints" / "latest")
    config = json_config(ckpt)
    resume_args = ["train", "digits", "--out", str(tmp_path / "r"), "--resume", "--latent-dim", "2", "--hidden",
                   "16", "--batch-size", "128", "--lr", "3e-3", "--seed", "1", "--epochs", "3", "--no-progress"]
    checked = 0
    for kind, payload in evil.items():
        for path in model_files + ckpt_files:
            original = path.read_bytes()
            for rehash in (False, True):  # as planted, and with the manifest rewritten to match it
                if rehash and path.name in ("manifest.json", "latest"):
                    continue  # nothing vouches for these but their own form (and the pointer's sha256)
                path.write_bytes(payload)
                if rehash:
                    _rehash(path)
                try:
                    if path in model_files:
                        with pytest.raises(VaekitError):
                            load(path.parent)
                        assert main(["sample", str(path.parent), "-n", "2", "-o", str(tmp_path / "s.npy")]) == 2
                    else:
                        model = vaekit.VAE.from_config(config)
                        with pytest.raises(VaekitError):
                            resume.restore(tmp_path / "r.partial", model, torch.optim.Adam(model.parameters()),
                                           torch.Generator(), config, resume.data_fingerprint(digits.x))
                        assert main(resume_args) == 2
                    assert not marker.exists(), (kind, path, rehash)
                    checked += 1
                finally:
                    path.write_bytes(original)
                    if rehash:
                        _rehash(path)
    assert checked == 2 * (8 + 5)
    for name in ("data.npy", "data.npz"):  # data files: .npy / .npz holding pickles
        bad = tmp_path / name
        if name.endswith(".npy"):
            np.save(bad, np.array([Payload(marker), Payload(marker)], dtype=object).reshape(2, 1), allow_pickle=True)
        else:
            np.savez(bad, x=np.array([Payload(marker)] * 2, dtype=object).reshape(2, 1))
        for argv in (["train", str(bad), "--out", str(tmp_path / "o")],
                     ["evaluate", str(tmp_path / "m"), str(bad)],
                     ["reconstruct", str(tmp_path / "m"), str(bad), "-o", str(tmp_path / "o.npy")]):
            assert main(argv) == 2
        bad.write_bytes(evil["pickle"])
        assert main(["train", str(bad), "--out", str(tmp_path / "o")]) == 2
    cfg = tmp_path / "cfg.json"
    cfg.write_bytes(evil["pickle"])
    assert main(["train", "digits", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    images = tmp_path / "images"  # an image folder, and MNIST files, that are pickles
    images.mkdir()
    (images / "a.png").write_bytes(evil["pickle"])
    (images / "b.png").write_bytes(evil["torch.save"])
    assert main(["train", str(images), "--out", str(tmp_path / "o")]) == 2
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (images / name).write_bytes(evil["pickle"])
    assert main(["train", "mnist", "--data-dir", str(images), "--out", str(tmp_path / "o")]) == 2
    assert not marker.exists() and not (tmp_path / "o").exists()


def _rehash(path: Path) -> None:
    """Rewrite the manifest next to `path` so it vouches for the file's current bytes."""
    manifest = path.parent / "manifest.json"
    m = json.loads(manifest.read_text())
    data = path.read_bytes()
    m["files"][path.name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest.write_text(json.dumps(m, indent=2))
    pointer = path.parent.parent / "latest"
    if pointer.exists() and path.parent.parent.name == "checkpoints":
        p = json.loads(pointer.read_text())
        p["manifest_sha256"] = hashlib.sha256(manifest.read_bytes()).hexdigest()
        pointer.write_text(json.dumps(p))


def test_no_pickle_in_the_source():
    src = Path(vaekit.__file__).parent
    for f in src.glob("*.py"):
        text = f.read_text()
        for banned in ("import pickle", "torch.load(", "allow_pickle=True", "weights_only=False"):
            assert banned not in text, (f.name, banned)


# ---------------------------------------------------------------- NaN

def nan_at(monkeypatch, steps, where="loss"):
    """Make the given training batches (1-based) produce a NaN loss, or finite loss with NaN gradients."""
    real, calls = train.objective, {"n": 0}

    def objective(model, x, config, *args, **kw):
        b = real(model, x, config, *args, **kw)
        if not model.training:
            return b
        calls["n"] += 1
        if calls["n"] not in steps:
            return b
        if where == "loss":
            return b._replace(bound=b.bound * float("nan"))
        p = next(model.parameters())
        return b._replace(bound=b.bound + 0 * torch.sqrt(0 * p.sum()))  # finite value, NaN gradient

    monkeypatch.setattr(train, "objective", objective)


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_nonfinite_stops_at_its_step_naming_the_last_checkpoint(digits, tmp_path, monkeypatch, where):
    nan_at(monkeypatch, {25}, where)  # epoch 3, step 2 (11 batches per epoch)
    with pytest.raises(NonFiniteError) as info:
        vaekit.fit(digits, Config(epochs=4, **TINY), out=tmp_path / "r")
    msg = str(info.value)
    assert f"the {where} became non-finite at epoch 3, step 2" in msg
    last = resume.latest(tmp_path / "r.partial")
    assert str(last) in msg and last.name == "e0002-s000000"
    from safetensors.torch import load_file

    saved = load_file(last / "tensors.safetensors").values()
    assert all(torch.isfinite(t).all() for t in saved if t.is_floating_point())
    monkeypatch.undo()  # the cause is gone: resume carries on from the checkpoint
    model = vaekit.fit(digits, Config(epochs=4, **TINY), out=tmp_path / "r", resume=True)
    assert len(model.history.epochs) == 4


def test_skip_nonfinite_counts_skips_and_aborts_on_a_long_streak(digits, tmp_path, monkeypatch, capsys):
    nan_at(monkeypatch, {3, 14, 15})
    model = vaekit.fit(digits, Config(epochs=2, skip_nonfinite=2, **TINY))
    assert [r["skipped_batches"] for r in model.history.epochs] == [1, 2]
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    monkeypatch.undo()
    nan_at(monkeypatch, {3, 4, 5, 6}, "gradient")
    with pytest.raises(NonFiniteError, match="epoch 1, step 5; no checkpoint"):
        vaekit.fit(digits, Config(epochs=2, skip_nonfinite=3, **TINY))
    monkeypatch.undo()
    nan_at(monkeypatch, set(range(1, 100)))
    assert main(["train", "digits", "--out", str(tmp_path / "x"), "--epochs", "1", "--skip-nonfinite",
                 "--hidden", "8", "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "step 10" in err and len(err.strip().splitlines()) == 1  # the default streak limit is 10
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()


def test_no_checkpoint_or_model_with_nonfinite_values_is_ever_written(digits, tmp_path):
    model = vaekit.VAE.from_config(Config(input_shape=[1, 8, 8], likelihood="bernoulli", **TINY))
    opt = torch.optim.Adam(model.parameters())
    run = tmp_path / "r.partial"
    run.mkdir()
    resume.save(run, model, opt, torch.Generator(), resume.LoopState(), None, model.config, "x")
    with torch.no_grad():
        model.decoder.net[0].bias[0] = float("inf")
    with pytest.raises(NonFiniteError, match="no checkpoint written"):
        resume.save(run, model, opt, torch.Generator(), resume.LoopState(epoch=1), None, model.config, "x")
    assert resume.latest(run).name == "e0000-s000000"
    with pytest.raises(NonFiniteError):
        resume.finite_or_raise(model, "the trained model")


# ---------------------------------------------------------------- bad input, across commands

@pytest.fixture(scope="module")
def world(tmp_path_factory, digits):
    """A folder with a trained image run, a trained table run and many kinds of bad files."""
    d = tmp_path_factory.mktemp("world")
    fast = ["--epochs", "1", "--latent-dim", "2", "--hidden", "16", "--no-progress"]
    assert main(["train", "digits", "--out", str(d / "run"), *fast]) == 0
    np.save(d / "table.npy", np.random.default_rng(0).normal(0, 3, (40, 5)).astype(np.float32))
    assert main(["train", str(d / "table.npy"), "--out", str(d / "trun"), *fast]) == 0
    arrays = {
        "empty.npy": np.zeros((0, 4), np.float32), "nan.npy": np.array([[0.0, np.nan], [1.0, 2.0]], np.float32),
        "inf.npy": np.array([[0.0, np.inf], [1.0, 2.0]], np.float32), "vec.npy": np.arange(5.0),
        "text.npy": np.array([["a", "b"], ["c", "d"]]), "complex.npy": np.ones((3, 2), np.complex64),
        "wrong.npy": np.random.rand(5, 7).astype(np.float32), "one.npy": digits.x[:1].numpy(),
        "big.npy": np.full((4, 1, 8, 8), 3.0, np.float32), "imgnan.npy": np.full((4, 1, 8, 8), np.nan, np.float32),
    }
    for name, arr in arrays.items():
        np.save(d / name, arr)
    np.save(d / "pickled.npy", np.array([{"a": 1}, {"b": 2}], dtype=object).reshape(2, 1), allow_pickle=True)
    np.savez(d / "multi.npz", a=np.ones((3, 2)), b=np.ones((3, 2)))
    np.savez(d / "labels.npz", x=np.ones((5, 2)), labels=np.arange(3))
    (d / "data.txt").write_text("1,2\n3,4\n")
    (d / "afile").write_text("not a folder")
    (d / "full").mkdir()
    (d / "full" / "keep.txt").write_text("precious")
    (d / "exists.npy").write_bytes(b"old output")
    (d / "exists.html").write_bytes(b"old report")
    (d / "exists.onnx").write_bytes(b"old graph")
    (d / "unknown.json").write_text('{"latent_dimz": 3}')
    (d / "list.json").write_text("[1, 2]")
    (d / "pickle.json").write_bytes(pickle.dumps({"a": 1}))
    (d / "wrongtype.json").write_text('{"hidden": "wide"}')
    (d / "twice.json").write_text('{"epochs": 1, "lr": 0.01, "epochs": 500}')
    (d / "bigseed.json").write_text('{"seed": 1180591620717411303424}')  # 2**70: torch would overflow
    (d / "zero-epochs.json").write_text('{"epochs": 0}')
    (d / "hidden-text.json").write_text('{"hidden": "16"}')  # would have been read as [1, 6]
    (d / "hidden-frac.json").write_text('{"hidden": [16.5]}')
    (d / "mixed.json").write_text('{"likelihood": "mixed"}')
    (d / "patience-frac.json").write_text('{"patience": 1.5}')
    np.save(d / "f64big.npy", np.full((4, 3), 1e300))  # finite, but not in float32
    for name, change in (("nanweights", "weights"), ("negshape", "config")):  # altered, manifest re-vouched
        folder = d / name
        folder.mkdir()
        for f in (d / "run").iterdir():
            (folder / f.name).write_bytes(f.read_bytes())
        if change == "weights":
            tensors = load_file(folder / "model.safetensors")
            first = sorted(tensors)[0]
            tensors[first] = torch.full_like(tensors[first], float("nan"))
            save_file(tensors, folder / "model.safetensors")
            _rehash(folder / "model.safetensors")
        else:
            cfg = json.loads((folder / "config.json").read_text())
            cfg["input_shape"] = [-1]
            (folder / "config.json").write_text(json.dumps(cfg))
            _rehash(folder / "config.json")
    def altered(name, change):  # a copy of the run with one file changed and the manifest re-vouched
        folder = d / name
        folder.mkdir()
        for f in (d / "run").iterdir():
            (folder / f.name).write_bytes(f.read_bytes())
        file = change(folder)
        _rehash(folder / file)
    def weights(fn):
        def change(folder):
            save_file(fn(load_file(folder / "model.safetensors")), folder / "model.safetensors")
            return "model.safetensors"
        return change
    altered("f16", weights(lambda t: {k: v.half() for k, v in t.items()}))
    altered("bf16", weights(lambda t: {k: v.bfloat16() for k, v in t.items()}))
    altered("extratensor", weights(lambda t: {**t, "extra.w": torch.zeros(3)}))
    def config(fn):
        def change(folder):
            (folder / "config.json").write_text(fn((folder / "config.json").read_text()))
            return "config.json"
        return change
    altered("deepconfig", config(lambda text: "[" * 100000))
    altered("newfield", config(lambda text: json.dumps({**json.loads(text), "dropout": 0.1})))
    (d / "deep.json").write_text("[" * 100000)
    (d / "device-list.json").write_text('{"device": ["cpu"]}')
    (d / "comment.json").write_text('{\n  // fewer epochs for a quick look\n  "epochs": 1\n}')
    (d / "loose" / "cats").mkdir(parents=True)  # an image beside a class sub-folder: no class
    for f in (d / "loose" / "a.png", d / "loose" / "cats" / "b.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(f)
    (d / "deep16").mkdir()
    Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).save(d / "deep16" / "a.png")
    Image.fromarray(np.full((8, 8), 3.0, np.float32)).save(d / "deep16" / "bad.tiff")
    damaged = d / "damaged"
    damaged.mkdir()
    for f in (d / "run").iterdir():
        (damaged / f.name).write_bytes(f.read_bytes())
    w = bytearray((damaged / "model.safetensors").read_bytes())
    w[-3] ^= 0x10
    (damaged / "model.safetensors").write_bytes(bytes(w))
    return d


T = ["train"]
R = "{d}/run"
CASES = [  # (argv with {d} for the world folder, message fragment, exit code)
    (T + ["{d}/nope.npy", "--out", "{d}/o"], "no such file or folder", 2),
    (T + ["cifar10", "--out", "{d}/o"], "not a dataset name", 2),
    (T + ["{d}/empty.npy", "--out", "{d}/o"], "N >= 1", 2),
    (T + ["{d}/nan.npy", "--out", "{d}/o"], "NaN/Inf", 2),
    (T + ["{d}/inf.npy", "--out", "{d}/o"], "NaN/Inf", 2),
    (T + ["{d}/vec.npy", "--out", "{d}/o"], "need (N, features...)", 2),
    (T + ["{d}/text.npy", "--out", "{d}/o"], "must be real numbers", 2),
    (T + ["{d}/complex.npy", "--out", "{d}/o"], "must be real numbers", 2),
    (T + ["{d}/pickled.npy", "--out", "{d}/o"], "never unpickles", 2),
    (T + ["{d}/multi.npz", "--out", "{d}/o"], "name the data array 'x'", 2),
    (T + ["{d}/labels.npz", "--out", "{d}/o"], "labels have shape (3,) for 5 examples", 2),
    (T + ["{d}/data.txt", "--out", "{d}/o"], "unsupported file type .txt", 2),
    (T + ["mnist", "--out", "{d}/o"], "--data-dir", 2),
    (T + ["digits", "--out", "{d}/o", "--latent-dim", "0"], "latent_dim=0 must be >= 1", 2),
    (T + ["digits", "--out", "{d}/o", "--epochs", "-1"], "epochs=-1 must be >= 0", 2),
    (T + ["digits", "--out", "{d}/o", "--batch-size", "0"], "batch_size=0", 2),
    (T + ["digits", "--out", "{d}/o", "--lr", "nan"], "lr=nan must be a finite number", 2),
    (T + ["digits", "--out", "{d}/o", "--beta", "inf"], "beta=inf must be a finite number", 2),
    (T + ["digits", "--out", "{d}/o", "--val-fraction", "1.5"], "val_fraction=1.5", 2),
    (T + ["digits", "--out", "{d}/o", "--hidden", "0"], "hidden=[0]", 2),
    (T + ["digits", "--out", "{d}/o", "--hidden", "wide"], "not a comma-separated list of integers", 2),
    (T + ["digits", "--out", "{d}/o", "--epochs", "ten"], "invalid int value: 'ten'", 2),
    (T + ["digits", "--out", "{d}/o", "--arch", "transformer"], "invalid choice: 'transformer'", 2),
    (T + ["digits", "--out", "{d}/o", "--bogus"], "unrecognized arguments: --bogus", 2),
    (T + ["digits"], "the following arguments are required: --out", 2),
    (T + ["digits", "--out", "{d}/o", "--objective", "elbo", "--k", "5"], "only applies to --objective iwae", 2),
    (T + ["digits", "--out", "{d}/o", "--objective", "wae-mmd", "--kl-warmup", "5"],
     "which --objective wae-mmd has not", 2),
    (T + ["digits", "--out", "{d}/o", "--objective", "iwae", "--free-bits", "0.5"], "--free-bits needs the KL per", 2),
    (T + ["digits", "--out", "{d}/o", "--objective", "iwae", "--k", "1"], "with k=1 trains the ELBO", 2),
    (T + ["digits", "--out", "{d}/o", "--dreg"], "--dreg) is a gradient estimator for the IWAE bound", 2),
    # flags the run has no use for were accepted and ignored
    (T + ["digits", "--out", "{d}/o", "--arch", "conv", "--hidden", "32"], "--hidden applies only to --arch mlp", 2),
    (T + ["digits", "--out", "{d}/o", "--arch", "hvae", "--latent-dim", "8"], "--latent-dim applies only to", 2),
    (T + ["digits", "--out", "{d}/o", "--mmd-kernel", "rbf"], "--mmd-kernel applies only to --objective wae-mmd", 2),
    (T + ["digits", "--out", "{d}/o", "--pseudo-inputs", "50"],
     "--pseudo-inputs / --prior-components applies only to --prior vamp or mog", 2),  # the flag typed, not its twin
    (T + ["digits", "--out", "{d}/o", "--lr-final", "0.1"], "--lr-final applies only to --lr-schedule cosine", 2),
    (T + ["digits", "--out", "{d}/o", "--stream"], "digits is always loaded into memory", 2),  # was ignored
    (T + ["digits", "--out", "{d}/o", "--val-nll-k", "5", "--val-fraction", "0"], "val_fraction=0 holds none out", 2),
    (T + ["digits", "--out", "{d}/o", "--device", "gpu"], "not auto, cpu, cuda or cuda:N", 2),
    (T + ["digits", "--out", "{d}/o", "--checkpoint-every", "-2"], "checkpoint_every=-2", 2),
    (T + ["digits", "--out", "{d}/o", "--checkpoint-minutes", "-1"], "checkpoint_minutes=-1", 2),
    (T + ["digits", "--out", "{d}/full"], "exists and is not empty; choose another --out or pass --force", 2),
    (T + ["digits", "--out", "{d}/afile"], "is a file", 2),
    (T + ["digits", "--out", "{d}/afile/run"], "cannot create", 2),
    (T + ["digits", "--out", "{d}/o", "--config", "{d}/none.json"], "cannot read JSON", 2),
    (T + ["digits", "--out", "{d}/o", "--config", "{d}/unknown.json"], "unknown config field(s) ['latent_dimz']", 2),
    (T + ["digits", "--out", "{d}/o", "--config", "{d}/list.json"], "must be a JSON object", 2),
    (T + ["digits", "--out", "{d}/o", "--config", "{d}/pickle.json"], "cannot read JSON", 2),
    (T + ["digits", "--out", "{d}/o", "--config", "{d}/wrongtype.json"], "wrong type", 2),
    (T + ["digits", "--out", "{d}/o", "--config", "{d}/twice.json"], "key(s) ['epochs'] given more than once", 2),
    (T + ["{d}/table.npy", "--out", "{d}/o", "--arch", "conv"], "--arch conv needs images", 2),
    (T + ["{d}/table.npy", "--out", "{d}/o", "--likelihood", "bernoulli"], "needs [0, 1]", 2),
    (["sample", "{d}/norun", "-o", "{d}/s.png"], "not a vaekit run folder", 2),
    (["sample", "{d}/afile", "-o", "{d}/s.png"], "not a vaekit run folder", 2),
    (["sample", "{d}/damaged", "-o", "{d}/s.png"], "does not match its sha256", 2),
    (["sample", R, "-n", "0", "-o", "{d}/s.png"], "-n 0 must be >= 1", 2),
    (["sample", R, "-n", "many", "-o", "{d}/s.png"], "invalid int value: 'many'", 2),
    (["sample", R, "-o", "{d}/s.txt"], "must end in .png", 2),
    (["sample", R, "-o", "{d}/nodir/s.png"], "does not exist", 2),
    (["sample", R, "-o", "{d}/exists.npy"], "pass --force to overwrite", 2),
    (["sample", R, "-o", "{d}/full"], "must end in .png", 2),
    (["sample", R, "-o", "{d}/s.png", "--temperature", "0"], "--temperature 0.0 must be a finite number > 0", 2),
    (["sample", R, "-o", "{d}/s.png", "--temperature", "nan"], "--temperature nan", 2),
    (["sample", R, "-o", "{d}/s.png", "--device", "tpu"], "not auto, cpu, cuda", 2),
    (["sample", "{d}/trun", "-o", "{d}/s.png"], "not images; write .npy", 2),
    (["sample"], "the following arguments are required", 2),
    (["sample", R, "-o", "{d}/s.png", "--seed", "-3"], "-3 is outside 0 .. 2**63 - 1", 2),
    (T + ["digits", "--out", "{d}/o", "--seed", str(2 ** 70)], "is outside 0 .. 2**63 - 1", 2),
    (T + ["digits", "--out", "{d}/o", "--config", "{d}/bigseed.json"], "seed=1180591620717411303424 must be", 2),
    (T + ["{d}/deep16", "--out", "{d}/o"], "bad.tiff has float pixels outside [0, 1]", 2),
    (T + ["{d}/loose", "--out", "{d}/o"], "image(s) of its own, such as a.png, beside the class sub-folder(s) cats", 2),
    (["sample", R, "-n", str(10 ** 12), "-o", "{d}/s.npy"], "GiB as .npy, more than the", 2),  # written in pieces: disk
    (["sample", R, "-n", str(10 ** 12), "-o", "{d}/s.png"], "GiB of memory needed, more than the", 2),
    (["interpolate", R, "digits", "--steps", str(10 ** 12), "-o", "{d}/i.npy"], "GiB of memory needed", 2),
    (["traverse", R, "digits", "--steps", str(10 ** 12), "-o", "{d}/t.npy"], "GiB of memory needed", 2),
    (T + ["{d}/f64big.npy", "--out", "{d}/o"], "12 values beyond float32's range", 2),
    (T + ["{d}/f64big.npy", "--out", "{d}/o", "--stream"], "values beyond float32's range", 2),
    (T + ["{d}/complex.npy", "--out", "{d}/o", "--stream"], "must be real numbers", 2),
    (["sample", "{d}/nanweights", "-o", "{d}/s.npy"], "holds NaN or Inf, which vaekit never saves", 2),
    (["evaluate", "{d}/nanweights", "digits"], "holds NaN or Inf, which vaekit never saves", 2),
    (["sample", "{d}/negshape", "-o", "{d}/s.npy"], "input_shape=[-1] must list positive sizes", 2),
    (["reconstruct", R, "{d}/wrong.npy", "-o", "{d}/r.npy"], "but the model expects (1, 8, 8)", 2),
    (["reconstruct", "{d}/trun", "digits", "-o", "{d}/r.npy"], "but the model expects (5,)", 2),
    (["reconstruct", R, "{d}/big.npy", "-o", "{d}/r.npy"], "bernoulli likelihood needs [0, 1]", 2),
    (["reconstruct", R, "{d}/imgnan.npy", "-o", "{d}/r.npy"], "NaN/Inf", 2),
    (["reconstruct", R, "digits", "-n", "0", "-o", "{d}/r.npy"], "-n 0 must be >= 1", 2),
    (["reconstruct", R, "{d}/nope.npy", "-o", "{d}/r.npy"], "no such file", 2),
    (["reconstruct", R, "digits", "-o", "{d}/exists.npy"], "pass --force", 2),
    (["interpolate", R, "digits", "--steps", "1", "-o", "{d}/i.npy"], "--steps 1 must be >= 2", 2),
    (["interpolate", R, "digits", "--pairs", "0", "-o", "{d}/i.npy"], "--pairs 0 must be >= 1", 2),
    (["interpolate", R, "{d}/one.npy", "-o", "{d}/i.npy"], "at least two examples", 2),
    (["interpolate", R, "digits", "-o", "{d}/i.gif"], "must end in .png", 2),
    (["traverse", R, "digits", "--dims", "2", "-o", "{d}/t.npy"], "latent dimension(s) [2] out of range", 2),
    (["traverse", R, "digits", "--index", "-1", "-o", "{d}/t.npy"], "--index -1 is outside", 2),
    (["traverse", R, "digits", "--steps", "1", "-o", "{d}/t.npy"], "need --steps >= 2", 2),
    (["traverse", R, "digits", "--span", "nan", "-o", "{d}/t.npy"], "--span > 0", 2),
    (["traverse", R, "digits", "-n", "0", "-o", "{d}/t.npy"], "-n 0 must be >= 1", 2),
    (["traverse", R, "digits", "-o", "{d}/t.gif"], "must end in .png", 2),
    (["traverse", R, "digits", "-o", "{d}/exists.npy"], "pass --force", 2),
    (["traverse", "{d}/trun", "digits", "-o", "{d}/t.npy"], "but the model expects (5,)", 2),
    (["evaluate", R, "digits", "--k", "0"], "--k 0 must be >= 1", 2),
    (["evaluate", R, "digits", "--batch-size", "0"], "--batch-size 0 must be >= 1", 2),
    (["evaluate", R, "digits", "-n", "-3"], "-n -3 must be >= 1", 2),
    (["evaluate", R, "{d}/wrong.npy"], "but the model expects (1, 8, 8)", 2),
    (["evaluate", "{d}/trun", "digits"], "but the model expects (5,)", 2),
    (["evaluate", R, "{d}/big.npy"], "bernoulli likelihood needs [0, 1]", 2),
    (["evaluate", R, "digits", "--split", "valid"], "invalid choice: 'valid'", 2),
    (["evaluate", "{d}/damaged", "digits"], "does not match its sha256", 2),
    (["demo", "--out", "{d}/full"], "not a vaekit demo folder", 2),
    (["demo", "--out", "{d}/afile"], "is a file", 2),
    (["demo", "--out", "{d}/o", "--epochs", "0"], "--epochs 0 must be >= 1", 2),
    (T + ["digits", "--out", "{d}/o", "--epochs", "0"], "--epochs 0 must be >= 1", 2),
    (T + ["{d}/table.npy", "--out", "{d}/o", "--config", "{d}/zero-epochs.json"], "--epochs 0 must be >= 1", 2),
    (["interpolate", "{d}/trun", "{d}/table.npy", "-o", "{d}/i.png"], "shape (5,), not images; write .npy", 2),
    (["reconstruct", "{d}/trun", "{d}/table.npy", "-o", "{d}/r.png"], "shape (5,), not images; write .npy", 2),
    (["traverse", "{d}/trun", "{d}/table.npy", "-o", "{d}/t.png"], "shape (5,), not images; write .npy", 2),
    (T + ["digits", "--out", "{d}/o", "--config", "{d}/hidden-text.json"], "hidden='16' has the wrong type: it must be a list", 2),
    (T + ["digits", "--out", "{d}/o", "--config", "{d}/hidden-frac.json"], "hidden=[16.5] has the wrong type", 2),
    (T + ["digits", "--out", "{d}/o", "--config", "{d}/mixed.json"], "likelihood=mixed is built from a table", 2),
    (T + ["digits", "--out", "{d}/o", "--config", "{d}/patience-frac.json"], "patience=1.5 must be an integer", 2),
    (T + ["digits", "--out", "{d}/o", "--latent-dim", str(10 ** 12)], "out of memory", 1),  # fails at once: > RAM
    (["sample", R, "-n", "3", "-o", "{d}/s.npy", "--temperature", "1e308"], "makes non-finite samples", 2),
    (["export", R, "--onnx", "{d}/m.onnx", "--encoder", "{d}/./m.onnx"], "both name", 2),
    (["export", R, "--onnx", "{d}/exists.onnx"], "choose another --onnx or pass --force", 2),
    (["export", R, "--onnx", "{d}/m.onnx", "--encoder", "{d}/exists.onnx"], "choose another --encoder or pass", 2),
    (["report", R, "-o", "{d}/exists.html"], "exists; choose another -o or pass --force", 2),
    (T + ["digits", "--out", "{d}/o", "--init-from", "{d}/norun"], "not a vaekit run folder", 2),
    (T + ["digits", "--out", "{d}/o", "--init-from", "{d}/damaged"], "does not match its sha256", 2),
    (T + ["digits", "--out", "{d}/o", "--init-from", R, "--hidden", "7"], "hidden: [16] in the model, [7] here", 2),
    (T + ["digits", "--out", "{d}/o", "--init-from", "{d}/trun"], "the data does not fit the starting model (--init-from / model=) (input_shape: [5] in the model, [1, 8, 8] here", 2),
    (T + ["digits", "--out", "{d}/run", "--init-from", R], "exists and is not empty", 2),  # never over its source
    (["sample", "{d}/f16", "-o", "{d}/s.npy"], "weight decoder.net.0.bias is float16 and 7 more, but vaekit saves float32", 2),
    (["evaluate", "{d}/bf16", "digits"], "is bfloat16 and 7 more, but vaekit saves float32", 2),
    (["sample", "{d}/extratensor", "-o", "{d}/s.npy"], 'Unexpected key(s) in state_dict: "extra.w"', 2),
    (["sample", "{d}/deepconfig", "-o", "{d}/s.npy"], "JSON nested too deeply", 2),
    (["sample", "{d}/newfield", "-o", "{d}/s.npy"], "['dropout']", 2),
    (["sample", "{d}/newfield", "-o", "{d}/s.npy"], "a newer vaekit needs that version: upgrade", 2),
    (T + ["digits", "--out", "{d}/o", "--config", "{d}/deep.json"], "JSON nested too deeply", 2),
    (T + ["digits", "--out", "{d}/o", "--config", "{d}/device-list.json"], "device=['cpu'] is not auto, cpu, cuda", 2),
    (T + ["digits", "--out", "{d}/o", "--config", "{d}/comment.json"], "JSON has no comments: delete the //", 2),
    (T + ["digits", "--out", ".", "--epochs", "1"], "--out . names no folder of its own", 2),  # was a traceback
    (T + ["digits", "--out", "{d}/..", "--force"], "names no folder of its own", 2),
    (["demo", "--out", "."], "--out . names no folder of its own", 2),
    (["fly"], "invalid choice: 'fly'", 2),
    (["trian", "digits"], "(did you mean train?)", 2),
    (T + ["digits", "--out", "{d}/o", "--arch", "mpl"], "(did you mean mlp?)", 2),
    (["help", "smaple"], "(did you mean sample?)", 2),
]


def _folder_hash(d: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(d.rglob("*")):
        h.update(str(p.relative_to(d)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("argv,fragment,code", CASES, ids=[" ".join(c[0][:4]).replace("{d}/", "") for c in CASES])
def test_bad_input_one_line_exit_code_nothing_changed(world, capsys, argv, fragment, code):
    argv = [a.format(d=world) for a in argv]
    before = _folder_hash(world)
    capsys.readouterr()
    assert main(argv) == code, argv
    err = capsys.readouterr().err
    assert err.startswith("vaekit: error:") and len(err.strip().splitlines()) == 1, err
    assert fragment in err, (fragment, err)
    assert _folder_hash(world) == before


def test_out_of_memory_line_names_the_allocation_not_torch_internals(world, capsys):
    assert main(["train", "digits", "--out", str(world / "o"), "--latent-dim", str(10 ** 12)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("vaekit: error: out of memory (") and "enforce fail" not in err and "err ==" not in err, err
    assert not (world / "o").exists()


def test_api_entry_points_raise_typed_errors(world):
    model = load(world / "run")
    x = torch.rand(3, 1, 8, 8)
    for call, error, fragment in [
        (lambda: model.encode(torch.rand(3, 64)), IncompatibleError, "pass data shaped like its training data"),
        (lambda: model.reconstruct(torch.rand(3, 1, 9, 9)), IncompatibleError, "(B, *(1, 8, 8))"),
        (lambda: model.sample(0), ConfigError, "n=0"),
        (lambda: model.sample(2.5), ConfigError, "n=2.5"),
        (lambda: model.interpolate(x[0], x[1], steps=1), ConfigError, "steps=1"),
        (lambda: vaekit.log_likelihood(model, x, k=0), ConfigError, "k=0"),
        (lambda: vaekit.log_likelihood(model, torch.rand(3, 5), k=2), IncompatibleError, "shape"),
        (lambda: vaekit.fit("digits"), DataError, "cannot train on str"),
        (lambda: vaekit.fit(torch.rand(5)), DataError, "leading example axis"),
        (lambda: vaekit.fit(torch.ones(4, 2, dtype=torch.complex64)), DataError, "dtype"),
        (lambda: vaekit.fit(torch.rand(8, 3), Config(device="tpu")), ConfigError, "device"),
        (lambda: Config.from_dict({"hidden": "wide"}), ConfigError, "wrong type"),
        (lambda: Config.from_json('{"beta": 1, "beta": 4}'), ConfigError, "['beta'] given more than once"),
        (lambda: Config.from_json('{"latent_dimz": 3}'), ConfigError, "unknown config field(s) ['latent_dimz']"),
        (lambda: Config(lr=float("inf")), ConfigError, "finite"),
        (lambda: Config(hidden="16"), ConfigError, "list of integers"),
        (lambda: Config(channels=[True]), ConfigError, "list of integers"),
        (lambda: Config(patience="3"), ConfigError, "patience"),
        (lambda: model.label_condition(3), ConfigError, "not seen in training"),
        (lambda: model.sample(2, temperature=1e308), ConfigError, "non-finite samples"),
        (lambda: model.sample(2, temperature=float("nan")), ConfigError, "temperature=nan must be a finite number"),
        (lambda: model.encode(x[0]), IncompatibleError, "one example: pass x[None]"),
        (lambda: model.reconstruct(x[:0]), IncompatibleError, "no examples"),
        (lambda: model.decode(torch.zeros(3, 5)), IncompatibleError, "latents have 2 dims"),
        (lambda: model.traverse(x[0], 0, span=float("nan")), ConfigError, "span=nan"),
        (lambda: vaekit.traversals(model, x, dims=[]), ConfigError, "dims is empty"),
        (lambda: vaekit.log_likelihood(model, x, k=2, batch_size=0), ConfigError, "batch_size=0"),
        (lambda: vaekit.log_likelihood(model, x[0], k=2), IncompatibleError, "one example: pass x[None]"),
        (lambda: vaekit.save(model, world / "afile"), OutputExistsError, "is a file"),
        (lambda: load(world / "damaged"), IntegrityError, "model.safetensors"),
    ]:
        with pytest.raises(error) as info:
            call()
        assert fragment in str(info.value), (fragment, str(info.value))


def test_evaluation_refuses_data_or_weights_it_cannot_score_honestly():
    """A discretized-logistic model scores 8-bit pixels only (training refuses other data, so
    must evaluation); a NaN weight is a typed error, never "NLL: nan" printed as a result."""
    from vaekit.evaluate import evaluate

    x8 = torch.randint(0, 256, (24, 1, 4, 4)).float() / 255  # 8-bit pixels in [0, 1]
    model = vaekit.fit(x8, Config(likelihood="discretized-logistic", latent_dim=2, hidden=[8], epochs=1,
                                  progress=False))
    assert torch.isfinite(vaekit.log_likelihood(model, x8[:4], k=2)).all()
    with pytest.raises(IncompatibleError, match="not 8-bit"):
        vaekit.log_likelihood(model, torch.rand(4, 1, 4, 4), k=2)
    with pytest.raises(IncompatibleError, match="not 8-bit"):
        evaluate(model, torch.rand(4, 1, 4, 4), k=2)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="log p.x. is NaN for 4 of 4"):
        evaluate(model, x8[:4], k=2)
    with pytest.raises(NonFiniteError, match="weights hold NaN"):
        model.sample(3)


def test_table_scores_refuse_too_few_rows():
    pd = pytest.importorskip("pandas")
    from vaekit.table_metrics import evaluate_table

    rng = np.random.default_rng(0)
    real = pd.DataFrame({"a": rng.normal(size=20), "b": rng.choice(["x", "y"], 20)})
    for r, s in [(real.head(3), real), (real, real.head(2))]:  # 5-fold detection needs 5 of each
        with pytest.raises(DataError, match="at least 5 real and 5 synthetic rows"):
            evaluate_table(s, r)


def test_ctrl_c_keeps_checkpoints_and_says_how_to_resume(tmp_path, monkeypatch, capsys):
    real, calls = train.objective, {"n": 0}

    def objective(model, x, config, *args, **kw):
        calls["n"] += model.training
        if calls["n"] == 15:
            raise KeyboardInterrupt
        return real(model, x, config, *args, **kw)

    monkeypatch.setattr(train, "objective", objective)
    argv = ["train", "digits", "--out", str(tmp_path / "r"), "--epochs", "2", "--batch-size", "128",
            "--latent-dim", "2", "--hidden", "16", "--no-progress"]
    assert main(argv) == 130
    assert "rerun with --resume" in capsys.readouterr().err
    assert resume.latest(tmp_path / "r.partial").name == "e0001-s000000" and not (tmp_path / "r").exists()
    assert main(argv) == 2  # no silent restart over the saved work
    assert "pass --resume to continue it" in capsys.readouterr().err
    assert main(argv + ["--resume"]) == 0 and (tmp_path / "r" / "manifest.json").is_file()


@pytest.mark.parametrize("at", [3, 15])  # before the first checkpoint (epoch 1 has 12 batches), and after it
def test_sigterm_stops_like_ctrl_c_with_exit_143(tmp_path, monkeypatch, capsys, at):
    real, calls = train.objective, {"n": 0}

    def objective(model, x, config, *args, **kw):
        calls["n"] += model.training
        if calls["n"] == at:
            os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler or `kill PID` sends it
        return real(model, x, config, *args, **kw)

    monkeypatch.setattr(train, "objective", objective)
    argv = ["train", "digits", "--out", str(tmp_path / "r"), "--epochs", "2", "--batch-size", "128",
            "--latent-dim", "2", "--hidden", "16", "--no-progress"]
    assert main(argv) == 143  # not a silent death: a line, and the temporary files cleaned up
    err = capsys.readouterr().err
    assert err.startswith("vaekit: terminated (SIGTERM)") and len(err.strip().splitlines()) == 1
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler lives as long as the command
    if at == 3:  # nothing to resume: said so, and nothing left behind
        assert "nothing was kept: run it again" in err and list(tmp_path.iterdir()) == []
        assert main(argv + ["--resume"]) == 0  # a --resume anyway starts from the start, and says so
        assert "no checkpoint to resume in" in capsys.readouterr().err
    else:
        assert "rerun with --resume" in err and resume.latest(tmp_path / "r.partial").name == "e0001-s000000"
        assert not list((tmp_path / "r.partial").rglob("*.tmp"))
        assert main(argv + ["--resume"]) == 0 and (tmp_path / "r" / "manifest.json").is_file()


def test_a_second_training_into_the_same_out_is_refused_while_the_first_runs(tmp_path, monkeypatch, capsys):
    out = tmp_path / "nested" / "r"
    argv = ["train", "digits", "--out", str(out), "--epochs", "1", "--latent-dim", "2", "--hidden", "16",
            "--no-progress"]
    real, seen = train.objective, {}

    def objective(model, x, config, *args, **kw):  # the first run, mid-training, meets a second one
        if "code" not in seen:
            seen["code"] = main(argv + ["--hidden", "8"])
            seen["err"] = capsys.readouterr().err
        return real(model, x, config, *args, **kw)

    monkeypatch.setattr(train, "objective", objective)
    assert main(argv) == 0
    assert seen["code"] == 2 and "another vaekit train" in seen["err"] and "is writing" in seen["err"]
    assert vaekit.load(out).config.hidden == [16]  # the first run's, whole: one epoch of metrics, its own
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["r"]  # the lock went with the run
    monkeypatch.setattr(train, "objective", real)
    assert main(argv + ["--force"]) == 0  # and the next run takes the folder as usual


def test_resume_of_a_forced_run_cut_short_beside_a_complete_one(tmp_path, capsys, interrupt_at):
    argv = ["train", "digits", "--out", str(tmp_path / "r"), "--epochs", "2", "--batch-size", "128",
            "--latent-dim", "2", "--hidden", "16", "--no-progress"]
    assert main(argv) == 0
    before = (tmp_path / "r" / "model.safetensors").read_bytes()
    interrupt_at(15)  # epoch 2 of the run that was to replace r
    assert main(argv + ["--force", "--hidden", "8"]) == 130
    assert "rerun with --resume --force to continue" in capsys.readouterr().err
    assert main(argv + ["--hidden", "8", "--resume"]) == 2  # not 'nothing to resume': there is, and it needs --force
    err = capsys.readouterr().err
    assert "holds an interrupted run that was to replace it (--force): pass --resume --force" in err
    assert (tmp_path / "r" / "model.safetensors").read_bytes() == before
    assert main(argv + ["--hidden", "8", "--resume", "--force"]) == 0 and vaekit.load(tmp_path / "r").config.hidden == [8]


def test_a_failed_write_leaves_no_partial_output(world, tmp_path, monkeypatch, capsys):
    out = tmp_path / "s.npy"
    out.write_bytes(b"the old file")

    def full_disk(src, dst):
        raise OSError(28, "No space left on device", str(dst))

    monkeypatch.setattr(os, "replace", full_disk)
    assert main(["sample", str(world / "run"), "-n", "4", "-o", str(out), "--force"]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npy"] and out.read_bytes() == b"the old file"
