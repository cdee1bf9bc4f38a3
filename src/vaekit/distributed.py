"""How a training step runs on the hardware at hand: one process or many (torch.distributed,
launched by torchrun), mixed precision, torch.compile.

Data parallelism: every process (rank) holds the same model and walks the same seeded
permutation of the training rows each epoch; step s takes the global batch of
`batch_size * world` rows and each rank the r-th of `world` near-equal parts of it.
DistributedDataParallel averages the gradients, and each rank's loss is scaled by
`world / global batch`, so N ranks at per-rank batch B take exactly the steps of one
process at batch N * B (up to float summation order), uneven last batch included (a last
remainder of fewer rows than ranks joins the batch before it).
Decisions that end or shape training (a non-finite loss, an improved validation score)
are agreed by all-reducing a flag, so no rank waits on a collective another has left.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from .errors import ConfigError, VaekitError


def env_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError("WORLD_SIZE, RANK and LOCAL_RANK must be integers; launch with torchrun") from None
    return rank, world, local


def is_main() -> bool:
    """True on rank 0, or without torch.distributed: the process that prints and writes."""
    return env_world()[0] == 0


@dataclass
class Group:
    rank: int = 0  # this process's rank among all processes
    world: int = 1  # how many processes train together
    owned: bool = False  # fit() started the process group, so fit() ends it
    device: torch.device = torch.device("cpu")  # where collective tensors live (NCCL needs CUDA)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def steps(self, n: int, batch_size: int) -> int:
        """Steps per epoch over n rows. With several ranks, a last remainder smaller than the
        world joins the batch before it, so no rank is ever left without a row."""
        size = batch_size * self.world
        if self.world == 1:
            return math.ceil(n / size)
        if n < self.world:
            raise ConfigError(f"{n} training rows cannot be shared by {self.world} ranks; use fewer ranks")
        return n // size + (1 if n % size >= self.world else 0)

    def shard(self, perm: torch.Tensor, step: int, batch_size: int) -> tuple[torch.Tensor, int]:
        """This rank's part of global batch `step` of `perm`, and the global batch's size."""
        size = batch_size * self.world
        end = (step + 1) * size
        if len(perm) - end < self.world:  # the remainder too small to share joins this batch
            end = len(perm)
        batch = perm[step * size:end]  # (about world * B,)
        if self.world == 1:
            return batch, len(batch)
        return torch.tensor_split(batch, self.world)[self.rank], len(batch)

    def split(self, idx: torch.Tensor) -> torch.Tensor:
        """Validation rows for this rank: every world-th one (all of them when there are too few)."""
        return idx[self.rank::self.world] if len(idx) >= self.world > 1 else idx

    def loss(self, bound: torch.Tensor, n_global: int) -> torch.Tensor:
        """The negative mean bound over the global batch, as this rank's share: DDP divides
        the summed gradients by `world`, so sum/n_global * world averages exactly."""
        if self.world == 1:
            return -bound.mean()
        return -bound.sum() * (self.world / n_global)

    def agree(self, flag: bool) -> bool:
        """True only if `flag` is True on every rank (a MIN all-reduce); every rank calls it."""
        if self.world == 1:
            return bool(flag)
        import torch.distributed as dist

        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())

    def anyone(self, flag: bool) -> bool:
        """True if `flag` is True on any rank."""
        return not self.agree(not flag)

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of `t` over the ranks (a new tensor on every rank)."""
        if self.world == 1:
            return t
        import torch.distributed as dist

        t = t.clone()
        dist.all_reduce(t)
        return t

    def mean(self, means: dict[str, float], n: int) -> dict[str, float]:
        """Per-rank means over n examples -> the means over all ranks' examples."""
        if self.world == 1:
            return means
        keys = sorted(means)
        t = torch.tensor([means[k] * n if n else 0.0 for k in keys] + [float(n)], dtype=torch.float64,
                         device=self.device)
        t = self.sum(t)
        return {k: float(v / t[-1]) for k, v in zip(keys, t[:-1])}

    def on_main(self, check: Callable[[], None]) -> None:
        """Run `check` on rank 0 only (e.g. the output folder, which may exist on rank 0's
        machine alone) and stop every rank if it raises: rank 0 with its error, the others
        with a pointer to it."""
        error = None
        if self.main:
            try:
                check()
            except VaekitError as e:
                error = e
        if not self.agree(error is None):
            self.close()
            if error is not None:
                raise error
            raise ConfigError("rank 0 refused to start (its error names the problem); fix it and launch again")

    def noise_generator(self, gen: torch.Generator, seed: int, device: torch.device) -> torch.Generator:
        """The generator for binarisation draws: `gen` itself in one process; with several,
        a per-rank one, so `gen` (the permutation) advances alike on every rank."""
        if self.world == 1:
            return gen
        return torch.Generator(device=device).manual_seed(seed * 1_000_003 + 7919 * (self.rank + 1))

    def close(self) -> None:
        if self.owned:
            import torch.distributed as dist

            if dist.is_initialized():
                # meet before tearing down: a rank that destroys its gloo group while a peer still
                # talks to it can abort that peer at exit ("terminate called without an active exception")
                try:
                    if dist.get_backend() == "gloo":
                        from datetime import timedelta

                        dist.monitored_barrier(timeout=timedelta(seconds=60))
                    else:
                        dist.barrier()
                except Exception:  # a peer is gone: nothing to wait for
                    pass
                dist.destroy_process_group()
            self.owned = False


