"""Write a CSV with a real group column and train an MLP on it with plain PyTorch.

The data is scikit-learn's bundled diabetes table (442 patients, no download; Efron et al. 2004):
ten baseline measurements, of which ``sex`` is the group (coded 1 and 2 in the source, which does
not say which is which), and the target is whether disease progression after one year is above
the median. The other nine columns are the features. The script writes ``diabetes.csv`` with a
``split`` column (its own seeded 75/25 split, stratified by label x sex), trains the MLP of
``tabular_model.py`` on the training rows, z-scored by their mean and std (what the ``table``
dataset does by default), and saves the state_dict.

    python examples/ship/train_tabular.py --out-dir examples/ship
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split
from tabular_model import mlp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=".", help="folder for diabetes.csv and mlp.pt")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out_dir)

    frame = load_diabetes(as_frame=True, scaled=False).frame
    target = frame.pop("target")
    frame["label"] = (target > target.median()).astype(int)
    frame["sex"] = frame["sex"].map({1.0: "sex1", 2.0: "sex2"})
    train, _ = train_test_split(
        frame.index,
        test_size=0.25,
        stratify=frame["label"].astype(str) + frame["sex"],
        random_state=args.seed,
    )
    frame["split"] = np.where(frame.index.isin(train), "train", "test")
    frame.to_csv(out / "diabetes.csv", index=False)

    features = [c for c in frame.columns if c not in ("label", "sex", "split")]
    rows = frame[frame.split == "train"]
    x = torch.tensor(rows[features].to_numpy(), dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0)
    y = torch.tensor(rows["label"].to_numpy())
    torch.manual_seed(args.seed)
    model = mlp(num_classes=2, in_channels=len(features), hidden=args.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=1e-4)
    for _ in range(args.epochs):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    accuracy = (model(x).argmax(1) == y).float().mean().item()
    print(
        f"{len(rows)} training rows, features {features}: training accuracy {100 * accuracy:.1f} %"
    )
    torch.save(model.state_dict(), out / "mlp.pt")
    print(f"wrote {out / 'diabetes.csv'} and {out / 'mlp.pt'}")


if __name__ == "__main__":
    main()
