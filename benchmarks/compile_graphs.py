"""The compiled training step with and without `objectives.resolve_kl` (torch's KL lookup done
once, eagerly, before compiling), timed side by side in one process: both steps are built and
compiled first, then blocks of steps alternate, and the median ratio of paired blocks is
printed (robust on a noisy shared machine). `--profile` also prints the compiled step's
operators with their input shapes (where its time goes: the GEMMs, the optimiser, the rest).

    PYTHONPATH=src python benchmarks/compile_graphs.py [--model examples|iwae] [--pairs 30] [--profile]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import vaekit
from vaekit import distributed
from vaekit.model import VAE
from vaekit.objectives import resolve_kl
from vaekit.stabilise import gradient_norm
from vaekit.train import objective

MODELS = {"examples": ([400], 20, "relu"), "iwae": ([200, 200], 50, "tanh")}  # widths, latent dim, activation


class _One:  # a single process: no data parallelism
    world = 1


def compiled_step(config: vaekit.Config, x: torch.Tensor, resolve: bool):
    """run(n): n steps of fit()'s inner loop (compiled forward and backward, the finiteness and
    gradient-norm read, fused Adam) on batches of x; the model built and compiled here."""
    torch.manual_seed(0)
    model = VAE.from_config(config)
    if resolve:
        resolve_kl(model, x[:2])
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=1e-3, fused=True)
    step = distributed.training_step(model, lambda m, xb, beta, c=None: objective(m, xb, config, beta=beta, c=c),
                                     _One, torch.device("cpu"), compile=True)
    batches = len(x) // config.batch_size

    def run(n: int) -> None:
        for i in range(n):
            xb = x[(i % batches) * config.batch_size:(i % batches + 1) * config.batch_size]  # (B, *shape)
            loss = -step(xb, 1.0).bound.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.stack([torch.isfinite(loss.detach()).float(), gradient_norm(params)]).tolist()
            opt.step()
    run(3)  # the compile happens here, untimed
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=list(MODELS), default="examples")
    p.add_argument("--pairs", type=int, default=30)
    p.add_argument("--steps", type=int, default=20, help="steps per timed block")
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(2)
    hidden, d, act = MODELS[args.model]
    config = vaekit.Config(latent_dim=d, hidden=hidden, activation=act, likelihood="bernoulli", binarize="none",
                           batch_size=128, input_shape=[1, 28, 28], compile=True)
    x = (torch.rand(128 * 20, 1, 28, 28, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    runs = {"split": compiled_step(config, x, False), "one_graph": compiled_step(config, x, True)}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(args.pairs):
        for name in (list(runs) if i % 2 else list(runs)[::-1]):  # alternate which goes first
            t = time.perf_counter()
            runs[name](args.steps)
            seconds[name].append((time.perf_counter() - t) / args.steps)
    for name, v in seconds.items():
        print(f"{args.model} {name}: best {1e3 * min(v):.3f} ms/step, median {1e3 * statistics.median(v):.3f}")
    ratio = statistics.median(a / b for a, b in zip(seconds["split"], seconds["one_graph"]))
    print(f"median paired ratio split / one graph: {ratio:.3f}")
    if args.profile:
        from torch.profiler import profile

        with profile(record_shapes=True) as prof:
            runs["one_graph"](20)
        print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=15,
                                                                  max_name_column_width=30,
                                                                  max_shapes_column_width=60))


if __name__ == "__main__":
    main()
