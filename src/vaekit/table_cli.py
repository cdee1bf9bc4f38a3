"""The table side of `vaekit ...`: what train, sample, reconstruct and evaluate do for a
.csv / .parquet run. cli.py routes here when the data or the run is a table."""

from __future__ import annotations

import math

from .cli import epochs_text, positive, strict_json


def train(args, config) -> int:
    from .distributed import is_main
    from .tables import column_kinds
    from .tabular import fit_table

    # the text goes whole: split against the table's own names, which may hold commas
    model = fit_table(args.data, config, out=args.out, kinds=column_kinds(args.column_kind),
                      condition_columns=args.condition_columns or None,
                      encoding=args.encoding or "quantile", sep=args.sep, force=args.force, resume=args.resume,
                      stream=args.stream, missing=args.missing, decimal=args.decimal or ".")
    h = model.history
    last = h.epochs[h.best_epoch - 1] if h.epochs else {}
    loss = last.get("val_loss", last.get("train_loss", float("nan")))
    schema = model.schema
    if is_main():  # under torchrun, rank 0 speaks for all
        print(f"trained {epochs_text(h)} on {args.data} ({len(schema.columns)} columns); best epoch "
              f"{h.best_epoch}, loss {loss:.4f}; saved {args.out}")
    return 0


def sample(args, model) -> int:
    from .table_io import check_table_output, write_table
    from .tabular import sample_table

    check_table_output(args.output, force=args.force)
    df = sample_table(model, args.n, conditions=args.condition, seed=args.seed, temperature=args.temperature)
    write_table(df, args.output, model.schema)
    print(f"wrote {args.n} rows to {args.output}")
    return 0


def reconstruct(args, model) -> int:
    """The first -n rows as the model encodes and decodes them; never reads the whole file."""
    from .table_stream import read_chunks
    from .table_io import write_table
    from .tabular import reconstruct_table

    tokens = model.schema.missing_tokens  # the training file's gap texts, read and written alike
    sep = args.sep or model.schema.sep  # the training run's --sep unless told otherwise
    rows = next(read_chunks(args.data, sep, chunk_rows=args.n, missing=tokens, decimal=model.schema.decimal))
    write_table(reconstruct_table(model, rows), args.output, model.schema)
    print(f"wrote {len(rows)} reconstructed rows to {args.output}")
    return 0


def evaluate(args, model) -> int:
    from .table_metrics import evaluate_table, real_rows

    if args.rows is not None:
        positive(args.rows, "--rows")
    if args.n is not None:
        positive(args.n, "-n")
    sep = args.sep or model.schema.sep  # the training run's --sep unless told otherwise
    real, total = real_rows(args.data, args.n, args.seed, sep, model.schema.missing_tokens,  # large: a sample
                            model.schema.decimal)
    r = evaluate_table(model, real, n=args.rows, seed=args.seed)
    if total is not None:
        r["rows_in_file"] = total
    if args.json:
        print(strict_json(r))
        return 0
    sampled = f" (a uniform sample of the file's {total}, read in chunks)" if total is not None else ""
    print(f"data: {args.data}, {r['rows_real']} real rows{sampled}, {r['rows_synthetic']} synthetic rows")
    trends = r["column_pair_trends"]
    trends = f"{trends:.4f}" if math.isfinite(trends) else \
        "n/a: no pair of real columns has |correlation| > 0.5 or association > 0.3, the pairs SDMetrics scores"
    if r["column_pairs_scored"] < 1:  # a wide table: columns scored in random groups (table_metrics.quality)
        trends += f", from {r['column_pairs_scored']:.0%} of the column pairs"
    print(f"quality (SDMetrics): {r['quality']:.4f} (column shapes {r['column_shapes']:.4f}, "
          f"column-pair trends {trends}); higher is better")
    print(f"detection ROC AUC:   {r['detection_auc']:.4f} (0.5: indistinguishable)")
    print(f"privacy: {r['privacy_closer_than_median']:.4f} of synthetic rows are closer to a training row than "
          f"the median training nearest-neighbour distance; {r['exact_copies']} exact copies")
    return 0
