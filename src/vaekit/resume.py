"""Training checkpoints: everything `fit` needs to continue a run exactly where it stopped.

A checkpoint is a folder `<out>.partial/checkpoints/e0003-s000000/` with `state.json`
(where the loop is, the history, the config, a fingerprint of the data), `tensors.safetensors`
(weights, best weights, Adam's moments, RNG states, the epoch's batch order) and
`manifest.json` (size and sha256 of both). It is written under a temporary name, fsynced,
renamed into place; only then does `checkpoints/latest` (a small JSON file naming the folder
and the sha256 of its manifest) move to it, by an atomic replace. A kill at any moment
leaves `latest` pointing at a complete checkpoint, or at none.

On CPU, resuming from a checkpoint gives bit-identical losses and weights to a run that
was never interrupted: the learning rate and KL weight are pure functions of the step, and
every random draw comes from a generator whose state is saved.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint
from .config import Config
from .errors import ConfigError, IncompatibleError, IntegrityError, NonFiniteError, OutputExistsError

FORMAT = "vaekit-train-state"
FORMAT_VERSION = 1
FOLDER = "checkpoints"
LATEST = "latest"
FILES = ("state.json", "tensors.safetensors")
METRICS = checkpoint.METRICS  # a run's metrics, one JSON row per finished epoch
NAME = re.compile(r"e\d{4,}-s\d{6,}")
# Config fields a resumed run may change: they steer the loop, not the model, the data split
# or the random draws (e.g. a lower --lr after a NaN). Changing the lr, schedule, clipping,
# epochs, patience or gradient skipping makes the run differ from an uninterrupted one; the others do not.
# init_from only names where the first weights came from: a checkpoint's weights replace them.
MAY_CHANGE = {"progress", "checkpoint_every", "checkpoint_minutes", "skip_nonfinite", "epochs", "patience",
              "lr", "lr_schedule", "lr_warmup", "lr_final", "grad_clip", "grad_skip", "init_from"}


@dataclass
class LoopState:
    """Where the training loop is; the part of a checkpoint that is plain JSON."""

    epoch: int = 0  # the epoch being run (0-based); completed epochs when step == 0
    step: int = 0  # steps of `epoch` already done (0: the epoch has not started)
    best_loss: float | None = None  # best score so far (validation loss, or train loss without a split)
    best_epoch: int = -1  # 1-based epoch of the best weights
    bad_epochs: int = 0  # epochs since the best one (early stopping)
    skips_in_a_row: int = 0  # consecutive skipped non-finite batches (--skip-nonfinite)
    epoch_skips: int = 0  # batches skipped so far in this epoch
    grad_skips: int = 0  # updates skipped so far in this epoch for a gradient norm above --grad-skip
    history: list[dict[str, Any]] = field(default_factory=list)  # one metrics row per finished epoch


def data_fingerprint(x: torch.Tensor) -> str:
    """sha256 of the training data's shape and values: a resume on other data is refused."""
    h = hashlib.sha256(str(tuple(x.shape)).encode())
    if not isinstance(x, torch.Tensor):  # streamed rows: hashed chunk by chunk, never all in memory
        for chunk in x.chunks():
            h.update(np.ascontiguousarray(chunk, dtype=np.float32).data)
        return h.hexdigest()
    h.update(x.detach().to("cpu", torch.float32).contiguous().numpy().data)  # no copy of the bytes
    return h.hexdigest()


def prepare(run_dir: Path, resume: bool, force: bool) -> None:
    """Make the staging folder. Checkpoints of an interrupted run are kept for `resume`, and
    never deleted silently: without --resume they are replaced only with --force."""
    if run_dir.exists() and not run_dir.is_dir():
        raise OutputExistsError(f"{run_dir} is a file; remove it or choose another --out")
    if (run_dir / FOLDER / LATEST).exists():
        if resume:
            for tmp in run_dir.glob(".*.tmp"):  # a file write cut short by the kill
                tmp.unlink()
            return
        if not force:
            raise OutputExistsError(f"{run_dir} holds checkpoints of an interrupted run; pass --resume to continue "
                                    "it, or --force to discard them and start over")
    if run_dir.exists():
        shutil.rmtree(run_dir)
    try:
        run_dir.mkdir(parents=True)
    except OSError as e:
        raise OutputExistsError(f"cannot create {run_dir} ({e.strerror}); choose another --out") from None


