"""ONNX export of a trained model, for serving where PyTorch is not.

    decoder.onnx   z (B, d) -> mean (B, *shape)          the mean of p(x|z)
    encoder.onnx   x (B, *shape) -> mu (B, d), sigma (B, d)   q(z|x) = N(mu, diag sigma^2)

A conditional model (one with `condition_dim` > 0) takes its condition c (B, C) as a second
input, named "c", in both graphs.

For a Bernoulli likelihood the mean is the probabilities, for a Gaussian the mean in data
units. The batch axis is dynamic. Each graph is run by onnxruntime on a test batch and
compared with PyTorch before it is written (atomically); a mismatch writes nothing.
torch.onnx's TorchScript exporter is used (dynamo=False): it needs only `onnx`, while the
torch.export-based default of torch >= 2.9 also needs `onnxscript`.
"""

from __future__ import annotations

import copy
import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoint import check_output_path, write_atomic
from .errors import ConfigError, IncompatibleError

OPSET = 17  # widely served (onnxruntime >= 1.13)
CHECK_ATOL = 1e-4  # onnxruntime vs PyTorch, float32, on a batch of unit-scale inputs
CHECK_BATCH = 7


class DecoderMean(nn.Module):
    """z (B, d) -> the mean of p(x|z), (B, *shape)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor, *c: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z, *c).mean


class EncoderParams(nn.Module):
    """x (B, *shape) -> (mu, sigma) of q(z|x), each (B, d)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, *c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.model.encode(x, *c)
        return q.mean, q.stddev


def _require_onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise ConfigError("ONNX export needs onnx and onnxruntime: pip install 'vaekit[export]'") from None
    return onnx, onnxruntime


def onnx_bytes(module: nn.Module, example: tuple[torch.Tensor, ...], inputs: list[str], outputs: list[str]) -> bytes:
    """Trace `module` on the `example` inputs into an ONNX graph with a dynamic batch axis."""
    onnx, _ = _require_onnx()
    buf = io.BytesIO()
    axes = {name: {0: "batch"} for name in inputs + outputs}
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer notes
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, buf, input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    graph = onnx.load_from_string(buf.getvalue())
    with torch.no_grad():
        traced = module(*example)
    traced = traced if isinstance(traced, tuple) else (traced,)
    for out, t in zip(graph.graph.output, traced):  # the tracer names the other axes ('Sigmoidmean_dim_1'):
        for dim, size in zip(list(out.type.tensor_type.shape.dim)[1:], t.shape[1:]):  # they are fixed sizes
            dim.dim_value = size
    onnx.checker.check_model(graph)
    return graph.SerializeToString()


def run_onnx(data: bytes, *inputs: np.ndarray) -> list[np.ndarray]:
    """Run an exported graph on its inputs with onnxruntime's CPU provider."""
    _, ort = _require_onnx()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: x for i, x in zip(session.get_inputs(), inputs)})


@torch.no_grad()
def _checked(module: nn.Module, data: bytes, inputs: tuple[torch.Tensor, ...], what: str) -> float:
    """The largest |onnxruntime - PyTorch| on the inputs and on their first two rows; refuse
    the graph above CHECK_ATOL."""
    worst = 0.0
    for rows in (len(inputs[0]), 2):  # the traced batch size and another: the batch axis must be dynamic
        xb = tuple(t[:rows] for t in inputs)
        want = module(*xb)
        want = want if isinstance(want, tuple) else (want,)
        got = run_onnx(data, *(t.numpy() for t in xb))
        worst = max(worst, *(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want)))
    if not worst <= CHECK_ATOL:
        raise IncompatibleError(f"the exported {what} differs from PyTorch by {worst:.3g} under onnxruntime "
                                f"(allowed {CHECK_ATOL}); nothing was written: report it with the run's config.json")
    return worst


def check_onnx_paths(decoder: str | os.PathLike, encoder: str | os.PathLike | None = None,
                     force: bool = True) -> list[Path]:
    """Refuse, before any work, a name not ending in .onnx, a missing folder, one file named
    twice, or (unless `force`) a file that exists. Returns [decoder] or [decoder, encoder]."""
    paths = [Path(decoder)] + ([Path(encoder)] if encoder is not None else [])
    for p, flag in zip(paths, ("--onnx", "--encoder")):
        check_output_path(p, (".onnx",), "an ONNX file name must end in .onnx", ".onnx", force=force, flag=flag)
    if len(paths) == 2 and paths[0].resolve() == paths[1].resolve():
        raise ConfigError(f"--onnx and --encoder both name {paths[0]}; the encoder would replace the decoder: "
                          "give the encoder its own file, e.g. encoder.onnx")
    return paths


def export_onnx(model, decoder: str | os.PathLike, encoder: str | os.PathLike | None = None,
                seed: int = 0, force: bool = True) -> dict[str, Any]:
    """Write the decoder (and, with `encoder`, the encoder) of `model` as ONNX files, each
    checked against onnxruntime first; `force=False` refuses existing files (the CLI's
    default). Returns the paths and the largest differences."""
    paths = check_onnx_paths(decoder, encoder, force)
    if encoder is not None and hasattr(model.prior, "posterior"):
        raise IncompatibleError("this model's q(z|x) is hierarchical (arch=ladder or hvae), not one (mu, sigma); "
                                "export the decoder only")
    _require_onnx()
    # a CPU copy to trace: Module.to works in place, and would leave the caller's CUDA model on the CPU
    model = copy.deepcopy(getattr(model, "_orig_mod", model)).to("cpu").eval()
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(CHECK_BATCH, model.latent_dim, generator=gen)  # (B, d)
    cond = getattr(model, "condition_dim", 0)
    c = (torch.rand(CHECK_BATCH, cond, generator=gen),) if cond else ()  # (B, C) for a conditional model
    names = ["c"] if cond else []
    dec = DecoderMean(model)
    files = {paths[0]: onnx_bytes(dec, (z, *c), ["z", *names], ["mean"])}
    result: dict[str, Any] = {"decoder": str(paths[0]),
                              "decoder_max_abs_diff": _checked(dec, files[paths[0]], (z, *c), "decoder")}
    if encoder is not None:
        with torch.no_grad():
            x = dec(z, *c)  # (B, *shape) realistic inputs: decoded prior draws
        enc = EncoderParams(model)
        files[paths[1]] = onnx_bytes(enc, (x, *c), ["x", *names], ["mu", "sigma"])
        result.update(encoder=str(paths[1]), encoder_max_abs_diff=_checked(enc, files[paths[1]], (x, *c), "encoder"))
    for p, data in files.items():  # written only when every graph passed its check
        write_atomic(p, data)
    return result
