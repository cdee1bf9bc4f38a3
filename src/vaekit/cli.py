"""`vaekit ...`: a thin layer over the Python API. Each subcommand parses, calls the API,
prints. Errors from `vaekit.errors` become one line on stderr and a non-zero exit code
(`--debug` shows the traceback). torch is imported only inside the commands.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import ConfigError, OutputExistsError, VaekitError

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")  # as tables.TABLE_SUFFIXES; no numpy import here


def is_table_path(path: str) -> bool:
    return Path(path).suffix.lower() in TABLE_SUFFIXES


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 256,256") from None


def _data_args(p: argparse.ArgumentParser, split: str) -> None:
    p.add_argument("data", metavar="DATA", help="digits | mnist | path to .npy/.npz, an image folder or a "
                   ".csv/.parquet table")
    p.add_argument("--sep", help="tables: CSV separator (default: sniffed from the header, ',', ';' or tab)")
    p.add_argument("--data-dir", help="folder of the MNIST *-ubyte.gz files (DATA = mnist)")
    p.add_argument("--download", action="store_true", help="download MNIST into --data-dir, checksums verified")
    p.add_argument("--split", default=split, choices=["train", "test", "all"],
                   help=f"which part of digits/mnist (default {split}); a path is used whole")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2), like every other error."""

    def error(self, message: str):
        where = self.prog.removeprefix("vaekit").strip()  # the subcommand, if any
        self.exit(2, f"vaekit: error: {where + ': ' if where else ''}{message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vaekit", description="Learn a VAE from your data and generate more like it.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    t = sub.add_parser("train", help="fit a VAE and save the run folder")
    _data_args(t, "train")
    t.add_argument("--out", required=True, help="run folder to create")
    t.add_argument("--force", action="store_true", help="replace an existing --out folder (only once training succeeds)")
    t.add_argument("--config", help="JSON file of Config fields; flags given here override it")
    t.add_argument("--preset", choices=["mnist"],
                   help="a recommended setting (mnist: the hierarchical conv VAE, arch=hvae, and its schedule); "
                        "--config and flags override it")
    t.add_argument("--epochs", type=int)
    t.add_argument("--latent-dim", type=int)
    t.add_argument("--arch", choices=["mlp", "conv", "ladder", "hvae"])
    t.add_argument("--latent-dims", type=_ints, help="arch=ladder: stochastic layer sizes, bottom first, e.g. 100,50")
    t.add_argument("--ladder-hidden", type=_ints, help="arch=ladder: widths between stochastic layers, e.g. 100,100")
    t.add_argument("--hidden", type=_ints, help="MLP widths, e.g. 256,256")
    t.add_argument("--channels", type=_ints, help="conv widths, e.g. 32,64 (arch=hvae: one per scale, finest first)")
    t.add_argument("--groups", type=_ints, help="arch=hvae: stochastic groups per scale, finest first, e.g. 1,2")
    t.add_argument("--latent-channels", type=int, help="arch=hvae: channels of each latent map (default 8)")
    t.add_argument("--cells", type=int, help="arch=hvae: residual cells per block (default 1)")
    t.add_argument("--activation", choices=["relu", "tanh", "elu", "silu"])
    t.add_argument("--likelihood", choices=["auto", "bernoulli", "gaussian"])
    t.add_argument("--binarize", choices=["auto", "dynamic", "none"])
    t.add_argument("--objective", choices=["elbo", "iwae", "wae-mmd"])
    t.add_argument("--k", type=int, help="importance samples for --objective iwae")
    t.add_argument("--beta", type=float, help="KL weight (1 = plain VAE)")
    t.add_argument("--kl-warmup", type=float, help="epochs over which the KL weight rises from 0 to beta")
    t.add_argument("--free-bits", type=float, help="nats per latent dim not penalised (against collapse)")
    t.add_argument("--prior", choices=["normal", "vamp", "mog"], help="p(z): N(0, I), VampPrior, mixture")
    t.add_argument("--pseudo-inputs", "--prior-components", dest="prior_components", type=int,
                   help="VampPrior pseudo-inputs / mixture components (default 500 / 10)")
    t.add_argument("--mmd-kernel", choices=["imq", "rbf"], help="WAE-MMD kernel")
    t.add_argument("--mmd-weight", type=float, help="WAE-MMD penalty weight lambda (default 10)")
    t.add_argument("--wae-stochastic", action="store_true", help="WAE-MMD with a sampled (Gaussian) encoder")
    t.add_argument("--condition-on", choices=["labels"],
                   help="conditional VAE on the data's class labels (sample one class with --condition)")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--lr-schedule", choices=["constant", "cosine"])
    t.add_argument("--lr-warmup", type=float, help="epochs of linear learning-rate warm-up")
    t.add_argument("--lr-final", type=float, help="cosine schedule ends at lr * this")
    t.add_argument("--val-nll-k", type=int, help="log the importance-sampled validation NLL with K samples per epoch")
    t.add_argument("--patience", type=int, help="early-stopping patience in epochs (0 = off)")
    t.add_argument("--val-fraction", type=float)
    t.add_argument("--grad-clip", type=float)
    t.add_argument("--grad-skip", type=float, metavar="NORM",
                   help="skip (and count) an update whose gradient norm exceeds NORM (default 0 = off)")
    t.add_argument("--ema", type=float, metavar="DECAY",
                   help="keep a moving average of the weights with this decay, e.g. 0.999; it is what is "
                        "validated and saved (default 0 = off)")
    t.add_argument("--seed", type=int)
    t.add_argument("--device", help="auto | cpu | cuda | cuda:N (torchrun: auto = cuda:LOCAL_RANK)")
    t.add_argument("--amp", action="store_true", default=None, help="bf16 mixed precision on CUDA")
    t.add_argument("--compile", action="store_true", default=None, help="torch.compile the training step")
    t.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                   help="read a .npy (memory-mapped) or image folder batch by batch instead of into memory "
                        "(default: stream a .npy larger than 1 GiB as float32); tables: read the file in chunks "
                        "and train from an encoded copy on disk (default: a table file larger than 256 MiB)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--column-kind", action="append", metavar="COL=KIND",
                   help="tables: override a column's kind (continuous, integer, boolean, categorical, datetime)")
    t.add_argument("--condition-columns", help="tables: comma-separated columns to condition on (a conditional VAE)")
    t.add_argument("--encoding", choices=["quantile", "gmm"], default="quantile",
                   help="tables: numeric columns by quantile transform (default) or Gaussian-mixture modes")
    t.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files to RUN/tensorboard")
    t.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from the latest checkpoint in OUT.partial/checkpoints")
    t.add_argument("--checkpoint-every", type=int, metavar="EPOCHS",
                   help="save the training state every EPOCHS epochs (default 1; 0 = off)")
    t.add_argument("--checkpoint-minutes", type=float, metavar="M",
                   help="also save it every M minutes, mid-epoch if need be (default off)")
    t.add_argument("--skip-nonfinite", type=int, nargs="?", const=10, metavar="N",
                   help="skip batches with a NaN/Inf loss or gradient, at most N in a row (default 10) "
                        "instead of stopping at the first")

    s = sub.add_parser("sample", help="generate new examples from a trained run")
    s.add_argument("run", metavar="RUN")
    s.add_argument("-n", type=int, default=64, help="how many (default 64)")
    s.add_argument("-o", "--output", required=True, help=".png image grid or .npy array; tables: .csv or .parquet")
    s.add_argument("--temperature", type=float, default=1.0, help="scale of the prior draw (default 1)")
    s.add_argument("--draw", action="store_true", help="draw x ~ p(x|z) instead of its mean")
    s.add_argument("--condition", action="append", metavar="VALUE",
                   help="conditional runs: the class label to generate, e.g. --condition 7 "
                        "(default: all classes in turn); tables: sex=Female, age>40 (repeatable)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto")
    s.add_argument("--force", action="store_true", help="overwrite an existing output file")

    r = sub.add_parser("reconstruct", help="encode and decode data with a trained run")
    r.add_argument("run", metavar="RUN")
    _data_args(r, "test")
    r.add_argument("-o", "--output", required=True, help=".png (inputs above reconstructions) or .npy")
    r.add_argument("-n", type=int, default=32, help="how many examples, from the start (default 32)")
    r.add_argument("--device", default="auto")
    r.add_argument("--force", action="store_true", help="overwrite an existing output file")

    i = sub.add_parser("interpolate", help="decode the line between pairs of inputs in latent space")
    i.add_argument("run", metavar="RUN")
    _data_args(i, "test")
    i.add_argument("-o", "--output", required=True, help=".png (one row per pair) or .npy (steps, pairs, ...)")
    i.add_argument("--pairs", type=int, default=4, help="pairs: examples (0,1), (2,3), ... (default 4)")
    i.add_argument("--steps", type=int, default=10)
    i.add_argument("--device", default="auto")
    i.add_argument("--force", action="store_true", help="overwrite an existing output file")

    e = sub.add_parser("evaluate", help="importance-sampled log-likelihood, ELBO terms, active units")
    e.add_argument("run", metavar="RUN")
    _data_args(e, "test")
    e.add_argument("--k", type=int, default=1000, help="importance samples per example (default 1000)")
    e.add_argument("-n", type=int, help="use only the first N examples")
    e.add_argument("--batch-size", type=int, default=100)
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--rows", type=int, help="tables: synthetic rows to score (default: as many as DATA has)")
    e.add_argument("--compile", action="store_true", help="torch.compile the estimator (faster for large N x k)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="auto")

    rp = sub.add_parser("report", help="one self-contained HTML file: curves, samples, latent space, evaluation")
    rp.add_argument("run", metavar="RUN")
    rp.add_argument("data", metavar="DATA", nargs="?",
                    help="digits | mnist | path to .npy/.npz or an image folder (optional: adds the data's pictures); "
                         "for a table run, the real .csv/.parquet (needed)")
    rp.add_argument("--data-dir", help="folder of the MNIST *-ubyte.gz files (DATA = mnist)")
    rp.add_argument("--split", default="test", choices=["train", "test", "all"],
                    help="part of digits/mnist (default test)")
    rp.add_argument("-o", "--output", required=True, help="the .html file to write")
    rp.add_argument("--k", type=int, default=100, help="importance samples for the evaluation (default 100)")
    rp.add_argument("-n", type=int, default=1000, help="examples used, from the start (default 1000)")
    rp.add_argument("--seed", type=int, default=0)
    rp.add_argument("--device", default="auto")

    x = sub.add_parser("export", help="write the decoder (and encoder) as ONNX, checked with onnxruntime")
    x.add_argument("run", metavar="RUN")
    x.add_argument("--onnx", required=True, help="decoder file: z (B, d) -> mean of p(x|z) (B, *shape)")
    x.add_argument("--encoder", help="also the encoder: x (B, *shape) -> mu, sigma of q(z|x), each (B, d)")

    d = sub.add_parser("demo", help="train on digits in seconds and write sample and reconstruction grids")
    d.add_argument("--out", default="vaekit-demo", help="folder for the demo (default vaekit-demo)")
    d.add_argument("--epochs", type=int, default=80)
    d.add_argument("--force", action="store_true", help="replace a non-demo folder at --out")
    return parser


TRAIN_FLAGS = ("epochs", "latent_dim", "arch", "latent_dims", "ladder_hidden", "hidden", "channels", "groups",
               "latent_channels", "cells", "grad_skip", "ema", "activation", "likelihood", "binarize",
               "objective", "k", "beta", "kl_warmup", "free_bits", "prior", "prior_components", "mmd_kernel",
               "mmd_weight", "batch_size", "lr", "lr_schedule", "lr_warmup", "lr_final", "val_nll_k",
               "patience", "val_fraction", "grad_clip", "seed", "device", "checkpoint_every", "checkpoint_minutes",
               "skip_nonfinite", "condition_on", "amp", "compile")


def cmd_train(args) -> int:
    from .config import Config
    from .data import load_data
    from .distributed import is_main
    from .train import fit

    base = {}
    if args.preset:
        from .config import preset

        base = preset(args.preset)
    if args.config:
        try:
            loaded = json.loads(Path(args.config).read_text())
        except (OSError, ValueError) as e:  # missing, unreadable, not UTF-8, not JSON
            raise ConfigError(f"--config {args.config}: cannot read JSON ({e})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config {args.config}: must be a JSON object of Config fields, "
                              'e.g. {"epochs": 20}')
        base = {**base, **loaded}  # the file overrides the preset
    overrides = {f: getattr(args, f) for f in TRAIN_FLAGS if getattr(args, f) is not None}
    if args.objective == "iwae" and args.k is None and base.get("k") is None:
        overrides["k"] = 5
    if args.wae_stochastic:
        overrides["wae_deterministic"] = False
    if args.no_progress:
        overrides["progress"] = False
    if args.tensorboard:
        overrides["tensorboard"] = True
    if is_table_path(args.data):
        from .tabular import table_config

        config = table_config(**{**base, **overrides})
        return _train_table(args, config)
    if args.column_kind or args.condition_columns:
        raise ConfigError("--column-kind and --condition-columns apply to tables; pass a .csv or .parquet file")
    config = Config.from_dict({**base, **overrides})
    ds = load_data(args.data, args.split, args.data_dir, args.download, stream=args.stream)
    model = fit(ds, config, out=args.out, force=args.force, resume=args.resume)
    h = model.history
    last = h.epochs[h.best_epoch - 1] if h.epochs else {}
    loss = last.get("val_loss", last.get("train_loss", float("nan")))
    if is_main():  # under torchrun, rank 0 speaks for all
        print(f"trained {len(h.epochs)} epochs on {ds.name} ({len(ds.x)} examples); best epoch {h.best_epoch}, "
              f"loss {loss:.4f}; saved {args.out}")
    return 0


def _train_table(args, config) -> int:
    from .tables import column_kinds
    from .tabular import fit_table

    conds = [c.strip() for c in args.condition_columns.split(",") if c.strip()] if args.condition_columns else None
    model = fit_table(args.data, config, out=args.out, kinds=column_kinds(args.column_kind), condition_columns=conds,
                      encoding=args.encoding, sep=args.sep, force=args.force, resume=args.resume,
                      stream=args.stream)
    h = model.history
    last = h.epochs[h.best_epoch - 1] if h.epochs else {}
    loss = last.get("val_loss", last.get("train_loss", float("nan")))
    schema = model.schema
    print(f"trained {len(h.epochs)} epochs on {args.data} ({len(schema.columns)} columns); best epoch "
          f"{h.best_epoch}, loss {loss:.4f}; saved {args.out}")
    return 0


def _load_run(args):
    from .checkpoint import load
    from .train import resolve_device

    return load(args.run, device=resolve_device(args.device))


def _positive(value: int, flag: str) -> None:
    if value < 1:
        raise ConfigError(f"{flag} {value} must be >= 1")


def cmd_sample(args) -> int:
    import torch

    from .sample import check_output_file, write_output

    _positive(args.n, "-n")
    if not 0 < args.temperature < float("inf"):
        raise ConfigError(f"--temperature {args.temperature} must be a finite number > 0, e.g. 1")
    model = _load_run(args)
    if getattr(model, "schema", None) is not None:
        from .tables import check_table_output, write_table
        from .tabular import sample_table

        check_table_output(args.output, force=args.force)
        df = sample_table(model, args.n, conditions=args.condition, seed=args.seed, temperature=args.temperature)
        write_table(df, args.output)
        print(f"wrote {args.n} rows to {args.output}")
        return 0
    check_output_file(args.output, force=args.force)
    x = model.sample(args.n, temperature=args.temperature, mean=not args.draw,
                     generator=torch.Generator().manual_seed(args.seed),
                     condition=_sample_condition(model, args.condition, args.n))
    if Path(args.output).suffix.lower() == ".png" and x.ndim != 4:
        raise ConfigError(f"this model makes arrays of shape {tuple(x.shape[1:])}, not images; write .npy instead")
    write_output(x, args.output)
    print(f"wrote {args.n} samples to {args.output}")
    return 0


def _sample_condition(model, values: list[str] | None, n: int):
    """The conditions (n, C) for `sample`: the asked class, or every class in turn."""
    import torch

    names = model.config.condition_names if model.config is not None else None
    if not model.condition_dim:
        if values:
            raise ConfigError(f"{values[0]!r}: this run is not conditional; drop --condition "
                              "or train with --condition-on labels")
        return None
    if not names:
        raise ConfigError("this run is conditioned on columns, not labels; sample it as a table")
    if values and len(values) > 1:
        raise ConfigError(f"give one class label with --condition (got {len(values)}); run sample once per class")
    if values:
        if values[0] not in names:
            raise ConfigError(f"--condition {values[0]}: the run knows the classes {', '.join(names)}; pick one")
        return model.label_condition(values[0])
    return torch.eye(len(names), device=model.device)[torch.arange(n) % len(names)]  # (n, C): classes in turn


def _eval_data(args, model, n: int | None):
    """The data of `reconstruct`, `interpolate` and `evaluate`, checked against the model, and
    the conditions (N, C) a conditional model needs (from the data's labels)."""
    from .data import load_data
    from .evaluate import prepare_eval_data
    from .train import build_condition

    ds = load_data(args.data, args.split, args.data_dir, args.download)
    x = prepare_eval_data(model, ds.x[:n] if n else ds.x)
    c = None
    if model.condition_dim:
        if model.config.condition_on != "labels":
            raise ConfigError("this run is conditioned on columns, not labels; use it through the table commands")
        c, _ = build_condition(ds, model.config, None)
        c = c[:len(x)].to(model.device)
    return x, ds, c


def cmd_reconstruct(args) -> int:
    import torch

    from .sample import check_output_file, write_output

    _positive(args.n, "-n")
    check_output_file(args.output, force=args.force)
    model = _load_run(args)
    x, _, c = _eval_data(args, model, args.n)
    recon = model.reconstruct(x, c=c)
    if Path(args.output).suffix.lower() == ".png":
        if x.ndim != 4:
            raise ConfigError("a .png needs image data; write .npy instead")
        rows = min(len(x), 16)  # inputs on one row, reconstructions under them
        pairs = [torch.cat([x[j:j + rows], recon[j:j + rows]]) for j in range(0, len(x), rows)]
        write_output(torch.cat(pairs), args.output, nrow=rows)
    else:
        write_output(recon, args.output)
    print(f"wrote {len(x)} reconstructions to {args.output}")
    return 0


def cmd_interpolate(args) -> int:
    from .sample import check_output_file, write_output

    _positive(args.pairs, "--pairs")
    if args.steps < 2:
        raise ConfigError(f"--steps {args.steps} must be >= 2")
    check_output_file(args.output, force=args.force)
    model = _load_run(args)
    x, _, c = _eval_data(args, model, 2 * args.pairs)
    if len(x) < 2:
        raise ConfigError("interpolation needs at least two examples in DATA")
    pairs = len(x) // 2
    c1, c2 = (None, None) if c is None else (c[0:2 * pairs:2], c[1:2 * pairs:2])
    path = model.interpolate(x[0:2 * pairs:2], x[1:2 * pairs:2], steps=args.steps, c1=c1, c2=c2)  # (steps, pairs, *shape)
    if Path(args.output).suffix.lower() == ".png":
        write_output(path.transpose(0, 1).reshape(-1, *path.shape[2:]), args.output, nrow=args.steps)
    else:
        write_output(path, args.output)
    print(f"wrote {pairs} interpolations of {args.steps} steps to {args.output}")
    return 0


def cmd_evaluate(args) -> int:
    import torch

    from .evaluate import evaluate

    _positive(args.k, "--k")
    _positive(args.batch_size, "--batch-size")
    if args.n is not None:
        _positive(args.n, "-n")
    model = _load_run(args)
    if getattr(model, "schema", None) is not None:
        return _evaluate_table(args, model)
    x, ds, c = _eval_data(args, model, args.n)
    torch.manual_seed(args.seed)
    result = evaluate(model, x, k=args.k, batch_size=args.batch_size, compile=args.compile, c=c)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"data: {ds.name}, n = {result['n']}, k = {result['k']}")
    print(f"NLL:  {result['nll']:.3f} +- {result['nll_se']:.3f} nats (importance-sampled, k = {result['k']})")
    if "bits_per_dim" in result:
        print(f"      {result['bits_per_dim']:.4f} bits/dim")
    print(f"ELBO: {result['elbo']:.3f} nats = recon {result['recon']:.3f} - KL {result['kl']:.3f}")
    print(f"active units: {result['active_units']} of {len(result['kl_per_dim'])}")
    print("KL per dim: " + " ".join(f"{v:.2f}" for v in result["kl_per_dim"]))
    if "kl_per_layer" in result:
        print("KL per stochastic layer (bottom first): " + " ".join(f"{v:.2f}" for v in result["kl_per_layer"]))
    return 0


