"""fit(): the one training loop. Adam, a validation split, best-model keeping, early
stopping, gradient clipping, a progress bar, a JSONL metrics file, seeded and deterministic
on CPU. Helpers above the loop are small and pure; the loop itself reads top to bottom.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint, distributed
from . import resume as resuming
from .config import Config, architecture, check_training
from .data import Dataset, as_dataset, binarize_dynamic, check_finite, is_binary, on_8bit_grid
from .errors import ConfigError, DataError, IncompatibleError, NonFiniteError, OutputExistsError
from .evaluate import log_likelihood
from .model import VAE, memory_format
from .monitor import check_tensorboard, live_terms, progress_bar, report_epoch, tensorboard_writer
from .objectives import Bound, elbo, iwae, resolve_kl, wae_mmd
from .stabilise import (averaged, clip_gradients, ema_start, ema_update, gradient_norm, large_gradient,
                        report_grad_skips)
from .stream import LazyRows, binarize_once, rows, take

METRICS = resuming.METRICS  # the run folder's metrics, one JSON row per epoch


@dataclass
class History:
    epochs: list[dict[str, Any]] = field(default_factory=list)  # one metrics dict per epoch
    best_epoch: int = -1  # epoch whose weights the returned model holds
    stopped_early: bool = False  # True when patience ran out before config.epochs

    def column(self, key: str) -> list[float]:
        return [e[key] for e in self.epochs if key in e]


def resolve_device(name: str) -> torch.device:
    if not (name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit())):
        raise ConfigError(f"device {name!r} is not auto, cpu, cuda or cuda:N; pass one of those to --device")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for, but CUDA is not available here; use --device cpu")
        idx = int(name.split(":")[1]) if ":" in name else 0
        if idx >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return torch.device(name)


def resolve_config(config: Config, ds: Dataset) -> Config:
    """Fill in what the data decides: input shape, likelihood, binarisation."""
    check_training(config)
    x = ds.x
    lo, hi = (float(v) for v in (torch.aminmax(x.reshape(-1)) if isinstance(x, torch.Tensor) else (x.min(), x.max())))
    unit = lo >= 0 and hi <= 1
    binary = is_binary(x)
    likelihood = config.likelihood
    if likelihood == "auto":
        likelihood = "bernoulli" if binary or (unit and ds.image) else "gaussian"
    if likelihood == "bernoulli" and not unit:
        raise DataError(f"{ds.name} has values outside [0, 1] ({lo:.3g}..{hi:.3g}); "
                        "a Bernoulli likelihood needs [0, 1]: use --likelihood gaussian or rescale")
    if likelihood == "discretized-logistic" and not (unit and on_8bit_grid(x)):
        raise DataError(f"{ds.name} is not 8-bit data scaled to [0, 1] (values k/255; it has {lo:.3g}..{hi:.3g}"
                        f"{'' if not unit else ', off the grid'}); the discretized-logistic likelihood models "
                        "the 256 levels of 8-bit pixels: use --likelihood gaussian for other real values")
    binarize = config.binarize
    if binarize == "auto":
        binarize = "dynamic" if likelihood == "bernoulli" and not binary else "none"
    if binarize == "dynamic" and likelihood != "bernoulli":
        raise ConfigError("binarize=dynamic needs --likelihood bernoulli")
    if config.arch in ("conv", "hvae") and x.ndim != 4:
        raise ConfigError(f"--arch {config.arch} needs images (N, C, H, W); {ds.name} has shape {tuple(x.shape)}: "
                          "use --arch mlp")
    layout = ds.layout if x.ndim == 4 else "NCHW"
    return config.replace(input_shape=list(x.shape[1:]), likelihood=likelihood, binarize=binarize, data_layout=layout)


def build_condition(ds: Dataset, config: Config, condition: Any) -> tuple[torch.Tensor | None, Config]:
    """The condition vectors c (N, C) of a conditional VAE, and the config recording them:
    one-hot class labels for condition_on="labels", or the caller's own array (N, C)."""
    if condition is not None:
        if isinstance(condition, torch.Tensor):  # on any device: numpy reads only the CPU's
            c = condition.detach().float()
        elif isinstance(condition, LazyRows):
            c = condition
        else:
            try:
                c = torch.as_tensor(np.asarray(condition, dtype=np.float32))
            except (TypeError, ValueError) as e:  # text or ragged rows
                raise DataError(f"condition must be numbers, one row per example ({e}); for class names use "
                                "Config(condition_on='labels') with the data's labels") from None
        if c.ndim == 1:
            c = c.unsqueeze(1)
        if c.ndim != 2 or len(c) != len(ds.x):
            raise DataError(f"condition has shape {tuple(c.shape)}; pass one row per example: ({len(ds.x)}, C)")
        check_finite(c, "the condition")
        return c, config.replace(condition_on=config.condition_on or "columns", condition_dim=c.shape[1])
    if config.condition_on != "labels":
        if config.condition_on == "columns":
            raise ConfigError("condition_on=columns needs the condition array: fit(data, config, condition=C)")
        return None, config.replace(condition_dim=0, condition_names=None)
    if ds.labels is None:
        raise DataError(f"{ds.name} has no labels to condition on; use labelled data (digits, MNIST, "
                        "an .npz with 'labels', sub-folders of images) or drop --condition-on")
    present = torch.unique(ds.labels)  # sorted label values
    found = [ds.classes[int(v)] if ds.classes else str(int(v)) for v in present]  # their names
    names = config.condition_names or found  # a trained model's classes, or the data's
    unknown = [f for f in found if f not in names]
    if unknown:
        raise DataError(f"{ds.name} has classes {unknown} that the model was not trained on; it knows {names}")
    position = torch.tensor([names.index(f) for f in found])  # label value -> one-hot position
    index = position[torch.searchsorted(present, ds.labels)]  # (N,)
    c = torch.nn.functional.one_hot(index, len(names)).float()  # (N, C)
    return c, config.replace(condition_dim=len(names), condition_names=names)


