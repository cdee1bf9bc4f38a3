"""`vaekit ...`: a thin layer over the Python API. Each subcommand parses, calls the API,
prints. Errors from `vaekit.errors` become one line on stderr and a non-zero exit code
(`--debug` shows the traceback). torch is imported only inside the commands.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import sys
import threading
from pathlib import Path

from .cli_args import TRAIN_FLAGS, build_parser
from .errors import ConfigError, OutputExistsError, VaekitError

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")  # as table_io.TABLE_SUFFIXES; no numpy import here


def is_table_path(path: str) -> bool:
    p = Path(path)
    suffix = Path(p.stem).suffix if p.suffix.lower() in (".gz", ".bz2", ".xz") else p.suffix  # data.csv.gz
    return suffix.lower() in TABLE_SUFFIXES


def cmd_train(args) -> int:
    from .config import ARCH_FIELDS, Config, architecture, check_training, preset, read_json, unused
    from .data import load_data
    from .distributed import is_main
    from .train import fit

    base = {}
    if args.preset:
        base = preset(args.preset)
    start = None
    if args.init_from:  # the model is that run's (over a preset); how to train it is this command's
        from .checkpoint import load

        if is_table_path(args.data):
            raise ConfigError("--init-from applies to array and image runs; a table run trains from scratch")
        start = load(args.init_from, device="cpu")
        if getattr(start, "schema", None) is not None:
            raise ConfigError(f"--init-from {args.init_from} is a table run; it trains on the table it was made "
                              "from (vaekit train TABLE.csv), not on arrays")
        model_fields = {**architecture(start.config), "condition_on": start.config.condition_on}
        # a preset's architecture fields give way to the run's, those of other archs included
        base = {k: v for k, v in base.items() if k not in ARCH_FIELDS}
        base.update({k: v for k, v in model_fields.items() if k not in ("input_shape", "condition_dim")})
    if args.config:
        text = ""
        try:
            text = Path(args.config).read_text()
            loaded = read_json(text)
        except (OSError, ValueError) as e:  # missing, unreadable, not UTF-8, not JSON
            comments = re.search(r"^\s*(//|#)|/\*", text, re.M)
            hint = "; JSON has no comments: delete the // or # lines" if comments else ""
            raise ConfigError(f"--config {args.config}: cannot read JSON ({e}){hint}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config {args.config}: must be a JSON object of Config fields, "
                              'e.g. {"epochs": 20}')
        base = {**base, **loaded}  # the file overrides the preset
    overrides = {f: getattr(args, f) for f in TRAIN_FLAGS if getattr(args, f) is not None}
    if args.objective == "iwae" and args.k is None and base.get("k") is None:
        overrides["k"] = 5
    if args.wae_stochastic:
        overrides["wae_deterministic"] = False

    def refuse_ignored(config) -> None:  # a flag this run has no use for is an error, not silently dropped
        if ignored := unused(config, list(overrides)):
            flags = {"prior_components": "--pseudo-inputs / --prior-components",
                     "wae_deterministic": "--wae-stochastic"}
            raise ConfigError("; ".join(f"{flags.get(f, '--' + f.replace('_', '-'))} applies only to {where}"
                                        for f, where in ignored.items())
                              + f"; drop {'it' if len(ignored) == 1 else 'them'}, or choose what it applies to")
    if args.no_progress:
        overrides["progress"] = False
    if args.tensorboard:
        overrides["tensorboard"] = True
    overrides["init_from"] = str(args.init_from) if start is not None else None  # the record follows the flag
    settings = {**base, **overrides}
    if settings.get("epochs") == 0:  # fit(epochs=0) builds an untrained model; a saved run is trained
        positive(0, "--epochs")
    if is_table_path(args.data):
        from .tabular import table_config

        from . import table_cli

        if given := [f"--{f}" for f in ("likelihood", "binarize") if f in overrides]:  # table_config sets its own
            one = len(given) == 1
            raise ConfigError(f"{' and '.join(given)} {'applies' if one else 'apply'} to arrays and images; a table "
                              "run models each column with its own head (MixedLikelihood): "
                              f"drop {'it' if one else 'them'}")
        config = table_config(**settings)
        refuse_ignored(config)
        return table_cli.train(args, config)
    if args.column_kind or args.condition_columns or args.missing or args.decimal or args.encoding:
        raise ConfigError("--column-kind, --condition-columns, --encoding, --missing and --decimal apply to tables; "
                          "pass a .csv or .parquet file")
    config = Config.from_dict(settings)
    refuse_ignored(config)
    check_training(config)  # before the data is read (fit checks it too)
    ds = load_data(args.data, args.split, args.data_dir, args.download, stream=args.stream)
    model = fit(ds, config, out=args.out, force=args.force, resume=args.resume, model=start)
    h = model.history
    last = h.epochs[h.best_epoch - 1] if h.epochs else {}
    loss = last.get("val_loss", last.get("train_loss", float("nan")))
    if is_main():  # under torchrun, rank 0 speaks for all
        print(f"trained {epochs_text(h)} on {ds.name} ({len(ds.x)} examples)"
              f"{f' from {args.init_from}' if start is not None else ''}; best epoch {h.best_epoch}, "
              f"loss {loss:.4f}; saved {args.out}")
    return 0


def epochs_text(history) -> str:
    return f"{len(history.epochs)} epoch" + ("" if len(history.epochs) == 1 else "s")


def _load_run(args):
    from .checkpoint import load
    from .train import resolve_device

    return load(args.run, device=resolve_device(args.device))


def positive(value: int, flag: str) -> None:
    if value < 1:
        raise ConfigError(f"{flag} {value} must be >= 1")


def cmd_sample(args) -> int:
    import torch

    from .sample import write_samples

    positive(args.n, "-n")
    if not 0 < args.temperature < float("inf"):
        raise ConfigError(f"--temperature {args.temperature} must be a finite number > 0, e.g. 1")
    model = _load_run(args)
    if getattr(model, "schema", None) is not None:
        from . import table_cli

        return table_cli.sample(args, model)
    _check_array_output(args, model)
    condition = _sample_condition(model, args.condition, args.n)
    nrow = None
    if callable(condition):  # classes in turn: as many columns as a square grid, rounded to whole cycles
        classes = len(model.config.condition_names)
        nrow = min(args.n, classes * max(1, math.ceil(math.sqrt(args.n)) // classes))  # each column one class
    write_samples(model, args.output, args.n, temperature=args.temperature, mean=not args.draw,
                  generator=torch.Generator().manual_seed(args.seed), condition=condition,
                  layout=model.config.data_layout, nrow=nrow)
    print(f"wrote {args.n} samples to {args.output}")
    return 0


def _sample_condition(model, values: list[str] | None, n: int):
    """The conditions (n, C) for `sample`: the asked class, or every class in turn."""
    names = model.config.condition_names if model.config is not None else None
    if not model.condition_dim:
        if values:
            raise ConfigError(f"{values[0]!r}: this run is not conditional; drop --condition "
                              "or train with --condition-on labels")
        return None
    if not names:
        raise ConfigError("this run is conditioned on the caller's own vectors, not on class labels, so sample "
                          "has no condition to give it; sample it in Python: model.sample(n, condition=C)")
    if values and len(values) > 1:
        raise ConfigError(f"give one class label with --condition (got {len(values)}); run sample once per class")
    if values:
        if values[0] not in names:
            raise ConfigError(f"--condition {values[0]}: the run knows the classes {', '.join(names)}; pick one")
        return model.label_condition(values[0])
    return lambda start, stop: model.class_conditions(stop - start, start)  # (stop - start, C): classes in turn


def _eval_data(args, model, n: int | None, score: bool = False):
    """The data of `reconstruct`, `interpolate`, `traverse` and `evaluate`, checked against the
    model, and the conditions (N, C) a conditional model needs (from the data's labels).
    `score`: binarised once as the model is scored (evaluate); the pictures take the data as given,
    as `model.reconstruct` and the report do (a random binarisation would show speckled inputs)."""
    import torch

    from .data import load_data
    from .evaluate import check_eval_data, prepare_eval_data
    from .model import check_memory
    from .train import data_conditions

    # large data stays on disk until the first n rows are taken: -n 16 of a 200,000-image folder decodes 16
    ds = load_data(args.data, args.split, args.data_dir, args.download, stream=None)
    x = ds.x[:n] if n else ds.x
    if not isinstance(x, torch.Tensor):  # all of a large file or folder: only if it fits
        check_memory(4 * math.prod(x.shape), torch.device("cpu"), f"{ds.name} ({len(x)} examples) as float32",
                     "pass -n N to use its first N examples")
        x = x[:]
    if score:
        x = prepare_eval_data(model, x)
    else:
        check_eval_data(model, x)
        x = x.to(model.device, torch.float32)
    c = data_conditions(model, ds)
    return x, ds, None if c is None else c[:len(x)]


def _check_array_output(args, model) -> None:
    """An array or image run's output name, checked before any work: a .png only for image models."""
    from .sample import check_output_file

    check_output_file(args.output, force=args.force)
    shape = tuple(model.config.input_shape)
    if Path(args.output).suffix.lower() == ".png" and len(shape) != 3:
        raise ConfigError(f"this model makes arrays of shape {shape}, not images; write .npy instead")


def _table_run_or_check_output(args, command: str):
    """Load the run; check the output name for its kind: a table run's rows go to .csv/.parquet
    (reconstruct), and interpolate/traverse work on arrays and images only."""
    from .table_io import check_table_output

    model = _load_run(args)
    if getattr(model, "schema", None) is None:
        _check_array_output(args, model)
    elif command == "reconstruct":
        check_table_output(args.output, force=args.force)
    else:
        raise ConfigError(f"{command} works on array and image runs; {args.run} is a table run: use sample, "
                          "reconstruct or evaluate")
    return model


def cmd_reconstruct(args) -> int:
    import torch

    from .sample import write_output

    positive(args.n, "-n")
    model = _table_run_or_check_output(args, "reconstruct")
    if getattr(model, "schema", None) is not None:
        from . import table_cli

        return table_cli.reconstruct(args, model)
    x, _, c = _eval_data(args, model, args.n)
    recon = model.reconstruct(x, c=c)
    if Path(args.output).suffix.lower() == ".png":
        rows = min(len(x), 16)  # inputs on one row, reconstructions under them
        pairs = [torch.cat([x[j:j + rows], recon[j:j + rows]]) for j in range(0, len(x), rows)]
        write_output(torch.cat(pairs), args.output, nrow=rows)
    else:
        write_output(recon, args.output, layout=model.config.data_layout)
    print(f"wrote {len(x)} reconstructions to {args.output}")
    return 0


def cmd_interpolate(args) -> int:
    from .sample import write_output

    positive(args.pairs, "--pairs")
    if args.steps < 2:
        raise ConfigError(f"--steps {args.steps} must be >= 2")
    model = _table_run_or_check_output(args, "interpolate")
    x, _, c = _eval_data(args, model, 2 * args.pairs)
    if len(x) < 2:
        raise ConfigError("interpolation needs at least two examples in DATA")
    pairs = len(x) // 2
    c1, c2 = (None, None) if c is None else (c[0:2 * pairs:2], c[1:2 * pairs:2])
    path = model.interpolate(x[0:2 * pairs:2], x[1:2 * pairs:2], steps=args.steps, c1=c1, c2=c2)  # (steps, pairs, *shape)
    if Path(args.output).suffix.lower() == ".png":
        write_output(path.transpose(0, 1).reshape(-1, *path.shape[2:]), args.output, nrow=args.steps)
    else:
        write_output(path, args.output, layout=model.config.data_layout)
    print(f"wrote {pairs} interpolations of {args.steps} steps to {args.output}")
    return 0


def cmd_traverse(args) -> int:
    from .sample import most_active, traversals, write_output

    positive(args.n, "-n")
    model = _table_run_or_check_output(args, "traverse")
    x, _, c = _eval_data(args, model, args.n)
    dims, note = args.dims, ""
    if dims is None and args.top >= 1:  # the most active: say so when fewer than --top are
        dims, active = most_active(model, x, args.top, c)
        if not active:
            note = (f"; none of the {model.latent_dim} latent dimensions is active (posterior means spread over "
                    f"the first {len(x)} examples <= 0.01), so this walk may show little; pick others with --dims")
        elif active < min(args.top, model.latent_dim):
            note = (f"; only {active} of the {model.latent_dim} latent dimensions are active, the others would show "
                    "no change; pick them with --dims")
    dims, walks = traversals(model, x, dims=dims, top=args.top, index=args.index, span=args.span,
                             steps=args.steps, c=c)  # (dims, steps, *shape)
    if Path(args.output).suffix.lower() == ".png":
        write_output(walks.reshape(-1, *walks.shape[2:]), args.output, nrow=args.steps)
    else:
        write_output(walks, args.output, layout=model.config.data_layout)
    print(f"wrote traversals of latent dimension(s) {', '.join(map(str, dims))} of example {args.index}, "
          f"{args.steps} steps from -{args.span:g} to {args.span:g}, to {args.output}{note}")
    return 0


def strict_json(result: dict) -> str:
    """One strict JSON object: a value that is not a finite number (the standard error of one
    example, a score with nothing to score) is null, never the NaN that JSON parsers reject."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return [clean(u) for u in v] if isinstance(v, (list, tuple)) else v
    return json.dumps({k: clean(v) for k, v in result.items()}, allow_nan=False)


def cmd_evaluate(args) -> int:
    import torch

    from .evaluate import evaluate

    positive(args.k, "--k")
    positive(args.batch_size, "--batch-size")
    if args.n is not None:
        positive(args.n, "-n")
    model = _load_run(args)
    if getattr(model, "schema", None) is not None:
        from . import table_cli

        return table_cli.evaluate(args, model)
    x, ds, c = _eval_data(args, model, args.n, score=True)
    torch.manual_seed(args.seed)
    result = evaluate(model, x, k=args.k, batch_size=args.batch_size, compile=args.compile, c=c, progress=True)
    if args.json:
        print(strict_json(result))
        return 0
    print(f"data: {ds.name}, n = {result['n']}, k = {result['k']}")
    se = f"{result['nll_se']:.3f}" if math.isfinite(result["nll_se"]) else "n/a (one example)"
    given = ", -log p(x|c) given the data's labels" if result.get("conditional") else ""
    print(f"NLL:  {result['nll']:.3f} +- {se} nats (importance-sampled, k = {result['k']}{given})")
    if "bits_per_dim" in result:
        print(f"      {result['bits_per_dim']:.4f} bits/dim")
    print(f"ELBO: {result['elbo']:.3f} nats = recon {result['recon']:.3f} - KL {result['kl']:.3f}")
    print(f"active units: {result['active_units']} of {len(result['kl_per_dim'])}")
    print(kl_per_dim_text(result["kl_per_dim"]))
    if "kl_per_layer" in result:
        print("KL per stochastic layer (bottom first): " + " ".join(f"{v:.2f}" for v in result["kl_per_layer"]))
    return 0


def kl_per_dim_text(kl: list, shown: int = 64) -> str:
    """All values for a small latent; for a large one (a conv hierarchy has thousands) the largest, by index."""
    if len(kl) <= shown:
        return "KL per dim: " + " ".join(f"{v:.2f}" for v in kl)
    top = sorted(range(len(kl)), key=lambda i: -kl[i])[:16]
    return (f"KL per dim: {len(kl)} values, sum {sum(kl):.2f}; the 16 largest: "
            + " ".join(f"[{i}] {kl[i]:.2f}" for i in top) + " (all of them with --json)")


def cmd_report(args) -> int:
    from .report import check_output_html, report

    positive(args.k, "--k")
    positive(args.n, "-n")
    check_output_html(args.output, force=args.force)
    path = report(args.run, args.data, args.output, k=args.k, n=args.n, split=args.split, data_dir=args.data_dir,
                  seed=args.seed, device=args.device, force=args.force, sep=args.sep)
    print(f"wrote {path}")
    return 0


def cmd_export(args) -> int:
    from .checkpoint import load
    from .export import check_onnx_paths, export_onnx

    check_onnx_paths(args.onnx, args.encoder, force=args.force)  # before the model is read
    result = export_onnx(load(args.run, device="cpu"), args.onnx, args.encoder, force=args.force)
    print(f"wrote {result['decoder']} (z -> mean of p(x|z)); onnxruntime matches PyTorch within "
          f"{result['decoder_max_abs_diff']:.2g}")
    if args.encoder:
        print(f"wrote {result['encoder']} (x -> mu, sigma of q(z|x)); onnxruntime matches PyTorch within "
              f"{result['encoder_max_abs_diff']:.2g}")
    return 0


def cmd_snapshot(args) -> int:
    from .resume import snapshot

    out, loop = snapshot(args.run, args.output, force=args.force)
    where = f"epoch {loop.epoch + 1}, step {loop.step}" if loop.step else f"the end of epoch {loop.epoch}"
    weights = f"the best epoch's ({loop.best_epoch})" if loop.best_epoch > 0 else "the current"
    print(f"wrote {out}: the run's latest checkpoint ({where}), {weights} weights; "
          "evaluate, sample or report it like any run")
    return 0


def cmd_demo(args) -> int:
    from .demo import FILES, demo

    out = Path(args.out)
    model = demo(out, epochs=args.epochs, force=args.force)
    h = model.history
    print(f"trained on digits for {len(h.epochs)} epochs (val loss {h.epochs[h.best_epoch - 1]['val_loss']:.2f} nats)")
    for name in FILES:
        if (out / name).exists():
            print(f"  {out / name}")
    if not (out / "report.html").exists():
        print("  (no report.html: pip install matplotlib, or vaekit[report], to get the HTML report too)")
    return 0


def cmd_help(args) -> int:
    """`vaekit help [COMMAND]`: the same text as `vaekit [COMMAND] --help`."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    (commands[args.topic] if args.topic else parser).print_help()
    return 0


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "reconstruct": cmd_reconstruct,
            "interpolate": cmd_interpolate, "traverse": cmd_traverse, "evaluate": cmd_evaluate, "report": cmd_report, "export": cmd_export,
            "snapshot": cmd_snapshot, "demo": cmd_demo, "help": cmd_help}


