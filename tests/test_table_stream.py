"""Tables read in chunks: the schema equals infer_schema's (exactly while the reservoirs hold
every value, closely when they sample), training on the encoded copy on disk equals training
in memory, and memory stays bounded for a CSV larger than the cap."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pd = pytest.importorskip("pandas")

import vaekit  # noqa: E402
import vaekit.table_stream as ts  # noqa: E402
from vaekit.cli import main  # noqa: E402
from vaekit.errors import DataError  # noqa: E402
from vaekit.table_io import read_table  # noqa: E402
from vaekit.tables import infer_schema  # noqa: E402
from vaekit.tabular import fit_table, sample_table, table_config  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from conftest import run_measured  # noqa: E402
from table_memory import write_csv  # noqa: E402  the benchmark's CSV: the test measures the same file

CONFIG = table_config(epochs=2, hidden=[16], latent_dim=2, batch_size=64, patience=0, progress=False, device="cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny nets: a second thread only adds contention


def mixed_table(n, seed=0):
    """Every kind, gaps, and columns whose chunks disagree about their dtype."""
    rng = np.random.default_rng(seed)
    color = rng.choice(["red", "green", "blue"], n)
    x = np.where(color == "red", 10.0, -10.0) + rng.normal(0, 1, n)
    x[rng.random(n) < 0.2] = np.nan
    late = np.arange(n) >= n // 2  # the second half of the file
    count = rng.integers(0, 100, n).astype(float)
    count[late & (rng.random(n) < 0.05)] = np.nan  # int64 chunks first, float64 (gaps) later
    member = pd.Series(rng.random(n) < 0.3, dtype=object)
    member[late & (rng.random(n) < 0.1)] = None  # bool chunks first, object later
    code = np.where(late, rng.choice(["A", "B", "C"], n), rng.integers(1, 9, n).astype(str))  # numbers, then words
    return pd.DataFrame({
        "color": color, "x": x, "count": count, "member": member, "code": code,
        "stars": rng.integers(1, 6, n),  # a small integer: categorical
        "when": (np.datetime64("2020-01-01") + rng.integers(0, 365, n)).astype(str),  # ISO text: datetime
        "site": "A",  # constant
    })


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_table_within_the_reservoir_gets_infer_schemas_schema_exactly(tmp_path, suffix):
    path = tmp_path / f"t{suffix}"
    df = mixed_table(400)
    df.to_csv(path, index=False) if suffix == ".csv" else df.to_parquet(path, index=False)
    whole = read_table(path)
    for encoding in ("quantile", "gmm"):
        want = infer_schema(whole, encoding=encoding, condition_columns=["color", "when", "x"], seed=3)
        for rows in (10_000, 37):  # one chunk; many chunks (every value still in the reservoirs)
            got, n, _ = ts.infer_schema_chunked(path, encoding=encoding, condition_columns=["color", "when", "x"],
                                                seed=3, chunk_rows=rows)
            assert n == 400 and got == want, (encoding, rows)


def test_a_sampled_reservoir_agrees_closely_with_the_whole_table(tmp_path, monkeypatch):
    monkeypatch.setattr(ts, "RESERVOIR", 500)
    path = tmp_path / "t.csv"
    mixed_table(6000, seed=1).to_csv(path, index=False)
    want = infer_schema(read_table(path), condition_columns=["color", "x"])
    got, n, text = ts.infer_schema_chunked(path, condition_columns=["color", "x"], chunk_rows=700)
    assert n == 6000 and text == ("code",)  # numbers in the first chunks, words later: read again as text
    for a, b in zip(got.columns, want.columns):
        assert (a.name, a.kind, a.dtype, a.categories, a.min, a.max) == (b.name, b.kind, b.dtype, b.categories,
                                                                         b.min, b.max)
        assert a.missing_rate == pytest.approx(b.missing_rate, abs=1e-12)
        if a.quantiles:  # from 500 sampled values: the whole column's CDF at them is close to their levels
            assert len(a.quantiles) == len(b.quantiles) and a.quantiles[0] == b.min and a.quantiles[-1] == b.max
            levels = np.linspace(0, 1, len(b.quantiles))
            gap = np.abs(np.interp(a.quantiles, b.quantiles, levels) - levels)  # Kolmogorov distance per level
            assert gap.max() < 0.07 and gap.mean() < 0.025, (a.name, gap.max(), gap.mean())
    assert [len(v) for v in got.condition_rows.values()] == [500, 500]  # a joint sample of rows
    full = set(zip(want.condition_rows["color"], map(str, want.condition_rows["x"])))
    assert set(zip(got.condition_rows["color"], map(str, got.condition_rows["x"]))) <= full
    again, _, _ = ts.infer_schema_chunked(path, condition_columns=["color", "x"], chunk_rows=700)
    assert again == got  # seeded


def test_the_reservoir_keeps_every_item_with_the_same_probability():
    hits = np.zeros(1000)
    for seed in range(400):  # a stream of 0..999 in uneven batches into a sample of 50
        r, kept = ts.Reservoir(50, [seed]), np.empty(0)
        for i in range(0, 1000, 73):
            x = np.arange(i, min(1000, i + 73), dtype=float)
            append, slot, item = r.place(len(x))
            kept = np.concatenate([kept, x[:append]])
            kept[slot] = x[item]
        assert len(kept) == 50 == len(set(kept))
        hits[kept.astype(int)] += 1
    p = hits / 400  # 0.05 for every item; binomial sd 0.011
    assert abs(p[:500].mean() - 0.05) < 0.003 and abs(p[500:].mean() - 0.05) < 0.003 and p.max() < 0.1
    small = ts.Reservoir(50, [0])
    assert small.place(30)[0] == 30 and small.place(30)[0] == 20  # the first 50 items, in order


def test_streamed_fit_equals_the_in_memory_fit_and_samples(tmp_path):
    path = tmp_path / "t.csv"
    mixed_table(300, seed=2).to_csv(path, index=False)
    mixed_table(300, seed=2).to_parquet(tmp_path / "t.parquet", index=False)
    for data, conds in ((tmp_path / "t.parquet", None), (path, None), (path, ["color", "stars"])):
        a = fit_table(data, CONFIG, tmp_path / f"run{len(conds or [])}", condition_columns=conds, stream=True,
                      chunk_rows=50, force=True)
        b = fit_table(data, CONFIG, condition_columns=conds, stream=False)
        assert a.schema == b.schema
        for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(v, w), k
    out = sample_table(a, 200, conditions=["color=red", "stars!=1"], seed=1)
    assert list(out.columns) == list(mixed_table(3).columns) and (out.color == "red").all() and (out.stars != 1).all()
    assert out.x.dropna().between(-15, 15).all() and set(out.code) <= {"A", "B", "C", *map(str, range(1, 9))}
    pd.testing.assert_frame_equal(sample_table(vaekit.load(tmp_path / "run2"), 50, ["color=blue"], seed=2),
                                  sample_table(a, 50, ["color=blue"], seed=2))
    assert not list(tmp_path.glob(".vaekit-encoded-*"))  # the encoded copy beside the run is gone


def test_pandas_dtypes_streamed_and_in_memory_alike(tmp_path):
    """Parquet keeps pandas' own dtypes: a categorical (read as labels, not taken for ISO dates
    when streamed), an aware datetime, durations (modelled in seconds) and nullable ints and
    booleans. Both paths make the same schema and model, and samples come back in those dtypes."""
    rng = np.random.default_rng(0)
    n = 240
    df = pd.DataFrame({
        "cat": pd.Categorical(rng.choice(["a", "b", "c"], n)),
        "tz": pd.Timestamp("2021-01-01", tz="Asia/Tokyo") + pd.to_timedelta(rng.integers(0, 900, n), unit="h"),
        "took": pd.to_timedelta(rng.integers(0, 100, n), unit="s"),
        "took_f": pd.to_timedelta(rng.uniform(0, 5, n), unit="s"),
        "i": pd.array(np.where(rng.random(n) < 0.2, None, rng.integers(-5, 5, n)), dtype="Int64"),
        "nb": pd.array(np.where(rng.random(n) < 0.1, None, rng.random(n) < 0.5), dtype="boolean"),
        # text as pandas' string dtype was taken for ISO dates when streamed; a ranked category dtype came
        # back as an unranked one in alphabetical order, without its unused labels
        "s": pd.array(rng.choice(["x", "y", None], n), dtype="string"),
        "lvl": pd.Categorical(rng.choice(["low", "mid", "high"], n), categories=["low", "mid", "high", "max"],
                              ordered=True),
    })
    df.loc[::7, "took"] = pd.NaT
    df.to_parquet(tmp_path / "t.parquet", index=False)
    a = fit_table(tmp_path / "t.parquet", CONFIG, tmp_path / "run", stream=True, chunk_rows=50)
    b = fit_table(tmp_path / "t.parquet", CONFIG, stream=False)
    assert a.schema == b.schema
    kinds = {c.name: c.kind for c in a.schema.columns}
    assert kinds == {"cat": "categorical", "tz": "datetime", "took": "integer", "took_f": "continuous",
                     "i": "categorical", "nb": "boolean", "s": "categorical", "lvl": "categorical"}
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k
    out = sample_table(vaekit.load(tmp_path / "run"), 300, seed=0)
    assert dict(out.dtypes) == dict(df.dtypes)
    assert list(out["lvl"].cat.categories) == ["low", "mid", "high", "max"] and out["lvl"].cat.ordered
    assert out["s"].isna().any() and set(out["s"].dropna()) == {"x", "y"}
    took = out["took"].dropna()
    assert out["took"].isna().any() and (took.dt.total_seconds() % 1 == 0).all()  # whole seconds, with gaps
    assert took.between(df["took"].min(), df["took"].max()).all()
    assert out["tz"].between(df["tz"].min(), df["tz"].max()).all()


def test_cli_streams_tables_over_the_threshold_and_refuses_unbounded_labels(tmp_path, monkeypatch, capsys):
    path = tmp_path / "t.csv"
    mixed_table(200, seed=3).to_csv(path, index=False)
    calls = []
    real = ts.infer_schema_chunked
    monkeypatch.setattr(ts, "infer_schema_chunked", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    monkeypatch.setattr(ts, "AUTO_STREAM_TABLE_BYTES", path.stat().st_size - 1)
    args = ["train", str(path), "--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 0 and calls == [str(path)]
    assert main([*args, "--out", str(tmp_path / "mem"), "--no-stream"]) == 0 and len(calls) == 1
    assert main(["sample", str(tmp_path / "run"), "-n", "20", "-o", str(tmp_path / "s.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "s.csv")) == 20
    monkeypatch.setattr(ts, "AUTO_STREAM_TABLE_BYTES", path.stat().st_size)
    assert main([*args, "--out", str(tmp_path / "auto")]) == 0 and len(calls) == 1  # not larger: in memory
    capsys.readouterr()
    monkeypatch.setattr(ts, "MAX_DISTINCT", 2)
    assert main([*args, "--out", str(tmp_path / "bad"), "--stream"]) == 2  # a DataError
    err = capsys.readouterr().err
    assert "column 'color' has more than 2 distinct labels" in err and "--no-stream" in err
    with pytest.raises(DataError, match="no rows"):
        (tmp_path / "empty.csv").write_text("a,b\n")
        fit_table(tmp_path / "empty.csv", CONFIG, stream=True)


def test_evaluate_scores_a_uniform_sample_of_a_table_over_the_threshold(tmp_path, monkeypatch, capsys):
    from vaekit.table_metrics import real_rows

    table = mixed_table(600, seed=4)
    table["row"] = np.arange(len(table))  # which rows were taken
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    assert real_rows(path, 50)[1] is None and list(real_rows(path, 50)[0].row) == list(range(50))  # small: first n
    monkeypatch.setattr(ts, "AUTO_STREAM_TABLE_BYTES", path.stat().st_size - 1)
    monkeypatch.setattr(ts, "_rows_per_chunk", lambda p: 70)  # several chunks
    sample, total = real_rows(path, 200, seed=1)
    assert total == 600 and len(sample) == 200 and sample.row.is_unique
    assert sample.row.min() < 100 and sample.row.max() > 500  # spread over the file, not its head
    expected = table.set_index("row").loc[sample.row].reset_index()
    cols = ["row", "color", "x", "stars", "when"]  # the columns CSV gives back unchanged: each row is intact
    pd.testing.assert_frame_equal(sample[cols].reset_index(drop=True), expected[cols], check_dtype=False)
    assert list(real_rows(path, 200, seed=1)[0].row) == list(sample.row)  # the seed fixes the sample
    assert len(real_rows(path, None)[0]) == 600  # the default sample size exceeds this file: all of it

    fit_table(table.drop(columns="row"), CONFIG, tmp_path / "run")
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run"), str(path), "-n", "150", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["rows_real"] == 150 and r["rows_in_file"] == 600 and 0 <= r["quality"] <= 1
    assert main(["evaluate", str(tmp_path / "run"), str(path), "-n", "0"]) == 2  # a clear error, not iloc[:0]


MEASURE = """
import json, sys
import pandas as pd, torch
from vaekit.tabular import fit_table, table_config

def hwm_mb():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024

torch.set_num_threads(1)
config = table_config(epochs=1, hidden=[32], latent_dim=4, batch_size=4096, patience=0, progress=False, device="cpu")
fit_table(pd.read_csv(sys.argv[1], nrows=2000), config)  # warm-up: pandas, the runtime's one-off memory
baseline = hwm_mb()
model = fit_table(sys.argv[1], config, stream=True)
print(json.dumps({"baseline_mb": baseline, "peak_mb": hwm_mb(), "columns": len(model.schema.columns),
                  "epochs": len(model.history.epochs)}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_training_on_a_160_mb_csv_stays_under_a_100_mb_cap(tmp_path):
    path = tmp_path / "big.csv"
    write_csv(path, blocks=18)  # 900,000 rows, 164 MB; in memory the peak rose 1,625 MB (table_memory.py)
    cap_mb = 100  # above the warm baseline; well under the file's size
    r = run_measured(MEASURE, path, timeout=300)
    print(json.dumps({**r, "csv_mb": round(path.stat().st_size / 1e6, 1), "cap_mb": cap_mb}))  # pytest -s shows it
    assert r["columns"] == 9 and r["epochs"] == 1
    assert r["peak_mb"] - r["baseline_mb"] < cap_mb, r