def data_conditions(model: VAE, ds: Dataset) -> torch.Tensor | None:
    """The conditions (N, C) of a trained label-conditioned model for the labelled data `ds`
    (its classes keep the model's one-hot positions; a subset of them is fine), None for an
    unconditional model."""
    if not model.condition_dim:
        return None
    if model.config is None or model.config.condition_on != "labels":
        raise ConfigError("this model is conditioned on columns or the caller's own vectors, not on class labels; "
                          "pass its conditions yourself (tables: use the table commands)")
    if ds.labels is None:
        raise DataError(f"{ds.name} has no labels, and this model is conditioned on them; give labelled data "
                        "(an .npz with 'labels', sub-folders of images, digits, MNIST)")
    c, _ = build_condition(ds, model.config, None)
    return c.to(model.device)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = int(round(n * val_fraction)) if n > 1 else 0
    n_val = min(n_val, n - 1)
    return order[n_val:], order[:n_val]


def objective(model: VAE, x: torch.Tensor, config: Config, beta: float | None = None,
              free_bits: float | None = None, c: torch.Tensor | None = None) -> Bound:
    """The configured objective on a batch (with conditions c (B, C) for a conditional
    model); `beta`/`free_bits` override the config's (warm-up)."""
    match config.objective:
        case "elbo":
            return elbo(model, x, beta=config.beta if beta is None else beta,
                        free_bits=config.free_bits if free_bits is None else free_bits, c=c)
        case "iwae":
            return iwae(model, x, k=config.k, beta=config.beta if beta is None else beta, c=c, dreg=config.dreg)
        case "wae-mmd":
            return wae_mmd(model, x, weight=config.mmd_weight, kernel=config.mmd_kernel,
                           deterministic=config.wae_deterministic, c=c)
    raise ConfigError(f"unknown objective {config.objective!r}")


def kl_weight(config: Config, step: int, steps_per_epoch: int) -> float:
    """beta, reached linearly over `kl_warmup` epochs (Bowman et al. 2016; Sønderby et al. 2016)."""
    warm = config.kl_warmup * steps_per_epoch
    return config.beta if step >= warm else config.beta * (step + 1) / warm