def start(device: torch.device, amp: bool = False) -> tuple[Group, torch.device]:
    """Join the process group torchrun describes (WORLD_SIZE > 1), or run alone.

    GPU ranks use NCCL and `cuda:LOCAL_RANK` unless the device names an index; CPU ranks use
    gloo. MASTER_ADDR/MASTER_PORT come from torchrun (or the caller) as usual. `amp` is
    checked first, so a run that cannot work fails before it joins anything."""
    _check_amp(amp, device)
    rank, world, local = env_world()
    if world == 1:
        return Group(), device
    import torch.distributed as dist

    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owned = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        owned = True
    if dist.get_world_size() != world or dist.get_rank() != rank:
        raise ConfigError(f"the process group has {dist.get_world_size()} ranks (this is {dist.get_rank()}) but "
                          f"WORLD_SIZE={world}, RANK={rank}; launch with torchrun and leave them unset")
    group = Group(rank, world, owned, device if device.type == "cuda" else torch.device("cpu"))
    return group, device


def reseed(group: Group, seed: int) -> None:
    """Different sampling noise per rank (the same noise on every rank would correlate the
    gradient estimates); called after the model is built, so initial weights match."""
    if group.world > 1:
        torch.manual_seed(seed * 1_000_003 + group.rank + 1)


class _Step(nn.Module):
    """The objective as a module's forward: DDP prepares its gradient all-reduce in forward,
    and torch.compile compiles a forward. Holds the VAE, so its state stays unwrapped."""

    def __init__(self, model: nn.Module, fn: Callable[..., Any]):
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any):
        return self.fn(self.model, x, *args, **kwargs)


def training_step(model: nn.Module, fn: Callable[..., Any], group: Group, device: torch.device,
                  amp: bool = False, compile: bool = False) -> Callable[..., Any]:
    """`step(x, *args, **kwargs)` -> fn(model, x, *args, **kwargs), run through DDP (several
    ranks), bf16 autocast (`amp`: CUDA, or a CPU with native bf16) and torch.compile
    (`compile`) as asked; a plain call of `fn` when none is."""
    _check_amp(amp, device)
    if group.world == 1 and not amp and not compile:
        return lambda x, *args, **kwargs: fn(model, x, *args, **kwargs)
    step: nn.Module = _Step(model, fn)
    if group.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        step = DistributedDataParallel(step, device_ids=ids)
    if compile:
        step = torch.compile(step)
    if not amp:
        return step
    for net in (model.encoder, model.decoder):  # bf16 matmuls; distributions and losses stay float32
        if not getattr(net, "_vaekit_float_out", False):
            net.register_forward_hook(_to_float)
            net._vaekit_float_out = True

    def run(x: torch.Tensor, *args: Any, **kwargs: Any):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return step(x, *args, **kwargs)
    return run


def _check_amp(amp: bool, device: torch.device) -> None:
    if not amp:
        return
    if device.type == "cpu" and not cpu_bf16():
        raise ConfigError("--amp (bf16 mixed precision) on the CPU needs native bfloat16 instructions (AMX or "
                          "AVX512-BF16, e.g. Intel Xeon 4th generation or later), which this CPU lacks; drop --amp")
    if device.type not in ("cuda", "cpu"):
        raise ConfigError(f"--amp (bf16 mixed precision) runs on CUDA or a bf16-capable CPU, not {device}; drop --amp")
    if device.type == "cuda" and not _native_bf16(device):
        raise ConfigError(f"--amp uses bfloat16, which {torch.cuda.get_device_name(device)} lacks (it needs compute "
                          "capability 8.0+, e.g. A100, H100); drop --amp")


def cpu_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AMX tiles or AVX512-BF16): without them
    bf16 autocast is emulated and slower than float32."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(probe is not None and probe() for probe in probes)


def _native_bf16(device: torch.device) -> bool:
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch: no emulation to exclude
        return torch.cuda.is_bf16_supported()


def _to_float(module: nn.Module, args: Any, out: Any) -> Any:
    if isinstance(out, (tuple, list)):
        return type(out)(_to_float(module, args, o) for o in out)
    return out.float() if isinstance(out, torch.Tensor) else out  # a no-op outside autocast