def lock(target: Path) -> tuple[int, Path] | None:
    """Hold `.<out>.lock` beside the run folder while training writes `<out>.partial`: a second
    `vaekit train` into the same --out is refused at once (two runs there would delete each
    other's files and publish one run's metrics in the other's folder). The kernel lets go of
    the lock when the process dies, however it dies. Returns what `unlock` takes (None where
    there is no flock: not Linux or macOS)."""
    try:
        import fcntl
    except ImportError:
        return None
    path = target.with_name(f".{target.name}.lock")
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutputExistsError(f"cannot create {target} ({e.strerror}); choose another --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 20).decode(errors="replace").strip()
            os.close(fd)
            raise OutputExistsError(f"another vaekit train{f' (process {pid})' if pid else ''} is writing {target} "
                                    "right now; wait for it to finish, or choose another --out") from None
        except OSError:  # a file system without locks (some NFS mounts): train unguarded, as before
            os.close(fd)
            path.unlink(missing_ok=True)
            return None
        try:  # the holder before us may have finished and removed the file we opened: lock the current one
            current = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            current = False
        if current:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            return fd, path
        os.close(fd)


def unlock(held: tuple[int, Path] | None) -> None:
    if held is not None:
        fd, path = held
        path.unlink(missing_ok=True)  # while still held, so no one locks a file about to vanish
        os.close(fd)


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint folder, verified against `latest`, or None if there is none."""
    pointer = run_dir / FOLDER / LATEST
    if not pointer.exists():
        return None
    data = pointer.read_bytes()
    try:
        ref = json.loads(data) if len(data) <= 4096 else None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        ref = None
    if not (isinstance(ref, dict) and set(ref) == {"checkpoint", "manifest_sha256"}
            and isinstance(ref["checkpoint"], str) and NAME.fullmatch(ref["checkpoint"])
            and _canonical(ref) == data):
        raise IntegrityError(f"{pointer} is damaged (not the pointer vaekit writes); restore it, or pass --force "
                             "without --resume to start over")
    folder = run_dir / FOLDER / ref["checkpoint"]
    manifest = folder / checkpoint.MANIFEST
    if not manifest.is_file() or checkpoint.sha256_bytes(manifest.read_bytes()) != ref["manifest_sha256"]:
        raise IntegrityError(f"{manifest} is missing or does not match its sha256 in {pointer}; the checkpoint is "
                             "damaged: restore it, or pass --force without --resume to start over")
    return folder


def save(run_dir: Path, model, opt: torch.optim.Optimizer, gen: torch.Generator, loop: LoopState,
         best_state: dict[str, torch.Tensor] | None, config: Config, fingerprint: str,
         perm: torch.Tensor | None = None, sums: torch.Tensor | None = None,
         ema: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a checkpoint and move `latest` to it. Refuses (NonFiniteError) to save a state
    holding NaN or Inf: a checkpoint is always one worth resuming from."""
    from safetensors.torch import save as save_tensors

    tensors = _tensors(model, opt, gen, best_state, perm, sums)
    if ema is not None:  # --ema: the average is state too; without it a resume would restart it
        tensors.update({f"ema.{k}": v.detach().to("cpu").contiguous().clone() for k, v in ema.items()})
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise NonFiniteError(f"the training state holds non-finite values ({', '.join(bad[:3])}) at epoch "
                             f"{loop.epoch + 1}, step {loop.step}; no checkpoint written: lower --lr or "
                             "raise --grad-clip protection")
    state = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": config.to_dict(),
             "data_sha256": fingerprint, "loop": asdict(loop)}
    if getattr(model, "schema", None) is not None:  # a table model: `snapshot` rebuilds its likelihood from it
        state["schema"] = model.schema.to_json()
    try:
        text = json.dumps(state, indent=1, allow_nan=False)
    except ValueError:  # a NaN in the metrics history
        raise NonFiniteError(f"the metrics hold NaN or Inf at epoch {loop.epoch}; no checkpoint written: "
                             "lower --lr or check the validation data") from None
    files = {"state.json": text.encode(), "tensors.safetensors": save_tensors(tensors, metadata={"format": FORMAT})}
    root = run_dir / FOLDER
    root.mkdir(exist_ok=True)
    name = f"e{loop.epoch:04d}-s{loop.step:06d}"
    tmp = root / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        for fname, data in files.items():
            checkpoint.write_atomic(tmp / fname, data)
        manifest = _canonical({"format": FORMAT, "format_version": FORMAT_VERSION, "files": {
            n: {"bytes": len(b), "sha256": checkpoint.sha256_bytes(b)} for n, b in sorted(files.items())}}, indent=2)
        checkpoint.write_atomic(tmp / checkpoint.MANIFEST, manifest)
        final = root / name
        if final.exists():  # the same point saved again (e.g. a resumed run): replace it
            shutil.rmtree(final)
        tmp.rename(final)
        checkpoint.fsync_dir(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    pointer = {"checkpoint": name, "manifest_sha256": checkpoint.sha256_bytes(manifest)}
    checkpoint.write_atomic(root / LATEST, _canonical(pointer))
    _prune(root, keep=name)
    return final


def restore(run_dir: Path, model, opt: torch.optim.Optimizer, gen: torch.Generator, config: Config,
            fingerprint: str, ema: dict[str, torch.Tensor] | None = None
            ) -> tuple[LoopState, dict[str, torch.Tensor] | None, torch.Tensor | None, torch.Tensor | None,
                       str | None] | None:
    """Load the latest checkpoint into model, optimizer and generators. Returns (loop state,
    best weights, the epoch's batch order, its partial sums, the run's recorded start
    `init_from`: the checkpoint's, whatever the resuming call says, since the checkpoint's
    weights are what continues), or None when there is no checkpoint. Every byte is checked
    against the manifest before anything is parsed. `ema` (--ema), if given, receives the
    saved weight average in place."""
    folder = latest(run_dir)
    if folder is None:
        return None
    state, loop, saved, tensors = _read(folder)
    if state.get("data_sha256") != fingerprint:
        raise IncompatibleError(f"{folder} was made on other training data; resume with the same DATA, or "
                                "pass --force without --resume to start over")
    diff = sorted(k for k, v in config.to_dict().items() if k not in MAY_CHANGE and saved.to_dict().get(k) != v)
    if diff:
        was = ", ".join(f"{k}={saved.to_dict().get(k)!r} (now {getattr(config, k)!r})" for k in diff[:4])
        raise IncompatibleError(f"{folder} was made with {was}; pass the same options as the interrupted run")
    if ("rng.cuda" in tensors) != (model.device.type == "cuda"):
        # --device auto on another machine: a CUDA generator's state (seed, offset) cannot seed a CPU one
        # or the reverse, and the checkpoint is sound, so not the "damaged" error below
        made = "a CUDA GPU" if "rng.cuda" in tensors else "a CPU"
        raise IncompatibleError(f"{folder} was made on {made}, and this run is on {model.device}; resume it on the "
                                "kind of device it trained on (--device)")
    try:
        model.load_state_dict(_prefixed(tensors, "model."), strict=True)
        _load_optimizer(opt, tensors)
        gen.set_state(tensors["rng.batches"])
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and model.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], model.device)
        if ema is not None:
            saved_ema = _prefixed(tensors, "ema.")
            if set(saved_ema) != set(ema):
                raise KeyError("the weight average (--ema) is missing or incomplete")
            for k, v in ema.items():
                v.copy_(saved_ema[k])
    except (RuntimeError, KeyError, ValueError) as e:
        raise IntegrityError(f"{folder / 'tensors.safetensors'} does not fit this model ({e}); pass --force "
                             "without --resume to start over") from None
    best = _prefixed(tensors, "best.") or None
    device = model.device
    if best is not None:
        best = {k: v.to(device) for k, v in best.items()}
    perm = tensors["loop.perm"].to(device) if "loop.perm" in tensors else None
    sums = tensors["loop.sums"].to(device) if "loop.sums" in tensors else None
    return loop, best, perm, sums, saved.init_from