def _evaluate_table(args, model) -> int:
    from .table_metrics import evaluate_table
    from .tables import read_table

    if args.rows is not None:
        _positive(args.rows, "--rows")
    real = read_table(args.data, args.sep)
    if args.n:
        real = real.iloc[:args.n]
    r = evaluate_table(model, real, n=args.rows, seed=args.seed)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"data: {args.data}, {r['rows_real']} real rows, {r['rows_synthetic']} synthetic rows")
    print(f"quality (SDMetrics): {r['quality']:.4f} (column shapes {r['column_shapes']:.4f}, "
          f"column-pair trends {r['column_pair_trends']:.4f}); higher is better")
    print(f"detection ROC AUC:   {r['detection_auc']:.4f} (0.5: indistinguishable)")
    print(f"privacy: {r['privacy_closer_than_median']:.4f} of synthetic rows are closer to a training row than "
          f"the median training nearest-neighbour distance; {r['exact_copies']} exact copies")
    return 0


def cmd_report(args) -> int:
    from .report import check_output_html, report

    _positive(args.k, "--k")
    _positive(args.n, "-n")
    check_output_html(args.output)
    path = report(args.run, args.data, args.output, k=args.k, n=args.n, split=args.split, data_dir=args.data_dir,
                  seed=args.seed, device=args.device)
    print(f"wrote {path}")
    return 0


