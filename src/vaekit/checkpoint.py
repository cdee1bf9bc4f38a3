"""Saved models: a folder with `config.json`, `model.safetensors` and `manifest.json`.

The manifest records each file's size and sha256 and a format version. `load` checks every
byte against it before parsing anything, and parses only JSON and safetensors: loading a
model never runs code (no pickle anywhere).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import uuid
from pathlib import Path

import torch

from .config import Config, read_json
from .errors import ConfigError, IntegrityError, OutputExistsError

FORMAT = "vaekit-model"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_FILES = ("config.json", "model.safetensors")
SCHEMA = "schema.json"  # table models only (tables.Schema)
METRICS = "metrics.jsonl"  # a run's metrics, one JSON row per finished epoch
MAX_JSON_BYTES = 1 << 20  # a manifest or config larger than this is not ours


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_output_path(path: str | os.PathLike, suffixes: tuple[str, ...], wrong_suffix: str, names: str,
                      force: bool = True, flag: str = "-o") -> Path:
    """Refuse, before any work is done, an output file with another suffix (`wrong_suffix`
    says what to write instead), a missing parent folder, a folder, or (unless `force`) an
    existing file. `names` is how valid names end, for the messages."""
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise ConfigError(f"{p}: {wrong_suffix}")
    if not p.parent.is_dir():
        raise ConfigError(f"{p.parent} does not exist; create it first or choose another {flag}")
    if p.is_dir():
        raise ConfigError(f"{p} is a folder; give a file name ending in {names}")
    if p.exists() and not force:
        raise OutputExistsError(f"{p} exists; choose another {flag} or pass --force to overwrite it")
    return p


@contextlib.contextmanager
def atomic_file(path: Path):
    """A file object on a temporary name beside `path`, fsynced and renamed over it when the
    block ends without error, deleted otherwise: readers see the old file or the whole new
    one, never a part (for data written in pieces)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes) -> None:
    """`data` to `path` through `atomic_file`."""
    with atomic_file(path) as f:
        f.write(data)


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def model_bytes(model) -> dict[str, bytes]:
    """The two model files as bytes: the resolved config and the unwrapped tensors."""
    from safetensors.torch import save

    module = getattr(model, "_orig_mod", model)  # torch.compile wrappers never reach the file
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    files = {
        "config.json": model.config.to_json().encode(),
        "model.safetensors": save(tensors, metadata={"format": FORMAT}),
    }
    if getattr(module, "schema", None) is not None:  # a table model: columns, encodings, conditions
        files[SCHEMA] = module.schema.to_json().encode()
    return files


def write_model_files(model, folder: Path, extra: tuple[str, ...] = ()) -> None:
    """Write the model files into an existing folder; the manifest goes last, so a folder
    with a valid manifest always has complete files. `extra` names other files already in
    the folder to checksum too (e.g. metrics.jsonl)."""
    files = model_bytes(model)
    for name, data in files.items():
        write_atomic(folder / name, data)
    for name in extra:
        files[name] = (folder / name).read_bytes()
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "files": {n: {"bytes": len(b), "sha256": sha256_bytes(b)} for n, b in sorted(files.items())},
    }
    write_atomic(folder / MANIFEST, json.dumps(manifest, indent=2).encode())


