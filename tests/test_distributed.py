"""Data parallelism on one CPU with gloo: two torchrun ranks at per-rank batch B take the
steps of one process at batch 2B; a NaN on one rank stops every rank with the typed error."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vaekit.cli import main
from vaekit.distributed import Group

SRC = str(Path(__file__).resolve().parents[1] / "src")
# deterministic objective (a plain autoencoder: WAE with a zero MMD weight), so the two
# runs see no sampling noise and must agree to float rounding; tanh keeps every gradient alive
COMMON = ["digits", "--split", "all", "--epochs", "2", "--objective", "wae-mmd", "--mmd-weight", "0",
          "--binarize", "none", "--latent-dim", "4", "--activation", "tanh",
          "--val-fraction", "0.1", "--patience", "0", "--seed", "3", "--device", "cpu", "--no-progress"]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    return {**env, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", **extra}


def test_shards_split_every_global_batch_disjointly():
    perm = torch.randperm(203, generator=torch.Generator().manual_seed(0))
    for step in range(4):  # 3 full global batches of 64 and a last one of 11
        parts = [Group(rank=r, world=2).shard(perm, step, 32) for r in range(2)]
        whole, n = Group().shard(perm, step, 64)
        assert torch.equal(torch.cat([p for p, _ in parts]), whole)
        assert all(m == n for _, m in parts)
    assert [len(Group(rank=r, world=2).shard(perm, 3, 32)[0]) for r in range(2)] == [6, 5]
    assert Group(world=2).steps(203, 32) == 4 and Group().steps(193, 64) == 4
    # 193 = 3 x 64 + 1: one row cannot be shared by 2 ranks, so it joins the third batch
    assert Group(world=2).steps(193, 32) == 3
    last = [Group(rank=r, world=2).shard(perm[:193], 2, 32) for r in range(2)]
    assert [len(p) for p, _ in last] == [33, 32] and last[0][1] == 65
    assert torch.equal(torch.cat([p for p, _ in last]), perm[128:193])


@pytest.mark.parametrize("arch", [["--hidden", "32"], ["--arch", "conv", "--channels", "4,8"]],
                         ids=["mlp", "conv-channels-last"])
def test_two_gloo_ranks_equal_one_process_at_twice_the_batch(tmp_path, capsys, arch):
    # 1617 training rows: 12 global batches of 128 and an uneven last one (81 = 41 + 40);
    # the conv model trains channels-last: DDP's gradients must keep the weights' layout for fused Adam
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "vaekit", "train", *COMMON, *arch, "--batch-size", "64", "--out", str(tmp_path / "ddp")]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained 2 epochs") == 1  # rank 0 alone reports
    assert main(["train", *COMMON, *arch, "--batch-size", "128", "--out", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    ddp, one = load_file(tmp_path / "ddp" / "model.safetensors"), load_file(tmp_path / "one" / "model.safetensors")
    assert ddp.keys() == one.keys()
    worst = max(float((ddp[k] - one[k]).abs().max()) for k in one)
    assert worst < 1e-6, worst
    rows = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == len(ref) == 2
    for r, s in zip(rows, ref):  # training and validation losses over all ranks' rows
        assert abs(r["train_loss"] - s["train_loss"]) < 1e-4 * abs(s["train_loss"])
        assert abs(r["val_loss"] - s["val_loss"]) < 1e-4 * abs(s["val_loss"])
    assert rows[1]["train_loss"] < rows[0]["train_loss"]  # it trained: equal weights are not the initial ones


RANK_SCRIPT = """
import json, os, sys
import torch.distributed as dist
import vaekit, vaekit.train as T
from vaekit.errors import NonFiniteError

rank = int(os.environ["RANK"])
data = vaekit.load_data("digits")
config = vaekit.Config(epochs=2, hidden=[16], latent_dim=2, batch_size=32, progress=False, device="cpu")
os.makedirs(sys.argv[1] + "-taken", exist_ok=True)
open(sys.argv[1] + "-taken/file", "w").close()
try:  # rank 0 refuses the output folder: every rank stops before training
    vaekit.fit(data, config, out=sys.argv[1] + "-taken")
    refused = None
except vaekit.errors.VaekitError as e:
    refused = type(e).__name__
if rank == 1:  # only this rank's third step sees a NaN
    real, calls = T.objective, [0]
    def poisoned(model, x, config, beta=None, free_bits=None, c=None):
        b = real(model, x, config, beta=beta, free_bits=free_bits, c=c)
        calls[0] += 1
        return b._replace(bound=b.bound * float("nan")) if calls[0] == 3 else b
    T.objective = poisoned
try:
    vaekit.fit(data, config, out=sys.argv[1])
    result = {"error": None}
except NonFiniteError as e:
    result = {"error": type(e).__name__, "message": str(e)}
result["group_left"] = not dist.is_initialized()
result["refused"] = refused
print(json.dumps(result), flush=True)
"""


def test_only_rank_0_reports_a_table_training(tmp_path, capsys, monkeypatch):
    # `torchrun ... vaekit train people.csv` printed "trained ... saved" once per rank
    pytest.importorskip("pandas")
    rows = "".join(f"{'ab'[i % 2]},{i * 0.5}\n" for i in range(40))
    (tmp_path / "t.csv").write_text("kind,size\n" + rows)
    monkeypatch.setattr("vaekit.distributed.is_main", lambda: False)  # as on rank 1
    assert main(["train", str(tmp_path / "t.csv"), "--out", str(tmp_path / "run"), "--epochs", "1",
                 "--no-progress"]) == 0
    assert "trained" not in capsys.readouterr().out


def test_a_refused_output_or_a_nan_on_one_rank_stops_every_rank_cleanly(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(tmp_path / "run")], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=_env(WORLD_SIZE="2", RANK=str(r), LOCAL_RANK=str(r),
                                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)))
             for r in range(2)]
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=90)  # a hang fails here instead of blocking the suite
            assert p.returncode == 0, err[-2000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [r["error"] for r in results] == ["NonFiniteError", "NonFiniteError"]
    assert results[0]["message"] == results[1]["message"]
    assert "epoch 1, step 2" in results[0]["message"]
    assert all(r["group_left"] for r in results)
    assert [r["refused"] for r in results] == ["OutputExistsError", "ConfigError"]
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.partial").exists()
