"""`make bench`: side-by-side timings of qurelib's fast paths against the naive ways.

    python -m qurelib.bench [--quick] [--device cpu|cuda] [--only mining,scoring,model,train,sharded]
    python -m qurelib.bench --only scale   # mining on FAISS candidates up to 1M images (~10 CPU minutes)
"""

from __future__ import annotations

import argparse
import json

import torch

from qurelib.bench import fastpaths, model, scale, sharded, training


def _print_table(rows: list[dict]) -> None:
    for row in rows:
        print(" | ".join(f"{k}: {v}" for k, v in row.items()), flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run of the benchmark itself)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--only", default="mining,scoring,model,train,sharded")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    parts = set(args.only.split(","))
    rows: list[dict] = []
    if "mining" in parts:
        sizes = {"FashionIQ-like": (600, 600), "CIRR-like": (200, 1700)} if args.quick else \
            {"FashionIQ-like": (6000, 6000), "CIRR-like": (2000, 17000)}
        rows += fastpaths.bench_mining(sizes, args.device)
        _print_table(rows[-len(sizes):])
    if "scoring" in parts:
        new = fastpaths.bench_scoring(200, 500) if args.quick else fastpaths.bench_scoring(2000, 4000)
        if args.device == "cuda":
            new += fastpaths.bench_scoring_cuda(28225, 16939)
        rows += new
        _print_table(new)
    if "model" in parts:
        new = model.run(quick=args.quick, device=args.device)
        rows += new
        _print_table(new)
    if "train" in parts:
        new = training.bench_training(quick=args.quick, device=args.device)
        rows += new
        _print_table(new)
    if "sharded" in parts:  # CIRR val/train scale: 28,225 queries x 16,939 images
        new = sharded.bench_sharded_mining(*((400, 1700) if args.quick else (28225, 16939)))
        new += sharded.bench_heavy_tail(*((200, 1700) if args.quick else (2000, 16939)))
        rows += new
        _print_table(new)
    if "scale" in parts:  # not in the default --only: 10k-1M images, figures/scale and docs/SCALE.md's table
        new = scale.bench_scale(quick=args.quick)
        rows += new
        _print_table(new)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