def _out_of_memory(e: BaseException) -> bool:
    """A failed allocation: Python's MemoryError, torch's CPU allocator or CUDA out of memory."""
    text = str(e)
    return isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or \
        "can't allocate memory" in text or "out of memory" in text.lower()


def _first_line(e: BaseException) -> str:
    """The message's first line without torch's "[enforce fail at file:line] err == 0." lead."""
    text = str(e).strip().splitlines()
    return re.sub(r"^\w+ == \w+\.\s*", "", text[0].split("] ")[-1]) if text else type(e).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if not argv:  # `vaekit` alone: what it can do, as `vaekit --help` says it
        parser.print_help()
        return 0
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed
        return e.code if isinstance(e.code, int) else 2
    previous = _catch_sigterm()
    try:
        return COMMANDS[args.command](args)
    except VaekitError as e:
        if args.debug:
            raise
        print(f"vaekit: error: {e}", file=sys.stderr)
        return e.exit_code
    except (MemoryError, RuntimeError) as e:  # a model or batch too large to allocate: one line too
        if args.debug or not _out_of_memory(e):
            raise
        print(f"vaekit: error: out of memory ({_first_line(e)}); use smaller sizes (--latent-dim, --hidden, "
              "--prior-components, --k, --batch-size, -n) or a machine with more memory", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader stopped (`vaekit evaluate ... | head -3`): nothing went wrong here
        try:  # no second error when Python flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is not a file (captured): nothing to flush
            pass
        return 141  # 128 + SIGPIPE, as a shell tool killed by it
    except OSError as e:  # disk full, permission denied...: the environment, not a bug
        if args.debug:
            raise
        where = f" ({e.filename})" if e.filename else ""
        print(f"vaekit: error: {e.strerror or e}{where}; check the path, its permissions and free space",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (a scheduler's kill, `kill PID`): the same clean stop
        extra = ""
        if args.command == "train":
            partial = Path(args.out).with_name(Path(args.out).name + ".partial")
            extra = (f"; checkpoints are kept: rerun with --resume{' --force' if args.force else ''} to continue"
                     if (partial / "checkpoints" / "latest").is_file() else
                     "; it stopped before its first checkpoint, so nothing was kept: run it again")
        what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"vaekit: {what}; no output was published{extra}", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    finally:
        if previous is not False:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command was, so that it stops as after Ctrl-C: temporary files
    removed, checkpoints kept, one line said, exit code 143 (128 + 15) instead of a silent death."""


def _catch_sigterm():
    """Turn SIGTERM into `Terminated` for this command; returns the handler to put back (False
    where signals cannot be handled: not the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return False

    def terminate(signum, frame):
        raise Terminated()
    return signal.signal(signal.SIGTERM, terminate)
