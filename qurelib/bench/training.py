"""Benchmark of training on Fashion-Shapes with the tiny model: image-cache time, training
queries/s and the time of one re-mining, with the batch size and lr of `params/<profile>.yaml`."""

from __future__ import annotations

import tempfile
import time

import torch
import yaml

from qurelib.data.synthetic import load_fashion_shapes, make_fashion_shapes
from qurelib.encode import build_image_cache
from qurelib.model import load_model
from qurelib.paths import PARAMS_DIR, generated_data_dir
from qurelib.train import TrainConfig, train


def profile_settings(profile: str) -> dict:
    """The settings a stage notebook runs with under `params/<profile>.yaml`: the notebooks'
    parameter defaults are params/smoke.yaml's values, and papermill applies the profile's file
    on top (so a profile file names only what it changes, e.g. default.yaml has no seed)."""
    smoke = yaml.safe_load((PARAMS_DIR / "smoke.yaml").read_text())
    return {**smoke, **(yaml.safe_load((PARAMS_DIR / f"{profile}.yaml").read_text()) or {})}


def bench_training(quick: bool = False, device: str = "cpu") -> list[dict]:
    """`make bench` rows: image-cache time, training queries/s and time per re-mining on
    Fashion-Shapes (smoke if quick, else default) with the tiny model, 2 epochs, one re-mining."""
    profile = "smoke" if quick else "default"
    splits = load_fashion_shapes(make_fashion_shapes(generated_data_dir(profile), profile), "train")
    model = load_model("tiny", device=device)
    t0 = time.perf_counter()
    cache = build_image_cache(model, splits.values(), progress=False)
    cache_s = time.perf_counter() - t0
    params = profile_settings(profile)
    config = TrainConfig(epochs=2, n_def=2, batch_size=params["batch_size"], lr=params["lr"], seed=params["seed"],
                         device=device, progress=False)
    with tempfile.TemporaryDirectory() as run_dir:
        history = train(model, splits, config, run_dir, image_cache=cache)
    return [{"bench": "train", "profile": profile, "device": device, "threads": torch.get_num_threads(),
             "queries": sum(len(s.queries) for s in splits.values()), "images": len(cache.row),
             "image_cache_s": round(cache_s, 2),
             "queries_per_s": round(sum(r["queries_per_s"] for r in history) / len(history), 1),
             "remining_s": round(history[1]["mining_s"], 2)}]
