"""vaekit: learn a variational autoencoder from the data you have and generate more like it.

    import vaekit
    data = vaekit.load_data("digits")
    model = vaekit.fit(data, vaekit.Config(epochs=20))
    x_new = model.sample(16)                          # (16, 1, 8, 8)
    vaekit.save(model, "run"); model = vaekit.load("run")
    nll = -vaekit.log_likelihood(model, data.x, k=1000).mean()

Names are imported lazily so that `vaekit --help` does not wait for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "config",
    "Dataset": "data",
    "load_data": "data",
    "download_mnist": "mnist",
    "VAE": "model",
    "StandardNormal": "priors",
    "Bernoulli": "likelihoods",
    "Gaussian": "likelihoods",
    "MLP": "nets",
    "ConvEncoder": "nets",
    "ConvDecoder": "nets",
    "Bound": "objectives",
    "elbo": "objectives",
    "iwae": "objectives",
    "wae_mmd": "objectives",
    "fit": "train",
    "History": "train",
    "save": "checkpoint",
    "load": "checkpoint",
    "snapshot": "resume",
    "log_likelihood": "evaluate",
    "write_output": "sample",
    "traversals": "sample",
    "MixedLikelihood": "likelihoods",
    "fit_table": "tabular",
    "sample_table": "tabular",
    "reconstruct_table": "tabular",
    "table_config": "tabular",
    "evaluate_table": "table_metrics",
    "read_table": "table_io",
    "write_table": "table_io",
    "Schema": "tables",
    "table_section": "report",
    "export_onnx": "export",
    "errors": None,
    "report": None,  # the module is callable: vaekit.report(run, data, out=...)
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vaekit' has no attribute {name!r}")
    module = _EXPORTS[name]
    if module is None:
        return importlib.import_module(f".{name}", __name__)
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:  # for type checkers and IDEs; never executed
    from . import errors, report
    from .checkpoint import load, save
    from .config import Config
    from .data import Dataset, load_data
    from .evaluate import log_likelihood
    from .export import export_onnx
    from .likelihoods import Bernoulli, Gaussian, MixedLikelihood
    from .mnist import download_mnist
    from .model import VAE
    from .nets import MLP, ConvDecoder, ConvEncoder
    from .objectives import Bound, elbo, iwae
    from .priors import StandardNormal
    from .report import table_section
    from .sample import write_output
    from .table_io import read_table, write_table
    from .table_metrics import evaluate_table
    from .tables import Schema
    from .tabular import fit_table, reconstruct_table, sample_table, table_config
    from .train import History, fit