@torch.no_grad()
def evaluate_bound(model: VAE, x: torch.Tensor, config: Config, batch_size: int = 1024,
                   c: torch.Tensor | None = None) -> dict[str, float]:
    """Mean loss (negative bound) and its terms over x, in eval mode, batched."""
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=x.device)
    for i in range(0, len(x), batch_size):
        b = objective(model, x[i:i + batch_size], config, c=None if c is None else c[i:i + batch_size])
        sums += torch.stack([-b.bound.sum(), b.recon.sum(), b.kl.sum()]).double()
    loss, recon, kl = (sums / len(x)).tolist()
    return {"loss": loss, "recon": recon, "kl": kl}


def learning_rate(config: Config, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """The learning rate at a global step: linear warm-up, then constant or cosine decay.
    A pure function of the step, so resuming needs no scheduler state."""
    warmup = config.lr_warmup * steps_per_epoch
    if step < warmup:
        return config.lr * (step + 1) / warmup
    if config.lr_schedule == "constant":
        return config.lr
    t = min(1.0, (step - warmup) / max(1.0, total_steps - warmup))
    return config.lr * (config.lr_final + (1 - config.lr_final) * 0.5 * (1 + math.cos(math.pi * t)))


def nonfinite_message(what: str, epoch: int, step: int, last: Path | None = None) -> str:
    return (f"{what} became non-finite at epoch {epoch + 1}, step {step}; {resuming.nonfinite_hint(last)}; lower --lr, "
            "raise --grad-clip protection, check the data for extreme values or pass --skip-nonfinite")


def check_start_model(model: VAE, config: Config) -> None:
    """fit(model=...) continues training a model: it must be the model `config` and the data
    describe (the same architecture, input and condition), only the training may differ."""
    want = architecture(config)
    if getattr(model, "config", None) is None:  # built by hand from parts: only its input can be checked
        have = {"input_shape": list(model.input_shape), "condition_dim": model.condition_dim}
        want = {k: want[k] for k in have}
    else:
        have = architecture(model.config)
    differ = [k for k in sorted(have.keys() | want.keys()) if have.get(k) != want.get(k)]
    if differ:
        pairs = "; ".join(f"{k}: {have.get(k)} in the model, {want.get(k)} here" for k in differ)
        if {"input_shape", "condition_dim"} & set(differ):  # what the data decides, not a flag
            raise IncompatibleError(f"the data does not fit the starting model (--init-from / model=) ({pairs}); "
                                    "train it on data like its own (the same example shape and classes), "
                                    "or train a fresh model")
        raise IncompatibleError(f"the starting model (--init-from / model=) is not the model this run describes "
                                f"({pairs}); drop the flags that change the architecture, or train a fresh model")


def fit(data: Any, config: Config | None = None, out: str | os.PathLike | None = None, *,
        force: bool = False, model: VAE | None = None, condition: Any = None, resume: bool = False) -> VAE:
    """Train a VAE on `data` (Dataset, tensor or array (N, *shape)) and return it, best
    validation weights loaded, in eval mode. With `out`, the run folder (config, weights,
    manifest, metrics.jsonl) is built in `<out>.partial` and renamed to `out` when done;
    training checkpoints go to `<out>.partial/checkpoints`, and `resume=True` continues
    from the latest one (bit-identical on CPU to a run that was never interrupted).
    A conditional VAE: `config.condition_on="labels"` (the data's class labels), or
    `condition` (N, C), one condition vector per example. `model`: train this model further
    instead of a fresh one (a second stage, e.g. IWAE after ELBO training, or new data): its
    architecture must be `config`'s (IncompatibleError otherwise); Adam starts afresh."""
    config = config or Config()
    ds = as_dataset(data)
    config = resolve_config(config, ds)
    if model is not None and config.condition_on == "labels" and not config.condition_names:
        # continuing a conditional model: its classes keep their one-hot positions
        config = config.replace(condition_names=getattr(model.config, "condition_names", None))
    c_all, config = build_condition(ds, config, condition)
    target = Path(out) if out is not None else None
    if config.tensorboard:
        check_tensorboard(target)  # the same answer on every rank, before any rank joins
    ranks, device = distributed.start(resolve_device(config.device), config.amp)  # torchrun: join the ranks
    if resume and ranks.world > 1:
        ranks.close()
        raise ConfigError("--resume under torchrun is not supported yet: resume with one process "
                          "(checkpoints are in OUT.partial/checkpoints), or start the run again")
    if target is not None:  # before any work: bad --out costs nothing
        def check_out() -> None:
            if resume and (target / checkpoint.MANIFEST).is_file() and not force:
                partial = target.with_name(target.name + ".partial")
                if (partial / resuming.FOLDER / resuming.LATEST).is_file():  # a --force run, cut short, to replace it
                    raise OutputExistsError(f"{target} is a complete run, and {partial} holds an interrupted run "
                                            f"that was to replace it (--force): pass --resume --force to continue "
                                            f"that one, or delete {partial} to keep {target} as it is")
                raise OutputExistsError(f"{target} is a complete run already; nothing to resume "
                                        "(pass --force to train again)")
            checkpoint.check_output_dir(target, force)
        ranks.on_main(check_out)

    torch.manual_seed(config.seed)
    gen = torch.Generator(device=device).manual_seed(config.seed)  # batches and binarisation
    train_idx, val_idx = split_indices(len(ds.x), config.val_fraction, config.seed)
    val_idx = ranks.split(val_idx)  # this rank's share of the validation rows
    x_train = take(ds.x, train_idx, device)  # (N_train, *shape); streamed data stays on disk
    x_val = take(ds.x, val_idx, device)  # (N_val, *shape)
    c_train, c_val = (None, None) if c_all is None else (take(c_all, train_idx, device), take(c_all, val_idx, device))
    if config.binarize == "dynamic" and len(x_val):
        # the validation set is binarised once with a fixed seed: every epoch scores the same bits
        x_val = binarize_once(x_val, config.seed + 1)

    fresh = model is None
    if not fresh:
        check_start_model(model, config)
    model = VAE.from_config(config) if fresh else model
    model.config = config
    if hasattr(model.likelihood, "set_data_stats") and not model.likelihood.has_data_stats():
        model.likelihood.set_data_stats(x_train)  # a model trained further keeps its standardisation
    if fresh and hasattr(model.likelihood, "start_output") and len(x_train):
        # p(x|z) starts as the average example (a Bernoulli's log-odds): no stall on that plateau
        # float32 means on both paths, so streamed data starts bit-identical to the same array in memory
        in_memory = isinstance(x_train, torch.Tensor)
        mean = x_train.mean(0, dtype=torch.float64).float() if in_memory else x_train.moments()[0]
        model.likelihood.start_output(model.output_layer(), mean)  # mean: (*shape)
    if fresh and hasattr(model.prior, "init_from_data"):
        model.prior.init_from_data(x_train, torch.Generator().manual_seed(config.seed))
    layout = memory_format(config)  # conv models: channels-last weights, and batches to match
    model.to(device, memory_format=layout)
    # fused Adam: one kernel per parameter tensor instead of ~10; at small batches the for-loop
    # Adam is a large share of a step (IWAE model: 1.07 ms vs 0.40 ms fused, measured on CPU)
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay,
                           fused=device.type in ("cpu", "cuda"))
    ema = ema_start(model, config)
    distributed.reseed(ranks, config.seed)
    noise = ranks.noise_generator(gen, config.seed, device)
    if config.compile:  # two examples, fetched as the loop fetches its batches
        first = torch.arange(min(2, len(x_train)), device=device)
        resolve_kl(model, rows(x_train, first), None if c_train is None else rows(c_train, first))
    step_fn = distributed.training_step(model, lambda m, x, beta, c=None: objective(m, x, config, beta=beta, c=c), ranks,
                                        device, amp=config.amp, compile=config.compile)

    run_dir, loop, best_state, perm, sums, fingerprint = None, resuming.LoopState(), None, None, None, None
    saves, held = resuming.Schedule(config), None
    if target is not None and ranks.main:  # rank 0 alone writes the run folder and its checkpoints
        run_dir = target.with_name(target.name + ".partial")
        held = resuming.lock(target)  # one training per --out at a time
        try:
            resuming.prepare(run_dir, resume, force)
            fingerprint = resuming.data_fingerprint(ds.x)
            if resume and (restored := resuming.restore(run_dir, model, opt, gen, config, fingerprint, ema)):
                loop, best_state, perm, sums, started = restored
                if started != config.init_from:  # a record, not a setting: the checkpoint's start holds
                    config = model.config = config.replace(init_from=started)
                saves.saved(resuming.latest(run_dir))
                # metrics.jsonl holds exactly the epochs the checkpoint has seen
                checkpoint.write_atomic(run_dir / METRICS,
                                        "".join(json.dumps(r) + "\n" for r in loop.history).encode())
            elif resume:  # e.g. stopped before its first checkpoint, or a mistyped --out: not silent
                print(f"vaekit: no checkpoint to resume in {run_dir}; training {target} from the start",
                      file=sys.stderr, flush=True)
        except BaseException:
            resuming.unlock(held)
            raise
    history = History(loop.history, loop.best_epoch)
    best_loss = math.inf if loop.best_loss is None else loop.best_loss

    def save_checkpoint() -> None:  # the whole training state, so a kill costs at most this much work
        loop.best_loss = None if best_loss == math.inf else best_loss
        saves.saved(resuming.save(run_dir, model, opt, gen, loop, best_state, config, fingerprint, perm, sums,
                                  ema))

    board = None
    try:  # from here on every way out lets go of the lock and the event files
        board = tensorboard_writer(run_dir) if config.tensorboard and run_dir is not None else None
        steps_per_epoch = ranks.steps(len(x_train), config.batch_size)
        for epoch in range(loop.epoch, config.epochs):
            model.train()
            t0 = time.perf_counter()
            if perm is None:  # a fresh epoch (not one resumed half-way)
                perm = torch.randperm(len(x_train), generator=gen, device=device)
                sums = torch.zeros(4, dtype=torch.float64, device=device)  # -bound, recon, kl, examples
                loop.epoch, loop.step, loop.epoch_skips, loop.grad_skips = epoch, 0, 0, 0
            bar = progress_bar(steps_per_epoch, epoch, config) if ranks.main else None
            for step in range(loop.step, steps_per_epoch):
                idx, n_global = ranks.shard(perm, step, config.batch_size)
                xb = rows(x_train, idx)  # (B, *shape)
                xb = xb.contiguous(memory_format=layout) if xb.dim() == 4 else xb
                cb = None if c_train is None else rows(c_train, idx)  # (B, C)
                if config.binarize == "dynamic":
                    xb = binarize_dynamic(xb, noise)  # fresh bits every time an image is used
                t = epoch * steps_per_epoch + step  # the global step: warm-ups, schedule and EMA follow it
                b = step_fn(xb, kl_weight(config, t, steps_per_epoch), c=cb)
                loss = ranks.loss(b.bound, n_global)
                for group in opt.param_groups:
                    group["lr"] = learning_rate(config, t, config.epochs * steps_per_epoch, steps_per_epoch)
                opt.zero_grad(set_to_none=True)
                loss.backward()  # also on a non-finite loss: its update is never applied (below)
                # the step's one wait for the device: the loss's finiteness and the gradient norm
                # together (three separate reads stalled a GPU three times per step)
                finite, norm = torch.stack([torch.isfinite(loss.detach()).float(), gradient_norm(params)]).tolist()
                # one decision for all ranks: every rank skips or stops together, none hangs
                bad = "the loss" if ranks.anyone(not finite) else None
                if bad is None:
                    norm = clip_gradients(params, config.grad_clip, norm)
                    bad = None if math.isfinite(norm) else "the gradient"  # grads are all-reduced: same on every rank
                loop.step = step + 1
                if bad is not None:  # never step on NaN: skip the batch (--skip-nonfinite) or stop here
                    loop.skips_in_a_row, loop.epoch_skips = loop.skips_in_a_row + 1, loop.epoch_skips + 1
                    if loop.skips_in_a_row > config.skip_nonfinite:
                        raise NonFiniteError(nonfinite_message(bad, epoch, step, saves.last))
                    opt.zero_grad(set_to_none=True)
                else:
                    loop.skips_in_a_row = 0
                    if large_gradient(norm, config):
                        loop.grad_skips += 1
                    else:
                        opt.step()
                        ema_update(ema, model, config.ema, t)
                    sums += torch.stack([-b.bound.sum(), b.recon.sum(), b.kl.sum(),
                                         b.bound.new_tensor(len(xb))]).detach().double()
                if bar is not None:
                    seen = max(sums[3].item(), 1.0)
                    bar.set_postfix(live_terms(sums[:3] / seen, config), refresh=False)
                    bar.update(1)
                if run_dir is not None and saves.time_due() and loop.step < steps_per_epoch:
                    save_checkpoint()  # mid-epoch: the batch order and partial sums go along
            if bar is not None:
                bar.close()
            total = ranks.sum(sums)  # (4,) over all ranks
            if not total[3] > 0:
                raise NonFiniteError(f"every batch of epoch {epoch + 1} was skipped as non-finite; "
                                     f"{resuming.nonfinite_hint(saves.last)}; lower --lr or check the data")
            train_loss, train_recon, train_kl = (total[:3] / total[3]).tolist()
            row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": train_loss, "train_recon": train_recon,
                                   "train_kl": train_kl}
            if config.skip_nonfinite:
                row["skipped_batches"] = loop.epoch_skips
            if config.grad_skip:
                row["grad_skipped"] = loop.grad_skips
                report_grad_skips(loop.grad_skips, steps_per_epoch, epoch, config, ranks.main)
            if len(x_val):
                with averaged(model, ema):  # --ema: the averaged weights are the ones scored and kept
                    val = ranks.mean(evaluate_bound(model, x_val, config, c=c_val), len(x_val))
                    row.update(val_loss=val["loss"], val_recon=val["recon"], val_kl=val["kl"])
                    if config.val_nll_k:
                        nll = -float(log_likelihood(model, x_val, k=config.val_nll_k, c=c_val).mean())
                        row["val_nll"] = ranks.mean({"nll": nll}, len(x_val))["nll"]
            row["lr"] = opt.param_groups[0]["lr"]
            row["seconds"] = time.perf_counter() - t0
            history.epochs.append(row)
            if config.progress and ranks.main:
                report_epoch(row, config)
            if run_dir is not None:
                with open(run_dir / METRICS, "a") as f:
                    f.write(json.dumps(row) + "\n")
            if board is not None:
                board(row)
            score = row.get("val_loss", train_loss)
            perm = sums = None
            loop.epoch, loop.step = epoch + 1, 0
            # an epoch trained under the KL warm-up's lower weight has a train loss below the
            # objective's: it keeps the latest weights but is never compared with the epochs after
            comparable = "val_loss" in row or epoch >= config.kl_warmup
            if ranks.agree(not comparable or score < best_loss):  # one decision for all ranks
                best_loss, loop.bad_epochs, history.best_epoch = score if comparable else math.inf, 0, epoch + 1
                best_state = copy.deepcopy(model.state_dict() if ema is None else ema)
            else:
                loop.bad_epochs += 1
                if config.patience and loop.bad_epochs >= config.patience:
                    history.stopped_early = True
                    break
            loop.best_epoch = history.best_epoch
            if run_dir is not None and (saves.epoch_due(epoch + 1) or saves.time_due()) and epoch + 1 < config.epochs:
                save_checkpoint()
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        model.history = history
        if board is not None:
            board.close()  # event files complete before the folder is published
        if run_dir is not None:
            resuming.finite_or_raise(model, "the trained model")
            extra = (METRICS,) if (run_dir / METRICS).exists() else ()
            checkpoint.write_model_files(model, run_dir, extra=extra)
            checkpoint.publish(run_dir, target)
            shutil.rmtree(target / resuming.FOLDER, ignore_errors=True)  # the run is complete: drop its checkpoints
    except BaseException:
        if board is not None:
            board.close()
        # keep checkpoints for --resume; a folder without one holds nothing worth keeping
        if run_dir is not None and run_dir.exists() and saves.last is None:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        resuming.unlock(held)
        ranks.close()
    return model
