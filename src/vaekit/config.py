"""The one Config dataclass: every choice a run makes, validated, JSON round trip.

A Config (plus the data's shape, which `fit` records in it) rebuilds the model, so a saved
run is `config.json` + tensors and never a pickled class.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_type_hints

from .errors import ConfigError

Arch = Literal["mlp", "conv", "ladder", "hvae"]
LikelihoodName = Literal["auto", "bernoulli", "gaussian", "discretized-logistic", "mixed"]
Binarize = Literal["auto", "dynamic", "none"]
Objective = Literal["elbo", "iwae", "wae-mmd"]
PriorName = Literal["normal", "vamp", "mog"]
Kernel = Literal["imq", "rbf"]
Activation = Literal["relu", "tanh", "elu", "silu"]
LrSchedule = Literal["constant", "cosine"]
Layout = Literal["NCHW", "NHWC", "NHW"]


@dataclass
class Config:
    latent_dim: int = 16  # d, the number of independent normal latents per example (hvae: unused, its maps set it)
    arch: Arch = "mlp"  # encoder/decoder networks: MLP on flattened input, or conv for images
    hidden: list[int] = field(default_factory=lambda: [256, 256])  # MLP widths (encoder; decoder reversed)
    latent_dims: list[int] = field(default_factory=list)  # arch=ladder: stochastic layer sizes, bottom first
    ladder_hidden: list[int] = field(default_factory=lambda: [100, 100])  # arch=ladder: widths between layers
    channels: list[int] = field(default_factory=lambda: [32, 64])  # conv widths per stride-2 stage (hvae: per scale)
    groups: list[int] = field(default_factory=list)  # arch=hvae: latent groups per scale, finest first ([]: 1 each, 2 on top)
    latent_channels: int = 8  # arch=hvae: channels of each group's latent map z_l (its size is the scale's)
    cells: int = 1  # arch=hvae: residual cells per block, in both the bottom-up and the top-down pass
    activation: Activation = "relu"  # nonlinearity between layers
    likelihood: LikelihoodName = "auto"  # p(x|z); auto: Bernoulli on [0, 1], else Gaussian; discretized-logistic: 8-bit images
    binarize: Binarize = "auto"  # auto: dynamic binarisation when Bernoulli meets non-binary data
    objective: Objective = "elbo"  # training bound: ELBO, or the importance-weighted bound (IWAE)
    k: int = 1  # importance samples per example for the IWAE objective (1 = ELBO)
    dreg: bool = False  # IWAE: doubly reparameterised gradients (Tucker et al. 2019), lower-variance encoder updates
    beta: float = 1.0  # weight of the KL term; 1 is the plain VAE, >1 a beta-VAE
    kl_warmup: float = 0.0  # epochs over which the KL weight rises linearly from 0 to beta
    free_bits: float = 0.0  # nats per latent dim below which the KL is not penalised (0 = off)
    prior: PriorName = "normal"  # p(z): N(0, I), VampPrior, or a learned mixture of Gaussians
    prior_components: int = 0  # pseudo-inputs (vamp) or mixture components (mog); 0: 500 / 10
    mmd_kernel: Kernel = "imq"  # WAE-MMD kernel: inverse multiquadratic or RBF
    mmd_weight: float = 10.0  # WAE-MMD: lambda, the weight of the MMD penalty
    wae_deterministic: bool = True  # WAE-MMD: encode to z = mu(x) instead of sampling q(z|x)
    epochs: int = 30  # passes over the training data (upper bound with early stopping)
    batch_size: int = 128  # examples per gradient step
    lr: float = 1e-3  # Adam learning rate (peak value when a schedule is used)
    lr_schedule: LrSchedule = "constant"  # constant, or cosine decay to lr * lr_final per step
    lr_warmup: float = 0.0  # epochs of linear warm-up from 0 to lr (fractions allowed)
    lr_final: float = 0.01  # cosine schedule ends at lr * lr_final
    weight_decay: float = 0.0  # Adam L2 penalty
    grad_clip: float = 100.0  # max global gradient norm; 0 disables clipping
    grad_skip: float = 0.0  # skip the update when the gradient norm (before clipping) exceeds this; counted (0 = off)
    ema: float = 0.0  # decay of a moving average of the weights, e.g. 0.999; the average is what is saved (0 = off)
    val_fraction: float = 0.1  # share of training data held out for validation / early stopping
    patience: int = 10  # epochs without validation improvement before stopping; 0 disables
    val_nll_k: int = 0  # > 0: log the importance-sampled validation NLL with k samples each epoch
    seed: int = 0  # seeds the split, initialisation, batches and sampling (0 .. 2**63 - 1)
    device: str = "auto"  # auto | cpu | cuda | cuda:N (under torchrun, auto/cuda is cuda:LOCAL_RANK)
    amp: bool = False  # bf16 mixed precision (autocast) on CUDA or a CPU with AMX/AVX512-BF16; else an error
    compile: bool = False  # torch.compile the training step; saved weights stay unwrapped
    channels_last: bool = True  # conv/hvae: train in NHWC layout (faster convolutions); saved weights are NCHW
    progress: bool = True  # on stderr: a progress bar on a terminal, else one line per epoch; False: neither
    tensorboard: bool = False  # also write TensorBoard event files to <run>/tensorboard (needs out=)
    checkpoint_every: int = 1  # with an output folder: save the training state every N epochs (0 = off)
    checkpoint_minutes: float = 0.0  # also save it every M minutes, mid-epoch if need be (0 = off)
    skip_nonfinite: int = 0  # skip a batch whose loss or gradient is NaN/Inf, at most this many in a row (0 = stop)
    input_shape: list[int] | None = None  # shape of one example, recorded from the data by fit()
    data_layout: Layout = "NCHW"  # the training array's image layout; .npy outputs come back in it (NHW: no channel axis)
    condition_on: str | None = None  # conditional VAE: "labels" (class labels of the data), "columns" (tables)
    condition_dim: int = 0  # size of the condition vector c given to encoder and decoder; fit() records it
    condition_names: list[str] | None = None  # condition_on=labels: the class names, in one-hot order
    init_from: str | None = None  # the run whose weights training started from (--init-from), for the record

    def __post_init__(self) -> None:
        hints = get_type_hints(type(self))
        for f in dataclasses.fields(self):
            choices = get_args(hints[f.name])
            value = getattr(self, f.name)
            if choices and all(isinstance(c, str) for c in choices) and value not in choices:
                raise ConfigError(f"{f.name}={value!r} is not one of {', '.join(choices)}; pick one of those")
            if hints[f.name] is float and (isinstance(value, bool) or not isinstance(value, (int, float))
                                           or not math.isfinite(value)):
                raise ConfigError(f"{f.name}={value!r} must be a finite number")
        for name in INT_LISTS:
            _int_list(self, name)
        _positive_int(self, "latent_dim", "--latent-dim")
        _positive_int(self, "epochs", "--epochs", allow_zero=True)
        _positive_int(self, "batch_size", "--batch-size")
        _positive_int(self, "k", "--k")
        if self.input_shape is not None and (not self.input_shape or min(self.input_shape) < 1):
            raise ConfigError(f"input_shape={self.input_shape} must list positive sizes (fit records it from the data)")
        if not self.hidden or min(self.hidden) < 1:
            raise ConfigError(f"hidden={self.hidden} must list positive layer widths, e.g. [256, 256]")
        if self.arch == "ladder":
            if len(self.latent_dims) < 2 or min(self.latent_dims) < 1:
                raise ConfigError(f"arch=ladder needs two or more stochastic layer sizes, bottom first: "
                                  f"--latent-dims 100,50 (got {self.latent_dims})")
            if not self.ladder_hidden or min(self.ladder_hidden) < 1:
                raise ConfigError("ladder_hidden must list positive widths, e.g. --ladder-hidden 100,100")
            if self.prior != "normal":
                raise ConfigError("arch=ladder has its own hierarchical prior; drop --prior")
            self.latent_dim = sum(self.latent_dims)
        if not self.channels or min(self.channels) < 1:
            raise ConfigError(f"channels={self.channels} must list positive channel counts, e.g. [32, 64]")
        _positive_int(self, "latent_channels", "--latent-channels")
        _positive_int(self, "cells", "--cells", allow_zero=True)
        _positive_int(self, "patience", "--patience", allow_zero=True)
        if self.arch == "hvae":
            if not self.groups:  # one group per scale, two at the coarsest (hvae.default_groups)
                self.groups = [1] * (len(self.channels) - 1) + [2]
            if len(self.groups) != len(self.channels) or min(self.groups) < 0 or sum(self.groups) < 1:
                raise ConfigError(f"groups={self.groups} must give a stochastic group count >= 0 for each of the "
                                  f"{len(self.channels)} scales in --channels (at least one in all), e.g. "
                                  f"--groups {','.join(['1'] * len(self.channels))}")
            if self.prior != "normal":
                raise ConfigError("arch=hvae has its own hierarchical prior; drop --prior")
        if not (self.grad_skip >= 0 and 0 <= self.ema < 1):
            raise ConfigError(f"grad_skip={self.grad_skip} must be >= 0 and ema={self.ema} in [0, 1), e.g. "
                              "--grad-skip 400 --ema 0.999 (0 turns either off)")
        if not (self.lr > 0 and self.lr < 10):
            raise ConfigError(f"lr={self.lr} must be a positive learning rate such as 1e-3 (--lr)")
        if not self.beta >= 0:
            raise ConfigError(f"beta={self.beta} must be >= 0 (--beta); 1 is the plain VAE")
        if self.lr_warmup < 0 or not 0 <= self.lr_final <= 1:
            raise ConfigError("lr_warmup must be >= 0 epochs and lr_final in [0, 1] (--lr-warmup, --lr-final)")
        if isinstance(self.val_nll_k, bool) or not isinstance(self.val_nll_k, int) or self.val_nll_k < 0:
            raise ConfigError(f"val_nll_k={self.val_nll_k!r} must be an integer >= 0 (--val-nll-k; 0 = off)")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction={self.val_fraction} must be in [0, 1), e.g. 0.1")
        if self.patience < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ConfigError("patience, grad_clip and weight_decay must be >= 0 (0 disables them)")
        if self.kl_warmup < 0 or self.free_bits < 0 or self.mmd_weight < 0:
            raise ConfigError("kl_warmup, free_bits and mmd_weight must be >= 0 (--kl-warmup, --free-bits, --mmd-weight)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2 ** 63:
            raise ConfigError(f"seed={self.seed!r} must be an integer in 0 .. 2**63 - 1 (--seed), e.g. 0")
        if isinstance(self.prior_components, bool) or not isinstance(self.prior_components, int) \
                or self.prior_components < 0:
            raise ConfigError(f"prior_components={self.prior_components!r} must be an integer >= 0 (--pseudo-inputs)")
        if self.objective == "wae-mmd" and self.prior != "normal":
            raise ConfigError("--objective wae-mmd matches the encoded codes to N(0, I); use --prior normal")
        if self.dreg and self.objective != "iwae":
            raise ConfigError("dreg=True (--dreg) is a gradient estimator for the IWAE bound; add --objective iwae "
                              "--k 50, or drop --dreg")
        if self.objective != "iwae" and self.k != 1:
            raise ConfigError(f"k={self.k} only applies to --objective iwae; drop --k or add --objective iwae")
        if self.condition_on not in (None, "labels", "columns"):
            raise ConfigError(f"condition_on={self.condition_on!r} must be labels, columns or null (unconditional)")
        if isinstance(self.condition_dim, bool) or not isinstance(self.condition_dim, int) or self.condition_dim < 0:
            raise ConfigError(f"condition_dim={self.condition_dim!r} must be an integer >= 0")
        if self.condition_names is not None:
            self.condition_names = [str(n) for n in self.condition_names]
        if self.condition_on is not None or self.condition_dim:
            # the hierarchies and the VampPrior's pseudo-inputs have no slot for the condition
            clash = [f"--arch {self.arch}"] if self.arch in ("ladder", "hvae") else []
            clash += ["--prior vamp"] if self.prior == "vamp" else []
            if clash:
                raise ConfigError(f"a conditional VAE works with --arch mlp|conv and --prior normal|mog, not "
                                  f"{' and '.join(clash)}; change that or drop the condition")
        if not isinstance(self.tensorboard, bool):
            raise ConfigError(f"tensorboard={self.tensorboard!r} must be true or false (--tensorboard)")
        for name in ("checkpoint_every", "skip_nonfinite"):
            _positive_int(self, name, "--" + name.replace("_", "-"), allow_zero=True)
        if self.checkpoint_minutes < 0:
            raise ConfigError(f"checkpoint_minutes={self.checkpoint_minutes} must be >= 0 "
                              "(--checkpoint-minutes; 0 = off)")
        for name in ("amp", "compile", "channels_last", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be true or false")
        dev = self.device
        if not isinstance(dev, str) or not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise ConfigError(f"device={dev!r} is not auto, cpu, cuda or cuda:N")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        if not isinstance(d, dict):
            raise ConfigError("a config must be a JSON object of field: value")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown config field(s) {unknown}; known fields: {sorted(names)}")
        try:
            return cls(**d)
        except ConfigError:
            raise
        except (TypeError, ValueError, AttributeError) as e:  # e.g. a list where a number belongs
            raise ConfigError(f"config has a value of the wrong type: {e}; fix it in the JSON") from None

    @classmethod
    def from_json(cls, text: str) -> "Config":
        try:
            d = read_json(text)
        except ValueError as e:  # not JSON, or a key given twice
            raise ConfigError(f"config is not valid JSON ({e}); rewrite it or train again") from None
        return cls.from_dict(d)

    @classmethod
    def preset(cls, name: str, **changes: Any) -> "Config":
        """A named preset (`PRESETS`), with `changes` overriding its fields."""
        return cls.from_dict({**preset(name), **changes})

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **changes)


# Recommended settings, by name: `vaekit train --preset NAME`, `Config.preset(NAME, **changes)`.
# Given fields (a --config file, flags, `changes`) override the preset's.
PRESETS: dict[str, dict[str, Any]] = {
    # MNIST 28x28 (any binary or [0, 1] image works): the hierarchical conv VAE with the stabilisers
    # that make it train (KL warm-up, lr warm-up + cosine, gradient skipping, weight averaging).
    # Sizes and budget: docs/benchmarks.md, "Hierarchical conv VAE".
    "mnist": dict(arch="hvae", channels=[32, 64], groups=[1, 3], latent_channels=8, cells=1, activation="silu",
                  epochs=100, batch_size=64, lr=2e-3, lr_schedule="cosine", lr_warmup=1.0, lr_final=0.01,
                  kl_warmup=10.0, ema=0.999, grad_clip=200.0, grad_skip=10000.0, patience=0, val_fraction=0.05,
                  checkpoint_minutes=10.0),
}


_ARCH_COMMON = ("arch", "input_shape", "condition_dim", "activation", "likelihood", "prior")
_ARCH_OWN = {"mlp": ("latent_dim", "hidden"), "conv": ("latent_dim", "channels"),
             "ladder": ("latent_dims", "hidden", "ladder_hidden"),
             "hvae": ("channels", "groups", "latent_channels", "cells")}
_MIXTURE = ("prior_components",)  # the learned priors' size (vamp, mog)
# every field that architecture() may name, over all archs and priors
ARCH_FIELDS = tuple(dict.fromkeys([*_ARCH_COMMON, *(f for own in _ARCH_OWN.values() for f in own), *_MIXTURE]))


def architecture(config: Config) -> dict[str, Any]:
    """The fields that decide what a model of `config`'s arch is (its networks' shapes and what
    they compute, its prior and likelihood, its input); all other fields say how it is trained.
    Two configs with equal architectures describe models whose weights are interchangeable."""
    names = [*_ARCH_COMMON, *_ARCH_OWN[config.arch], *(_MIXTURE if config.prior in ("vamp", "mog") else ())]
    return {name: getattr(config, name) for name in names}


def check_training(config: Config) -> None:
    """Refuse settings the training would ignore or cannot honour. Checked when training starts
    (`fit`), not in `Config.__post_init__`: a run saved before a check existed still loads."""
    if config.objective == "wae-mmd" and (config.beta != 1 or config.kl_warmup or config.free_bits):
        # its objective has no KL term for these to weigh: they would be ignored
        raise ConfigError(f"beta={config.beta}, kl_warmup={config.kl_warmup}, free_bits={config.free_bits}: these weigh "
                          "a KL term, which --objective wae-mmd has not; pass --beta 1 --kl-warmup 0 --free-bits 0 "
                          "(a preset sets a warm-up; --mmd-weight sets the penalty's weight)")
    if config.objective == "wae-mmd" and config.batch_size < 2:  # one code per batch: its MMD would be left out
        raise ConfigError("--objective wae-mmd compares each batch's codes with prior draws by an MMD, which needs "
                          f"2 or more of them: batch_size={config.batch_size}; pass --batch-size 64 or so")
    if config.objective == "iwae" and config.free_bits:
        raise ConfigError("--free-bits needs the KL per latent dim, which the IWAE bound does not split into; "
                          "drop it, or use --objective elbo (--beta and --kl-warmup do apply to iwae)")
    if config.val_nll_k and not config.val_fraction:
        raise ConfigError(f"val_nll_k={config.val_nll_k} scores the validation set, and val_fraction=0 holds none "
                          "out; pass --val-fraction 0.1, or drop --val-nll-k")
    if config.objective == "iwae" and config.k == 1:  # Config's k defaults to 1, for the other objectives
        raise ConfigError("objective='iwae' with k=1 trains the ELBO, not an importance-weighted bound; pass k=5 "
                          "(vaekit train's default for --objective iwae) or more, or objective='elbo'")


def unused(config: Config, names: list[str]) -> dict[str, str]:
    """Of the fields `names`, those `config` would ignore (another arch, objective, prior or lr
    schedule uses them), each with what it applies to: a flag given for such a field is refused
    rather than accepted and ignored. Fields used by every run are never named."""
    arch, wae = config.arch, config.objective == "wae-mmd"
    uses = {"latent_dim": (arch in ("mlp", "conv"), "--arch mlp or conv (ladder: --latent-dims; hvae: --groups "
                           "and --latent-channels, with the image size)"),
            "hidden": (arch in ("mlp", "ladder"), "--arch mlp or ladder"),
            "latent_dims": (arch == "ladder", "--arch ladder"), "ladder_hidden": (arch == "ladder", "--arch ladder"),
            "channels": (arch in ("conv", "hvae"), "--arch conv or hvae"),
            **{f: (arch == "hvae", "--arch hvae") for f in ("groups", "latent_channels", "cells")},
            **{f: (wae, "--objective wae-mmd") for f in ("mmd_kernel", "mmd_weight", "wae_deterministic")},
            "prior_components": (config.prior in ("vamp", "mog"), "--prior vamp or mog"),
            "lr_final": (config.lr_schedule == "cosine", "--lr-schedule cosine")}
    return {n: uses[n][1] for n in names if n in uses and not uses[n][0]}


def read_json(text: str) -> Any:
    """json.loads, refusing an object that names a key twice (json keeps the last silently:
    `{"epochs": 5, ..., "epochs": 500}` would train for 500 without a word). ValueError."""
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if twice := sorted({k for k in keys if keys.count(k) > 1}):
            raise ValueError(f"key(s) {twice} given more than once; keep one of each")
        return dict(pairs)
    try:
        return json.loads(text, object_pairs_hook=unique)
    except RecursionError:  # [[[[...]]]] deeper than Python's stack: not a config, and no traceback
        raise ValueError("JSON nested too deeply (thousands of brackets)") from None


def preset(name: str) -> dict[str, Any]:
    """The Config fields of a named preset (a fresh copy)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; pick one of {', '.join(PRESETS)}")
    return json.loads(json.dumps(PRESETS[name]))


INT_LISTS = ("hidden", "channels", "latent_dims", "ladder_hidden", "groups", "input_shape")


def _int_list(cfg: Config, name: str) -> None:
    """A list of whole numbers, made ints: a string ("16" would be read as [1, 6]), a bool or a
    fraction is refused, never truncated."""
    value = getattr(cfg, name)
    if value is None and name == "input_shape":
        return
    if not isinstance(value, (list, tuple)) or any(
            isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v != int(v)
            for v in value):
        raise ConfigError(f"{name}={value!r} has the wrong type: it must be a list of integers, e.g. [256, 256]")
    setattr(cfg, name, [int(v) for v in value])


def _positive_int(cfg: Config, name: str, flag: str, allow_zero: bool = False) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}={value!r} must be an integer ({flag})")
    if value < (0 if allow_zero else 1):
        bound = ">= 0" if allow_zero else ">= 1"
        raise ConfigError(f"{name}={value} must be {bound}; pass e.g. {flag} {16 if name == 'latent_dim' else 10}")