def cmd_export(args) -> int:
    from .checkpoint import load
    from .export import export_onnx

    result = export_onnx(load(args.run, device="cpu"), args.onnx, args.encoder)
    print(f"wrote {result['decoder']} (z -> mean of p(x|z)); onnxruntime matches PyTorch within "
          f"{result['decoder_max_abs_diff']:.2g}")
    if args.encoder:
        print(f"wrote {result['encoder']} (x -> mu, sigma of q(z|x)); onnxruntime matches PyTorch within "
              f"{result['encoder_max_abs_diff']:.2g}")
    return 0


def cmd_demo(args) -> int:
    import torch

    from .config import Config
    from .data import load_data
    from .train import fit
    from .report import report
    from .sample import write_output

    _positive(args.epochs, "--epochs")
    out = Path(args.out)
    marker = out / "demo.json"
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} is a file; choose a folder path for --out")
    if out.exists() and any(out.iterdir()) and not marker.exists() and not args.force:
        raise ConfigError(f"{out} exists and is not a vaekit demo folder; choose another --out or pass --force")
    staging = out.with_name(out.name + ".partial-demo")
    import shutil

    from .checkpoint import publish

    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        train, test = load_data("digits", "train"), load_data("digits", "test")
        config = Config(latent_dim=8, hidden=[256, 128], epochs=args.epochs, batch_size=64, lr=2e-3,
                        patience=15, seed=0, progress=False, checkpoint_every=0)  # seconds long: nothing to resume
        print(f"training a VAE on scikit-learn's digits for up to {args.epochs} epochs ...", flush=True)
        model = fit(train, config, out=staging / "run")
        write_output(model.sample(64, generator=torch.Generator().manual_seed(0)), staging / "samples.png")
        x = test.x[:16]
        write_output(torch.cat([x, model.reconstruct(x)]), staging / "reconstructions.png", nrow=16)
        path = model.interpolate(x[0:8:2], x[1:8:2], steps=10)  # (10, 4, 1, 8, 8)
        write_output(path.transpose(0, 1).reshape(-1, *path.shape[2:]), staging / "interpolations.png", nrow=10)
        import importlib.util

        has_plots = importlib.util.find_spec("matplotlib") is not None  # the report is optional: vaekit[report]
        if has_plots:
            report(model, test, staging / "report.html", k=100, title="digits demo")
        (staging / "demo.json").write_text(json.dumps({"epochs": len(model.history.epochs)}))
        publish(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    h = model.history
    print(f"trained on digits for {len(h.epochs)} epochs (val loss {h.epochs[h.best_epoch - 1]['val_loss']:.2f} nats)")
    for name in ("report.html", "samples.png", "reconstructions.png", "interpolations.png", "run"):
        if (out / name).exists():
            print(f"  {out / name}")
    if not has_plots:
        print("  (no report.html: pip install matplotlib, or vaekit[report], to get the HTML report too)")
    return 0


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "reconstruct": cmd_reconstruct,
            "interpolate": cmd_interpolate, "evaluate": cmd_evaluate, "report": cmd_report, "export": cmd_export, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed
        return e.code if isinstance(e.code, int) else 2
    try:
        return COMMANDS[args.command](args)
    except VaekitError as e:
        if args.debug:
            raise
        print(f"vaekit: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # disk full, permission denied...: the environment, not a bug
        if args.debug:
            raise
        where = f" ({e.filename})" if e.filename else ""
        print(f"vaekit: error: {e.strerror or e}{where}; check the path, its permissions and free space",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        extra = "; checkpoints are kept: rerun with --resume to continue" if args.command == "train" else ""
        print(f"vaekit: interrupted; no output was published{extra}", file=sys.stderr)
        return 130
