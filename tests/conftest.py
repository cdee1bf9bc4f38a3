import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MNIST_DIR = SHARED / "mnist"
SRC = str(Path(__file__).resolve().parents[1] / "src")


def run_measured(script: str, path, timeout: int) -> dict:
    """Run `script` on `path` in a fresh one-thread Python (memory is measured per process)
    and return the JSON object it printed last."""
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=timeout,
                          env={"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture
def mnist_dir():
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("shared MNIST files not present")
    return MNIST_DIR


@pytest.fixture
def interrupt_at(monkeypatch):
    """interrupt_at(n): the n-th training batch of the next fit() raises KeyboardInterrupt, as
    Ctrl-C would (validation batches are not counted); monkeypatch.undo() disarms it."""
    import vaekit.train as train

    def arm(n: int) -> None:
        real, calls = train.objective, {"n": 0}

        def objective(model, x, config, *args, **kw):
            calls["n"] += model.training
            if calls["n"] == n:
                raise KeyboardInterrupt
            return real(model, x, config, *args, **kw)

        monkeypatch.setattr(train, "objective", objective)
    return arm
