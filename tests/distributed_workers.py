"""Module-level workers for tests/test_distributed.py (spawned processes import them by name)."""

import json
from pathlib import Path

import torch

from qurelib import distributed


def train_run(root: str, run_dir: str, config: dict, stop_epoch: int | None = None) -> None:
    """`train` on the smoke Fashion-Shapes train splits with a fresh tiny model."""
    from qurelib.data.synthetic import load_fashion_shapes
    from qurelib.model import load_model
    from qurelib.train import TrainConfig, train

    train(load_model("tiny", device="cpu"), load_fashion_shapes(root, "train"), TrainConfig(**config), run_dir,
          stop_epoch=stop_epoch)


def mine_once(root: str, checkpoint: str, out: str, config: dict) -> None:
    """`mine_splits` with the model of `checkpoint`; rank 0 saves the sets and statistics to `out`."""
    from qurelib.data.synthetic import load_fashion_shapes
    from qurelib.encode import build_image_cache
    from qurelib.model import load_model
    from qurelib.train import TrainConfig, TrainData, mine_splits

    model = load_model(checkpoint, device="cpu", freeze_vision=True)
    splits = load_fashion_shapes(root, "train")
    cache = build_image_cache(model, splits.values(), progress=False)
    data = TrainData.build(splits, cache)
    sets, stats = mine_splits(model, data, cache, TrainConfig(**config), epoch=1)
    if distributed.is_main():
        torch.save({"indptr": sets.indptr, "indices": sets.indices, "fallback": sets.fallback,
                    "stats": json.dumps(stats, sort_keys=True), "cache": cache.embeds}, out)