def _read(folder: Path) -> tuple[dict[str, Any], LoopState, Config, dict[str, torch.Tensor]]:
    """A checkpoint's state.json, loop state, config and tensors; every byte is checked
    against the manifest before anything is parsed."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_tensors

    manifest = _read_manifest(folder)
    raw = {n: checkpoint.read_verified(folder, n, manifest) for n in FILES}
    try:
        state = json.loads(raw["state.json"])
        loop = LoopState(**state["loop"])
        saved = Config.from_dict(state["config"])
        tensors = load_tensors(raw["tensors.safetensors"])
    except (ValueError, TypeError, KeyError, SafetensorError, RecursionError) as e:
        raise IntegrityError(f"{folder / 'state.json'} or its tensors cannot be read ({e}); the checkpoint is "
                             "damaged: pass --force without --resume to start over") from None
    return state, loop, saved, tensors


def snapshot(run: str | Path, out: str | Path, force: bool = False) -> tuple[Path, LoopState]:
    """Save the model of a run that is still training (or was interrupted) as a model folder
    at `out`, from its latest checkpoint: the weights `fit` would return had the run ended
    there (the best epoch's so far; under --ema, the average), with the metrics so far. It
    can then be evaluated, sampled or reported like any run while training goes on; the run
    is only read. `run` is the training's `--out` or its `<out>.partial` folder.
    Returns the folder and the checkpoint's loop state (epoch, step, best epoch)."""
    from .model import VAE
    from .tables import Schema

    run = Path(run)
    run_dir = run if run.name.endswith(".partial") else run.with_name(run.name + ".partial")
    folder = latest(run_dir) if run_dir.is_dir() else None
    if folder is None:
        done = (run / checkpoint.MANIFEST).is_file() and not run.name.endswith(".partial")
        raise ConfigError(f"{run} is a finished run: use it as it is" if done else
                          f"no training checkpoint in {run_dir}: pass the --out of a run that is training or was "
                          "interrupted (checkpoints come every --checkpoint-every epochs or --checkpoint-minutes)")
    target = run_dir.with_name(run_dir.name[:-len(".partial")])
    _outside_the_run(Path(out), target, run_dir)
    checkpoint.check_output_dir(Path(out), force)  # before any work
    for attempt in range(3):  # the trainer may publish a newer checkpoint and prune this one meanwhile
        try:
            state, loop, config, tensors = _read(folder)
            break
        except (OSError, IntegrityError):
            newer = latest(run_dir)
            if attempt == 2 or newer is None or newer == folder:
                raise
            folder = newer
    try:
        schema = Schema.from_json(state["schema"]) if "schema" in state else None
        model = VAE.from_config(config, likelihood=None if schema is None else checkpoint.mixed_likelihood(schema))
        model.schema = schema
        weights = _prefixed(tensors, "best.") or _prefixed(tensors, "ema.") or _prefixed(tensors, "model.")
        model.load_state_dict(weights, strict=True)
    except (ConfigError, RuntimeError, KeyError, TypeError, ValueError) as e:
        raise IntegrityError(f"{folder} does not describe a model ({e}); the checkpoint is damaged") from None
    metrics = "".join(json.dumps(r) + "\n" for r in loop.history).encode()
    return checkpoint.save(model.eval(), out, force=force, extra={METRICS: metrics}), loop


def _outside_the_run(out: Path, target: Path, run_dir: Path) -> None:
    """A snapshot at the run's own --out would be taken by --resume for the finished run (and
    replaced when training ends); one inside `<out>.partial` would be published with the run."""
    dest = out.resolve()
    for own in (target, run_dir):
        if dest == own.resolve() or own.resolve() in dest.parents:
            inside = "inside " if dest != own.resolve() else ""
            raise ConfigError(f"-o {out} is {inside}the run's own folder {own}, where the training publishes its "
                              f"model; choose a folder beside it, e.g. -o {target}-now")


class Schedule:
    """When to write the next checkpoint: every `checkpoint_every` epochs and/or every
    `checkpoint_minutes` minutes (checked after each step)."""

    def __init__(self, config: Config):
        self.every, self.seconds = config.checkpoint_every, config.checkpoint_minutes * 60
        self.last_time = time.monotonic()
        self.last: Path | None = None  # the last checkpoint written or resumed from

    def epoch_due(self, epochs_done: int) -> bool:
        return self.every > 0 and epochs_done % self.every == 0

    def time_due(self) -> bool:
        return self.seconds > 0 and time.monotonic() - self.last_time >= self.seconds

    def saved(self, folder: Path) -> None:
        self.last, self.last_time = folder, time.monotonic()


def _tensors(model, opt, gen, best_state, perm, sums) -> dict[str, torch.Tensor]:
    def cpu(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to("cpu").contiguous().clone()

    out = {f"model.{k}": cpu(v) for k, v in model.state_dict().items()}
    if best_state is not None:
        out.update({f"best.{k}": cpu(v) for k, v in best_state.items()})
    for i, st in opt.state_dict()["state"].items():
        for name, value in st.items():
            out[f"optim.{i}.{name}"] = cpu(torch.as_tensor(value))
    out["rng.batches"] = cpu(gen.get_state())
    out["rng.torch"] = cpu(torch.get_rng_state())
    if model.device.type == "cuda":
        out["rng.cuda"] = cpu(torch.cuda.get_rng_state(model.device))
    if perm is not None:
        out["loop.perm"], out["loop.sums"] = cpu(perm), cpu(sums)
    return out


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Adam's per-parameter state from `optim.<index>.<name>`; the param groups (lr, betas)
    come from the config, as in the original run."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    fresh = opt.state_dict()
    opt.load_state_dict({"state": state, "param_groups": fresh["param_groups"]})
    # the moments come back contiguous; a channels-last weight needs them in its own layout:
    # fused Adam walks all of a parameter's tensors in memory order (mixed layouts silently
    # pair the wrong elements: measured, a wrong update on the first resumed step)
    for param, st in opt.state.items():
        for name, value in st.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                st[name] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _canonical(obj: dict, indent: int | None = None) -> bytes:
    return json.dumps(obj, indent=indent, allow_nan=False).encode()


def _read_manifest(folder: Path) -> dict:
    path = folder / checkpoint.MANIFEST
    manifest = checkpoint.read_manifest(folder, fmt=FORMAT, version=FORMAT_VERSION)
    if set(manifest["files"]) != set(FILES):
        raise IntegrityError(f"{path} lists {sorted(manifest['files'])}, not {list(FILES)}; the checkpoint is damaged")
    return manifest


def _prune(root: Path, keep: str) -> None:
    """Drop every checkpoint but the one `latest` names (older ones, and any a killed run
    wrote past it), and temporary folders of killed saves. Runs only after `latest` moved."""
    for p in root.iterdir():
        if p.is_dir() and p.name != keep and (NAME.fullmatch(p.name) or p.name.endswith(".tmp")):
            shutil.rmtree(p, ignore_errors=True)


def nonfinite_hint(last: Path | None) -> str:
    if last is None:
        return "no checkpoint was written yet"
    return f"last good checkpoint: {last} (continue with --resume after changing --lr or --grad-clip)"


def finite_or_raise(model, what: str) -> None:
    """Refuse to save weights holding NaN or Inf."""
    for k, v in model.state_dict().items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise NonFiniteError(f"{what}: weight {k} holds NaN or Inf; nothing saved: lower --lr or check the data")

