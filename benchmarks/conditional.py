"""Does the conditional VAE generate the class it is asked for? Train on digits with
--condition-on labels, draw N samples per class, and let a logistic regression trained on the
real training digits label them. Prints the share labelled as the class asked for (chance: 0.1).

    python benchmarks/conditional.py [--epochs 30] [--per-class 100] [--data digits|mnist]
"""

import argparse
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from vaekit import Config, fit
from vaekit.data import load_data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="digits")
    ap.add_argument("--data-dir", default="../shared/data/mnist")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--per-class", type=int, default=100)
    args = ap.parse_args()
    train = load_data(args.data, "train", args.data_dir)
    t0 = time.perf_counter()
    config = Config(latent_dim=8 if args.data == "digits" else 32, hidden=[128, 128] if args.data == "digits" else [512, 256],
                    epochs=args.epochs, batch_size=64 if args.data == "digits" else 128, lr=2e-3 if args.data == "digits" else 1e-3,
                    patience=0, condition_on="labels", progress=False)
    model = fit(train, config)
    fit_s = time.perf_counter() - t0
    x, y = train.x.flatten(1).numpy(), train.labels.numpy()
    if len(x) > 20000:
        x, y = x[:20000], y[:20000]
    clf = LogisticRegression(max_iter=500).fit(x, y)
    test = load_data(args.data, "test", args.data_dir)
    real_acc = float((clf.predict(test.x.flatten(1).numpy()) == test.labels.numpy()).mean())
    g = torch.Generator().manual_seed(0)
    hits = []
    for c in model.config.condition_names:
        s = model.sample(args.per_class, generator=g, condition=model.label_condition(c))
        hits.append(float((clf.predict(s.flatten(1).numpy()) == int(c)).mean()))
    print(f"data {args.data}, {args.epochs} epochs ({fit_s:.1f} s), {args.per_class} samples per class")
    print("per class: " + " ".join(f"{h:.2f}" for h in hits))
    print(f"share classified as the class asked for: {np.mean(hits):.3f} (chance 0.1; "
          f"the classifier on real test images: {real_acc:.3f})")


if __name__ == "__main__":
    main()
