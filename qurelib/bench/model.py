"""Micro-benchmark of the tiny CIR model (a `make bench` row; called by `qurelib.bench`).

Measures, on random 64 px inputs:
* training steps per second: a batch of B (reference, positive, negative) triplets with
  modification texts, forward + Bradley-Terry loss + backward + AdamW step, with the frozen ViT
  run every step ("uncached") and with image embeddings cached once ("cached");
* forward-only corpus encoding, images per second.
"""

from __future__ import annotations

import time

import torch

from qurelib.model import load_model
from qurelib.qure import bradley_terry_loss


def _timed(fn, steps: int, warmup: int) -> float:
    """Calls per second of `fn` after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return steps / (time.perf_counter() - start)


def bench_model(model=None, *, batch_size: int = 32, steps: int = 10, warmup: int = 2,
                corpus_images: int = 512, device: str = "cpu", seed: int = 0) -> dict:
    """Tiny-model throughput -> dict(train_steps_per_s_uncached, train_steps_per_s_cached,
    encode_corpus_images_per_s, batch_size, image_size, device, threads).

    model: a CIRModel (default: a fresh `load_model("tiny")`, vision frozen); it is left in eval mode
    and its weights are changed by the optimizer steps (pass a throw-away copy).
    """
    model = load_model("tiny", device=device) if model is None else model
    g = torch.Generator().manual_seed(seed)
    size = model.image_size
    pixels = torch.randn(3, batch_size, 3, size, size, generator=g).to(model.device)  # ref, pos, neg
    words = list(getattr(model.tokenizer, "words", ["a", "red", "dress"]))
    texts = [" ".join(words[(i * 7 + j) % len(words)] for j in range(8)) for i in range(batch_size)]
    tokens = model.tokenize(texts)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step(image_embeds=None):
        refs, corpus = (None, None) if image_embeds is not None else (pixels[0], pixels[1:].flatten(0, 1))
        query = model.encode_query(refs, **tokens,
                                   image_embeds=None if image_embeds is None else image_embeds[0])
        targets = model.encode_corpus(corpus, image_embeds=None if image_embeds is None
                                      else image_embeds[1:].flatten(0, 1))            # (2B, T, D)
        scores = torch.einsum("bd,ntd->bnt", query, targets).amax(-1)                  # (B, 2B)
        idx = torch.arange(batch_size, device=model.device)
        loss = bradley_terry_loss(scores[idx, idx], scores[idx, idx + batch_size], model.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    result = {"train_steps_per_s_uncached": _timed(step, steps, warmup)}
    if model.vision_frozen:
        with torch.no_grad():
            cached = torch.stack([model.encode_image(p) for p in pixels])           # (3, B, P, H)
        result["train_steps_per_s_cached"] = _timed(lambda: step(cached), steps, warmup)
    model.eval()

    corpus = torch.randn(corpus_images, 3, size, size, generator=g).to(model.device)

    def encode():
        with torch.inference_mode():
            for chunk in corpus.split(128):
                model.encode_corpus(chunk)

    result["encode_corpus_images_per_s"] = corpus_images * _timed(encode, max(1, steps // 5), 1)
    result.update(batch_size=batch_size, image_size=size, device=str(model.device),
                  threads=torch.get_num_threads())
    return result


def run(quick: bool = False, device: str = "cpu") -> list[dict]:
    """The `make bench` row (the interface `qurelib.bench` calls)."""
    r = bench_model(steps=3 if quick else 10, warmup=1 if quick else 2,
                    corpus_images=128 if quick else 512, device=device)
    return [{"bench": f"tiny model, batch {r['batch_size']} triplets at {r['image_size']} px "
                      f"({r['device']}, {r['threads']} threads)",
             "train steps/s (ViT each step)": round(r["train_steps_per_s_uncached"], 2),
             "train steps/s (cached ViT)": round(r.get("train_steps_per_s_cached", float("nan")), 2),
             "encode corpus images/s": round(r["encode_corpus_images_per_s"], 1)}]


if __name__ == "__main__":
    print(bench_model())
