"""Module-level workers for tests/test_distributed.py: `distributed.spawn` starts fresh processes,
which import these by name (tests/ is on their sys.path as on pytest's)."""

import json
import os
from pathlib import Path

import torch

from qurelib import distributed


def train_run(root: str, run_dir: str, config: dict, stop_epoch: int | None = None) -> None:
    """`train` on the smoke Fashion-Shapes train splits with a fresh tiny model; each rank writes
    its pid to run_dir/rank<r>.pid (the kill test's target)."""
    from qurelib.data.synthetic import load_fashion_shapes
    from qurelib.model import load_model
    from qurelib.train import TrainConfig, train

    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / f"rank{distributed.rank()}.pid").write_text(str(os.getpid()))
    train(load_model("tiny", device="cpu"), load_fashion_shapes(root, "train"), TrainConfig(**config), run_dir,
          stop_epoch=stop_epoch)


def mine_once(root: str, out: str, config: dict) -> None:
    """`mine_splits` with a fresh tiny model on an image cache built here; rank 0 saves the sets,
    statistics and cache to `out`."""
    from qurelib.data.synthetic import load_fashion_shapes
    from qurelib.encode import build_image_cache
    from qurelib.model import load_model
    from qurelib.train import TrainConfig, TrainData, mine_splits

    model = load_model("tiny", device="cpu")
    splits = load_fashion_shapes(root, "train")
    cache = build_image_cache(model, splits.values(), progress=False)
    data = TrainData.build(splits, cache)
    sets, stats = mine_splits(model, data, cache, TrainConfig(**config), epoch=1)
    if distributed.is_main():
        torch.save({"indptr": sets.indptr, "indices": sets.indices, "fallback": sets.fallback,
                    "stats": json.dumps(stats, sort_keys=True), "cache": cache.embeds,
                    "rows": json.dumps(cache.row, sort_keys=True)}, out)


def info_nce_step(out: str, batch: int) -> None:
    """InfoNCE on one global batch of `batch` random queries, computed whole here (the single
    process) and then data-parallel (this rank's share, gathered targets, summed gradients);
    rank 0 saves both losses and gradients to `out`."""
    from qurelib.model import load_model
    from qurelib.qure import info_nce_loss

    model = load_model("tiny", device="cpu")
    model.train()
    g = torch.Generator().manual_seed(0)
    p, h = model.num_query_tokens, model.blip2.config.vision_config.hidden_size
    reference = torch.randn(batch, 17, h, generator=g)  # (B, P, H) stand-ins for cached ViT features
    target_images = torch.randn(batch, 17, h, generator=g)
    words = list(getattr(model.tokenizer, "words", ["red", "dress"]))
    texts = [" ".join(words[(i * 5 + j) % len(words)] for j in range(4)) for i in range(batch)]
    params = [q for q in model.parameters() if q.requires_grad]

    def grads():
        out_ = [q.grad.clone() if q.grad is not None else None for q in params]
        model.zero_grad(set_to_none=True)
        return out_

    whole = info_nce_loss(model.encode_query(image_embeds=reference, **model.tokenize(texts)),
                          model.encode_corpus(image_embeds=target_images), model.temperature)
    whole.backward()
    single = grads()
    start, stop = distributed.shard_range(batch)
    query = model.encode_query(image_embeds=reference[start:stop], **model.tokenize(texts[start:stop]))
    every, offset = distributed.gather_rows_with_grad(model.encode_corpus(image_embeds=target_images[start:stop]))
    local = info_nce_loss(query, every, model.temperature, offset=offset)
    (local * (stop - start) / batch).backward()
    distributed.sum_gradients(params)
    parallel = grads()
    total = distributed.all_reduce_sum([float(local) * (stop - start) / batch])[0]
    if distributed.is_main():
        torch.save({"single_loss": float(whole), "parallel_loss": total, "single": single, "parallel": parallel,
                    "offset_seen": every.shape[0]}, out)


def first_pass(root: str, tmp: str, config: dict, mining_config: dict) -> None:
    """Everything the tests need from one world size, in one spawn (process start-up is most of
    the cost): `mine_once` to tmp/mine.pt, `info_nce_step` (7 queries) to tmp/nce.pt, and the
    warm-up epoch (`train_run`, stop_epoch 1) in tmp/warmup."""
    mine_once(root, str(Path(tmp) / "mine.pt"), mining_config)
    info_nce_step(str(Path(tmp) / "nce.pt"), 7)
    train_run(root, str(Path(tmp) / "warmup"), config, 1)
