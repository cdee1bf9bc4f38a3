"""Training throughput, side by side in one process on the same data in memory:

  (a) vaekit's fit(): the whole call for one epoch (setup included: data checks, split, model)
      and, separately, its steady state (the second epoch of a 2-epoch fit, timed by fit)
  (b) a bare hand-written PyTorch loop of the same model (the pytorch/examples VAE loop)
  (c) pythae's TrainingPipeline with the same encoder/decoder (pip install pythae)
  (d) references: the bare loop with fused Adam, and a "step" of nothing but the model's
      matrix products (its rate is the ceiling on the fraction of the mm rate at this batch)

for the pytorch/examples model (784-400-20, relu, batch 128) and the IWAE-paper model
(784-200-200-50, tanh, batch 20 and 128), Bernoulli likelihood on grey-level MNIST (the
cross-entropy of pytorch/examples), Adam lr 1e-3. Also measures the machine's 2048 x 2048
float32 `torch.mm` rate in the same run and reports vaekit's achieved FLOP rate as a fraction.

    python benchmarks/train_speed.py                 # full: 1 epoch of 60,000 examples per run
    python benchmarks/train_speed.py --quick         # seconds: 3,000 examples, no pythae
    python benchmarks/train_speed.py --compile       # also fit(compile=True), its steady epoch
    python benchmarks/train_speed.py --amp           # also fit(amp=True, compile=True): bf16 steps
                                                     # (a CPU with AMX / AVX512-BF16, or CUDA)

Rounds alternate the runners and keep each one's best, because these machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date

import torch
import torch.nn.functional as F
from torch import nn

import vaekit

from eval_speed import mm_rate

MODELS = {  # name: (hidden widths, latent dim, activation)
    "examples-784-400-20": ([400], 20, "relu"),
    "iwae-784-200-200-50": ([200, 200], 50, "tanh"),
}


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def train_flops(hidden: list[int], d: int) -> float:
    """Matmul FLOPs per training example: forward (encoder + decoder) times 3 for backward.
    The usual convention (6 per weight), the one issue 10 states its fractions in. It counts the
    first layer's input gradient, which autograd skips (the data needs none): by FLOPs executed,
    a fraction is 1 - 2 * 784 * hidden[0] / train_flops of the printed one (0.84 for 784-400-20,
    0.88 for 784-200-200-50)."""
    widths = [784, *hidden]
    enc = sum(a * b for a, b in zip(widths[:-1], widths[1:])) + widths[-1] * 2 * d
    dec = sum(a * b for a, b in zip([d, *hidden[::-1]], [*hidden[::-1], 784]))
    return 3 * 2 * (enc + dec)


def mlp(sizes: list[int], act: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU() if act == "relu" else nn.Tanh())
    return nn.Sequential(*layers)


def run_bare(x: torch.Tensor, hidden, d, act, batch: int, fused: bool = False) -> float:
    """The loop every user could write: pytorch/examples' VAE, generalised to these widths.
    With `fused`, the same loop with Adam(fused=True), which vaekit uses (on CPU, torch's
    default Adam is a Python loop over the parameters)."""
    torch.manual_seed(0)
    enc, dec = mlp([784, *hidden, 2 * d], act), mlp([d, *hidden[::-1], 784], act)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3, fused=fused or None)
    flat = x.reshape(len(x), -1)

    def epoch():
        perm = torch.randperm(len(flat))
        for i in range(0, len(flat), batch):
            xb = flat[perm[i:i + batch]]
            mu, logvar = enc(xb).chunk(2, -1)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            logits = dec(z)
            bce = F.binary_cross_entropy_with_logits(logits, xb, reduction="sum")
            kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            loss = (bce + kld) / len(xb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return len(x) / _timed(epoch)


def run_bare_fused(x: torch.Tensor, hidden, d, act, batch: int) -> float:
    return run_bare(x, hidden, d, act, batch, fused=True)


def run_gemm_only(x: torch.Tensor, hidden, d, act, batch: int) -> float:
    """The ceiling: a training step made of nothing but the model's matrix products, in the
    shapes and layouts nn.Linear's forward and backward use (addmm with the weight transposed;
    grad_x = g @ W, skipped for the first layer as autograd skips it; grad_W = g.t() @ x).
    No activations, sampling, loss or optimiser. Its rate bounds what any framework's step
    can reach with these GEMM kernels at this batch, whatever it fuses."""
    torch.manual_seed(0)
    widths = [(a, b) for a, b in zip([784, *hidden], [*hidden, 2 * d])]  # encoder (in, out)
    widths += [(a, b) for a, b in zip([d, *hidden[::-1]], [*hidden[::-1], 784])]  # decoder
    layers = [(torch.randn(o, i) * 0.01, torch.zeros(o)) for i, o in widths]
    acts = [torch.randn(batch, i) for i, _ in widths]  # each layer's input (B, in)
    grads = [torch.randn(batch, o) for _, o in widths]  # each layer's output gradient (B, out)

    def epoch():
        for _ in range(0, len(x), batch):
            for (w, b), a in zip(layers, acts):
                torch.addmm(b, a, w.t())  # forward: (B, out)
            for j, ((w, _), a, g) in enumerate(zip(layers, acts, grads)):
                if j:  # the data needs no gradient; z does (it carries the decoder's to the encoder)
                    g @ w  # grad_x (B, in)
                g.t() @ a  # grad_W (out, in)
    return len(x) / _timed(epoch)


def run_vaekit(x: torch.Tensor, hidden, d, act, batch: int) -> float:
    config = vaekit.Config(latent_dim=d, hidden=hidden, activation=act, likelihood="bernoulli", binarize="none",
                           epochs=1, batch_size=batch, val_fraction=0.0, patience=0, progress=False, device="cpu")
    return len(x) / _timed(lambda: vaekit.fit(x, config))


def run_vaekit_epoch(x: torch.Tensor, hidden, d, act, batch: int, compile: bool = False, amp: bool = False) -> float:
    """fit()'s steady state: its second epoch as timed by fit itself (batches, optimiser,
    per-epoch bookkeeping), without the one-off setup the bare loop's timing also leaves out.
    With `compile`, the step is torch.compiled (`--compile`); the first epoch pays for that."""
    config = vaekit.Config(latent_dim=d, hidden=hidden, activation=act, likelihood="bernoulli", binarize="none",
                           epochs=2, batch_size=batch, val_fraction=0.0, patience=0, progress=False, device="cpu",
                           compile=compile, amp=amp)
    return len(x) / vaekit.fit(x, config).history.epochs[1]["seconds"]


def run_vaekit_compiled_epoch(x: torch.Tensor, hidden, d, act, batch: int) -> float:
    return run_vaekit_epoch(x, hidden, d, act, batch, compile=True)


def run_vaekit_amp_compiled_epoch(x: torch.Tensor, hidden, d, act, batch: int) -> float:
    return run_vaekit_epoch(x, hidden, d, act, batch, compile=True, amp=True)


def run_pythae(x: torch.Tensor, hidden, d, act, batch: int) -> float:
    import logging

    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig

    logging.getLogger("pythae").setLevel(logging.ERROR)

    class Enc(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = mlp([784, *hidden, 2 * d], act)

        def forward(self, x):
            mu, logvar = self.net(x.reshape(len(x), -1)).chunk(2, -1)
            return ModelOutput(embedding=mu, log_covariance=logvar)

    class Dec(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = mlp([d, *hidden[::-1], 784], act)

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)).reshape(-1, 1, 28, 28))

    model = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=d, reconstruction_loss="bce"), encoder=Enc(), decoder=Dec())
    cfg = BaseTrainerConfig(output_dir="bench-out/pythae", num_epochs=1, per_device_train_batch_size=batch,
                            learning_rate=1e-3, no_cuda=True, steps_saving=None, steps_predict=None)
    pipe = TrainingPipeline(model=model, training_config=cfg)
    return len(x) / _timed(lambda: pipe(train_data=x, eval_data=None))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--n", type=int, default=60000, help="training examples per run (one epoch)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="3,000 examples, one round, no pythae (CI guard)")
    p.add_argument("--no-pythae", action="store_true")
    p.add_argument("--compile", action="store_true", help="also time fit(compile=True)'s steady epoch "
                   "(its first epoch compiles: tens of seconds on CPU)")
    p.add_argument("--amp", action="store_true", help="also time fit(amp=True, compile=True)'s steady epoch: "
                   "bf16 autocast, float32 weights and optimiser (needs AMX / AVX512-BF16 on a CPU)")
    args = p.parse_args()
    if args.quick:
        args.n, args.rounds, args.no_pythae = 3000, 1, True
    try:
        x = vaekit.load_data("mnist", "train", args.data_dir).x[:args.n]
    except vaekit.errors.VaekitError:
        x = torch.rand(args.n, 1, 28, 28)  # same shapes and arithmetic without the files
    runners = {"vaekit": run_vaekit, "vaekit_epoch": run_vaekit_epoch, "bare": run_bare,
               "bare_fused_adam": run_bare_fused, "gemm_only": run_gemm_only}
    if args.compile:
        runners["vaekit_compiled_epoch"] = run_vaekit_compiled_epoch
    if args.amp:
        runners["vaekit_amp_compiled_epoch"] = run_vaekit_amp_compiled_epoch
    if not args.no_pythae:
        runners["pythae"] = run_pythae
    for fn in runners.values():  # warm-up: first-call imports and allocations are not timed
        fn(x[:256], [16], 2, "relu", 128)
    rate = mm_rate()
    rows = []
    for name, (hidden, d, act) in MODELS.items():
        for batch in ((128,) if name.startswith("examples") else (20, 128)):
            best = {r: 0.0 for r in runners}
            for _ in range(args.rounds):
                for r, fn in runners.items():
                    best[r] = max(best[r], fn(x, hidden, d, act, batch))
            per_example = train_flops(hidden, d)
            row = {"model": name, "batch": batch, **{f"{r}_ex_per_s": round(v) for r, v in best.items()},
                   "vaekit_vs_bare": round(best["vaekit"] / best["bare"], 3),
                   "vaekit_epoch_vs_bare": round(best["vaekit_epoch"] / best["bare"], 3),
                   "vaekit_epoch_vs_bare_fused_adam": round(best["vaekit_epoch"] / best["bare_fused_adam"], 3),
                   "vaekit_fraction_of_mm": round(best["vaekit"] * per_example / rate, 3),
                   "bare_fraction_of_mm": round(best["bare"] * per_example / rate, 3),
                   # the most any step of these GEMMs can reach: the target's ceiling at this batch
                   "gemm_only_fraction_of_mm": round(best["gemm_only"] * per_example / rate, 3)}
            if "vaekit_compiled_epoch" in best:
                row["vaekit_compiled_epoch_vs_bare"] = round(best["vaekit_compiled_epoch"] / best["bare"], 3)
            if "vaekit_amp_compiled_epoch" in best:
                row["vaekit_amp_compiled_epoch_vs_bare"] = round(best["vaekit_amp_compiled_epoch"] / best["bare"], 3)
                row["vaekit_amp_compiled_fraction_of_mm"] = round(best["vaekit_amp_compiled_epoch"]
                                                                  * per_example / rate, 3)
            if "pythae" in best:
                row["vaekit_vs_pythae"] = round(best["vaekit"] / best["pythae"], 3)
                row["vaekit_epoch_vs_pythae"] = round(best["vaekit_epoch"] / best["pythae"], 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(json.dumps({"date": date.today().isoformat(), "mm_gflops": round(rate / 1e9, 1), "n": args.n,
                      "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "machine": platform.machine(),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
