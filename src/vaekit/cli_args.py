"""The command line's grammar: every subcommand and flag of `vaekit`, with its help text, and
which train flags map onto Config fields. cli.py runs the commands; this file only parses,
so `vaekit --help` imports nothing heavy.
"""

from __future__ import annotations

import argparse
import difflib
import re

from . import __version__


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 256,256") from None


def seed(text: str) -> int:
    """A seed torch and numpy both take: an integer in 0 .. 2**63 - 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer, e.g. --seed 0") from None
    if not 0 <= value < 2 ** 63:
        raise argparse.ArgumentTypeError(f"{value} is outside 0 .. 2**63 - 1; pick one in that range, e.g. --seed 0")
    return value


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
        self.exit(2, f"vaekit: error: {where + ': ' if where else ''}{message}{did_you_mean(message)}; "
                     f"see {self.prog} --help\n")


def did_you_mean(message: str) -> str:
    """'; did you mean train?' for a mistyped command or choice (argparse's 'invalid choice')."""
    got = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if got is None:
        return ""
    choices = re.findall(r"'([^']*)'", got.group(2))
    close = difflib.get_close_matches(got.group(1), choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vaekit", description="Learn a VAE from your data and generate more like it.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"vaekit {__version__}")
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
    t.add_argument("--likelihood", choices=["auto", "bernoulli", "gaussian", "discretized-logistic"])
    t.add_argument("--binarize", choices=["auto", "dynamic", "none"])
    t.add_argument("--objective", choices=["elbo", "iwae", "wae-mmd"])
    t.add_argument("--k", type=int, help="importance samples for --objective iwae")
    t.add_argument("--dreg", action="store_true", default=None,
                   help="--objective iwae: doubly reparameterised gradients (lower-variance encoder updates)")
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
    t.add_argument("--seed", type=seed)
    t.add_argument("--device", help="auto | cpu | cuda | cuda:N (torchrun: auto = cuda:LOCAL_RANK)")
    t.add_argument("--amp", action="store_true", default=None, help="bf16 mixed precision (CUDA, or a CPU with AMX / AVX512-BF16)")
    t.add_argument("--compile", action="store_true", default=None, help="torch.compile the training step")
    t.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="conv/hvae models: train in NHWC layout (default on: faster convolutions)")
    t.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                   help="read a .npy (memory-mapped) or image folder batch by batch instead of into memory "
                        "(default: stream a .npy or image folder larger than 1 GiB as float32); tables: read the file in chunks "
                        "and train from an encoded copy on disk (default: a table file larger than 256 MiB)")
    t.add_argument("--no-progress", action="store_true",
                   help="quiet training: no progress bar and no per-epoch lines (metrics.jsonl keeps every epoch)")
    t.add_argument("--column-kind", action="append", metavar="COL=KIND",
                   help="tables: override a column's kind (continuous, integer, boolean, categorical, datetime)")
    t.add_argument("--condition-columns", help="tables: comma-separated columns to condition on (a conditional VAE)")
    t.add_argument("--missing", action="append", metavar="TEXT",
                   help="tables: cells holding TEXT are gaps, like blank cells (e.g. --missing '?'; repeat for more); "
                        "the run reads later files the same way and writes its gaps back as the first TEXT")
    t.add_argument("--decimal", choices=[".", ","],
                   help="tables: the CSV's decimal mark (default '.'; ',' for 0,75, usually with ';' between fields); "
                        "the run reads later files the same way and writes CSVs with ',' and ';'")
    t.add_argument("--encoding", choices=["quantile", "gmm"],
                   help="tables: numeric columns by quantile transform (default) or Gaussian-mixture modes")
    t.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files to RUN/tensorboard")
    t.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from the latest checkpoint in OUT.partial/checkpoints")
    t.add_argument("--checkpoint-every", type=int, metavar="EPOCHS",
                   help="save the training state every EPOCHS epochs (default 1; 0 = off)")
    t.add_argument("--checkpoint-minutes", type=float, metavar="M",
                   help="also save it every M minutes, mid-epoch if need be (default off)")
    t.add_argument("--init-from", metavar="RUN",
                   help="start from this trained run's weights instead of a fresh model (e.g. --objective iwae "
                        "after ELBO training, or more data); its architecture is kept, the training settings are "
                        "this command's")
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
    s.add_argument("--seed", type=seed, default=0)
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

    v = sub.add_parser("traverse", help="vary one latent dimension at a time from an input's posterior mean")
    v.add_argument("run", metavar="RUN")
    _data_args(v, "test")
    v.add_argument("-o", "--output", required=True, help=".png (one row per dimension) or .npy (dims, steps, ...)")
    v.add_argument("--dims", type=int, nargs="+", help="latent dimensions to walk (default: the --top most active, "
                   "ranked by the spread of the posterior means over the first -n examples)")
    v.add_argument("--top", type=int, default=6, help="how many dimensions without --dims (default 6)")
    v.add_argument("--index", type=int, default=0, help="which example to start from (default 0)")
    v.add_argument("-n", type=int, default=1000, help="examples read, for the ranking (default 1000)")
    v.add_argument("--span", type=float, default=3.0, help="walk the coordinate from -SPAN to SPAN (default 3)")
    v.add_argument("--steps", type=int, default=9)
    v.add_argument("--device", default="auto")
    v.add_argument("--force", action="store_true", help="overwrite an existing output file")

    e = sub.add_parser("evaluate", help="importance-sampled log-likelihood, ELBO terms, active units")
    e.add_argument("run", metavar="RUN")
    _data_args(e, "test")
    e.add_argument("--k", type=int, default=1000, help="importance samples per example (default 1000)")
    e.add_argument("-n", type=int, help="use only the first N examples (a table file over 256 MiB: N rows sampled "
                   "uniformly, default 100,000)")
    e.add_argument("--batch-size", type=int, default=100)
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--rows", type=int, help="tables: synthetic rows to score (default: as many as DATA has)")
    e.add_argument("--compile", action="store_true", help="torch.compile the estimator (faster for large N x k)")
    e.add_argument("--seed", type=seed, default=0)
    e.add_argument("--device", default="auto")

    rp = sub.add_parser("report", help="one self-contained HTML file: curves, samples, latent space, evaluation")
    rp.add_argument("run", metavar="RUN")
    rp.add_argument("data", metavar="DATA", nargs="?",
                    help="digits | mnist | path to .npy/.npz or an image folder (optional: adds the data's pictures); "
                         "for a table run, the real .csv/.parquet (needed)")
    rp.add_argument("--data-dir", help="folder of the MNIST *-ubyte.gz files (DATA = mnist)")
    rp.add_argument("--sep", help="tables: CSV separator (default: sniffed from the header, ',', ';' or tab)")
    rp.add_argument("--split", default="test", choices=["train", "test", "all"],
                    help="part of digits/mnist (default test)")
    rp.add_argument("-o", "--output", required=True, help="the .html file to write")
    rp.add_argument("--k", type=int, default=100, help="importance samples for the evaluation (default 100)")
    rp.add_argument("-n", type=int, default=1000, help="examples used, from the start (default 1000)")
    rp.add_argument("--seed", type=seed, default=0)
    rp.add_argument("--device", default="auto")
    rp.add_argument("--force", action="store_true", help="overwrite an existing output file")

    x = sub.add_parser("export", help="write the decoder (and encoder) as ONNX, checked with onnxruntime")
    x.add_argument("run", metavar="RUN")
    x.add_argument("--onnx", required=True, help="decoder file: z (B, d) -> mean of p(x|z) (B, *shape)")
    x.add_argument("--encoder", help="also the encoder: x (B, *shape) -> mu, sigma of q(z|x), each (B, d)")
    x.add_argument("--force", action="store_true", help="overwrite existing .onnx files")

    sn = sub.add_parser("snapshot", help="save the model of a run still training (its latest checkpoint) as a run "
                        "folder, to evaluate, sample or report it meanwhile")
    sn.add_argument("run", metavar="RUN", help="the training's --out (or its .partial folder)")
    sn.add_argument("-o", "--output", required=True, help="the model folder to write")
    sn.add_argument("--force", action="store_true", help="replace an existing folder at --output")

    d = sub.add_parser("demo", help="train on digits in seconds; write samples, reconstructions, interpolations, "
                                    "traversals, a report and the run into one folder")
    d.add_argument("--out", default="vaekit-demo", help="folder for the demo (default vaekit-demo)")
    d.add_argument("--epochs", type=int, default=80, help="training epochs at most (default 80)")
    d.add_argument("--force", action="store_true", help="replace a non-demo folder at --out")

    h = sub.add_parser("help", help="show the options of a command: vaekit help train")
    h.add_argument("topic", metavar="COMMAND", nargs="?", choices=sorted(sub.choices), help="the command")
    for command in sub.choices.values():  # `vaekit sample ... --debug` as well as `vaekit --debug sample ...`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show tracebacks on errors")
    return parser


TRAIN_FLAGS = ("epochs", "latent_dim", "arch", "latent_dims", "ladder_hidden", "hidden", "channels", "groups",
               "latent_channels", "cells", "grad_skip", "ema", "activation", "likelihood", "binarize",
               "objective", "k", "dreg", "beta", "kl_warmup", "free_bits", "prior", "prior_components", "mmd_kernel",
               "mmd_weight", "batch_size", "lr", "lr_schedule", "lr_warmup", "lr_final", "val_nll_k",
               "patience", "val_fraction", "grad_clip", "seed", "device", "checkpoint_every", "checkpoint_minutes",
               "skip_nonfinite", "condition_on", "amp", "compile", "channels_last")