def save(model, path: str | os.PathLike, force: bool = False, extra: dict[str, bytes] | None = None) -> Path:
    """Save `model` as a folder at `path`, with `extra` files (name: bytes) listed in its
    manifest too. An existing non-empty folder is refused unless `force`; then it is
    replaced only once the new folder is complete. A model from `fit` carries its per-epoch
    metrics (`model.history`): they are saved as `metrics.jsonl`, as in the run folder `fit`
    writes, so that `vaekit report` draws its training curves."""
    target = Path(path)
    check_output_dir(target, force)
    extra = dict(extra or {})
    history = getattr(model, "history", None)
    if METRICS not in extra and history is not None and history.epochs:
        extra[METRICS] = "".join(json.dumps(row) + "\n" for row in history.epochs).encode()
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
    staging.mkdir(parents=True)
    try:
        for name, data in extra.items():
            write_atomic(staging / name, data)
        write_model_files(model, staging, extra=tuple(extra))
        publish(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def check_folder_name(target: Path, flag: str = "--out") -> None:
    """`.`, `..` or `/` name no folder that could be built beside itself and renamed into place
    (and replacing the folder a shell stands in would strand it): ask for a new one."""
    if target.name in ("", ".", ".."):
        raise ConfigError(f"{flag} {target} names no folder of its own; give a new folder's name, e.g. "
                          f"{flag} {target / 'run'}")


def check_output_dir(target: Path, force: bool) -> None:
    check_folder_name(target)
    if target.exists() and not target.is_dir():
        raise OutputExistsError(f"{target} is a file; choose a folder path for the run")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise OutputExistsError(f"{target} exists and is not empty; choose another --out or pass --force")


def publish(staging: Path, target: Path) -> None:
    """Move a complete staging folder to `target`, replacing an old one only at the end."""
    old = None
    # Ctrl-C or SIGTERM between the two renames would leave no folder at `target` at all: the
    # signals wait until both are done (they are delivered right after)
    masked = hasattr(signal, "pthread_sigmask")
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM}) if masked else None
    try:
        if target.exists():
            old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
            os.rename(target, old)
        os.rename(staging, target)
    finally:
        if masked:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_verified(folder: Path, name: str, manifest: dict) -> bytes:
    """The bytes of `folder/name`, refused unless size and sha256 match the manifest."""
    if "/" in name or "\\" in name or name.startswith("."):  # a manifest never points outside its folder
        raise IntegrityError(f"{folder / MANIFEST} lists {name!r}, not a plain file name; the run folder was altered")
    entry = manifest["files"].get(name)
    if not isinstance(entry, dict):
        raise IntegrityError(f"{folder / MANIFEST} does not list {name}; the run folder is incomplete or altered")
    path = folder / name
    if not path.is_file():
        raise IntegrityError(f"{path} is missing; copy the whole run folder again")
    data = path.read_bytes()
    if len(data) != entry.get("bytes") or sha256_bytes(data) != entry.get("sha256"):
        raise IntegrityError(f"{path} does not match its sha256 in {MANIFEST} (truncated or altered); "
                             "restore the original file or train again")
    return data


def _unfinished(folder: Path) -> str:
    """For the message on a folder that is not a run: a run still training (or interrupted)
    lives in <out>.partial, and its model so far is a snapshot away."""
    partial = folder if folder.name.endswith(".partial") else folder.with_name(folder.name + ".partial")
    if not (partial / "checkpoints").is_dir():
        return ""
    return (f"; {partial} holds a run still training or interrupted: `vaekit snapshot {partial} -o FOLDER` "
            "writes its latest checkpoint as a run folder")


def read_manifest(folder: Path, fmt: str = FORMAT, version: int = FORMAT_VERSION) -> dict:
    """The parsed manifest of `folder`, refused unless it is exactly the bytes vaekit writes
    for its content (so even a whitespace edit is caught) with a known format and version."""
    path = folder / MANIFEST
    if not folder.is_dir():
        raise IntegrityError(f"{folder} is not a vaekit run folder (no such folder)"
                             f"{_unfinished(folder) or '; pass the --out folder of `vaekit train`'}")
    if not path.is_file():
        raise IntegrityError(f"{path} is missing; {folder} is not a complete vaekit run folder{_unfinished(folder)}")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise IntegrityError(f"{path} is too large to be a vaekit manifest")
    raw = path.read_bytes()
    try:
        manifest = read_json(raw.decode())
    except (ValueError, UnicodeDecodeError) as e:
        raise IntegrityError(f"{path} is not valid JSON ({e}); the run folder is damaged") from None
    if not isinstance(manifest, dict) or manifest.get("format") != fmt or not isinstance(manifest.get("files"), dict):
        raise IntegrityError(f"{path} is not a vaekit manifest")
    got = manifest.get("format_version")
    if isinstance(got, bool) or not isinstance(got, int) or got < 1 or got > version:
        raise IntegrityError(f"{path} has format_version {got!r}; this vaekit reads 1 to "
                             f"{version}: upgrade vaekit")
    if json.dumps(manifest, indent=2).encode() != raw:  # the manifest has no checksum of its own
        raise IntegrityError(f"{path} was altered (it is not in the form vaekit writes); restore the original")
    return manifest


