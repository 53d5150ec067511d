"""Encoding and scoring of a CIR model on one split, with the frozen vision tower's features
cached once.

The frozen vision tower never changes during CIR fine-tuning, so every image goes through
`model.encode_image` once (`build_image_cache`) and the cached (P, H) patch features are fed back
as `image_embeds=` to `encode_query` / `encode_corpus`; only the Q-Former runs after that.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from qurelib import distributed
from qurelib.data.schema import CIRSplit
from qurelib.progress import progress_bar
from qurelib.qure import score_corpus


@dataclass
class ImageCache:
    """Frozen-ViT features of every image a run needs: `embeds[row[image_id]]` is (P, H)."""

    row: dict[str, int]
    embeds: torch.Tensor  # (M, P, H) float32 (float16 on CUDA), on the model's device

    def rows(self, image_ids: Sequence[str]) -> torch.Tensor:
        """(len(ids),) long rows; KeyError names the first id the cache lacks."""
        missing = [i for i in image_ids if i not in self.row]
        if missing:
            raise KeyError(f"image {missing[0]!r} is not in the image cache ({len(missing)} missing)")
        return torch.tensor([self.row[i] for i in image_ids], dtype=torch.long)


def split_image_ids(split: CIRSplit) -> list[str]:
    """Every image a split's scoring needs: its corpus, then references and targets outside it."""
    ids = dict.fromkeys(split.corpus_ids)
    for q in split.queries:
        ids[q.reference_id] = None
        if q.target_id is not None:
            ids[q.target_id] = None
    return list(ids)


@torch.no_grad()
def build_image_cache(model, splits: Iterable[CIRSplit], *, batch_size: int = 64,
                      cache: ImageCache | None = None, progress: bool = True) -> ImageCache:
    """Run the frozen vision tower once over every image of `splits` (extending `cache` if given).

    Under torch.distributed each rank encodes a contiguous share of the new images and every rank
    ends with the whole cache (rows in the same order as a single process gives them).
    Raises ValueError if the model's vision tower is trainable (its features would go stale).
    """
    if not getattr(model, "vision_frozen", False):
        raise ValueError("build_image_cache: the vision tower is trainable, so its features cannot be "
                         "cached; load the model with freeze_vision=True")
    row = dict(cache.row) if cache is not None else {}
    sources: dict[str, CIRSplit] = {}
    for split in splits:
        for image_id in split_image_ids(split):
            if image_id not in row and image_id not in sources:
                sources[image_id] = split
    todo = list(sources)
    chunks = [] if cache is None else [cache.embeds]
    dtype = torch.float16 if model.device.type == "cuda" else torch.float32
    sharded = distributed.world_size() > 1 and len(todo) >= distributed.world_size()
    lo, hi = distributed.shard_range(len(todo)) if sharded else (0, len(todo))
    new = []
    for start in progress_bar(range(lo, hi, batch_size), desc="encode images", show=progress):
        ids = todo[start:min(start + batch_size, hi)]
        pixels = model.preprocess([sources[i].load_image(i) for i in ids])  # (B, 3, S, S)
        new.append(model.encode_image(pixels).to(dtype))  # (B, P, H)
    if new:
        chunks.append(distributed.gather_rows(torch.cat(new)) if sharded else torch.cat(new))  # (len(todo), P, H)
    row.update({i: len(row) + j for j, i in enumerate(todo)})
    if not chunks:
        raise ValueError("build_image_cache: the splits hold no images")
    return ImageCache(row, torch.cat(chunks))


def autocast(model, amp: bool):
    """bf16 autocast on CUDA when `amp`, else a no-op context."""
    if amp and model.device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def encode_split(model, split: CIRSplit, cache: ImageCache, *, batch_size: int = 256,
                 amp: bool = True, progress: bool = True, queries: slice = slice(None),
                 corpus: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
    """Query embeddings (Q, D) and corpus embeddings (N, T, D), float32, in eval mode.

    queries / corpus: the rows to encode (a rank's shard; default all), each non-empty.
    The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        chosen = split.queries[queries]
        ref_rows = cache.rows([q.reference_id for q in chosen])
        corpus_rows = cache.rows(split.corpus_ids[corpus])
        queries, corpus = [], []
        bar = progress_bar(total=len(ref_rows) + len(corpus_rows), desc=f"encode {split.name}",
                           show=progress, nested=True)
        with autocast(model, amp):
            for s in range(0, len(ref_rows), batch_size):
                tok = model.tokenize([q.modification_text for q in chosen[s:s + batch_size]])
                emb = cache.embeds[ref_rows[s:s + batch_size].to(cache.embeds.device)]  # (B, P, H)
                queries.append(model.encode_query(image_embeds=emb, **tok).float())  # (B, D)
                bar.update(len(emb))
            for s in range(0, len(corpus_rows), batch_size):
                emb = cache.embeds[corpus_rows[s:s + batch_size].to(cache.embeds.device)]
                corpus.append(model.encode_corpus(image_embeds=emb).float())  # (B, T, D)
                bar.update(len(emb))
        bar.close()
        return torch.cat(queries), torch.cat(corpus)
    finally:
        model.train(was_training)


def score_split(model, split: CIRSplit, cache: ImageCache | None = None, **kwargs) -> torch.Tensor:
    """(Q, N) float32 scores of every query against the split's corpus (on CPU)."""
    cache = cache or build_image_cache(model, [split], progress=kwargs.get("progress", True))
    query, corpus = encode_split(model, split, cache, **kwargs)
    return score_corpus(query, corpus).cpu()