def mixed_likelihood(schema):
    from .likelihoods import MixedLikelihood

    return MixedLikelihood(schema.heads())


def _check_jsonl(path: Path, data: bytes) -> list[dict]:
    """A metrics file is JSON objects, one a line; anything else was not written by vaekit."""
    try:
        rows = [read_json(line) for line in data.decode().splitlines()]
        ok = all(isinstance(row, dict) for row in rows)
    except (ValueError, UnicodeDecodeError):
        ok = False
    if not ok:
        raise IntegrityError(f"{path} is not JSON lines as vaekit writes them; restore the original file")
    return rows


def check_dtypes(model, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse weights of another dtype than the model's (float32): load_state_dict would cast
    float16/bfloat16 (precision already lost), float64 or even integer tensors without a word."""
    want = {k: v.dtype for k, v in model.state_dict().items()}
    wrong = sorted((k, v.dtype) for k, v in tensors.items() if k in want and v.dtype != want[k])
    if wrong:
        (name, got), more = wrong[0], f" and {len(wrong) - 1} more" if len(wrong) > 1 else ""
        raise IntegrityError(f"{path}: weight {name} is {str(got).removeprefix('torch.')}{more}, but vaekit saves "
                             f"{str(want[name]).removeprefix('torch.')}; convert the tensors back "
                             "(safetensors.torch: {k: v.float()}) or restore the file vaekit wrote")


def load(path: str | os.PathLike, device: str | torch.device | None = None):
    """Load a saved model folder, verifying every file first. Returns the VAE in eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_tensors

    from .model import VAE, memory_format

    folder = Path(path)
    manifest = read_manifest(folder)
    # every listed file, not only the two parsed here: a damaged metrics.jsonl is news too
    names = sorted(set(manifest["files"]) | set(MODEL_FILES))
    verified = {name: read_verified(folder, name, manifest) for name in names}
    config_bytes, weights = verified["config.json"], verified["model.safetensors"]
    rows = _check_jsonl(folder / "metrics.jsonl", verified["metrics.jsonl"]) if "metrics.jsonl" in verified else []
    schema = None
    if SCHEMA in verified:
        from .tables import Schema

        try:
            schema = Schema.from_json(verified[SCHEMA].decode())
        except (ValueError, TypeError, KeyError, UnicodeDecodeError, RecursionError) as e:
            raise IntegrityError(f"{folder / SCHEMA} is not a table schema ({e}); train again") from None
    try:
        config = Config.from_json(config_bytes.decode())
        model = VAE.from_config(config, likelihood=None if schema is None else mixed_likelihood(schema))
    except (ConfigError, ValueError, UnicodeDecodeError) as e:
        newer = "; a run saved by a newer vaekit needs that version: upgrade" if "unknown config field" in str(e) else ""
        raise IntegrityError(f"{folder / 'config.json'} does not describe a model: {e}{newer}") from None
    model.schema = schema
    from .train import History

    model.history = History(epochs=rows)  # the run's per-epoch metrics, as fit() returned them
    try:
        tensors = load_tensors(weights)
        check_dtypes(model, tensors, folder / "model.safetensors")
        model.load_state_dict(tensors, strict=True)
    except (SafetensorError, RuntimeError, ValueError) as e:
        # torch's message spans lines ("Error(s) in loading state_dict ...:\n\tUnexpected key(s)"): one line here
        raise IntegrityError(f"{folder / 'model.safetensors'} does not fit its config.json: "
                             f"{' '.join(str(e).split())}") from None
    # save() never writes NaN or Inf, so such weights were put there after it: refuse, as any damage
    bad = next((k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise IntegrityError(f"{folder / 'model.safetensors'}: weight {bad} holds NaN or Inf, which vaekit never "
                             "saves; the file was altered: train again or restore a good copy")
    model.to(device=device, memory_format=memory_format(config))  # conv models: channels-last, as in training
    return model.eval()
