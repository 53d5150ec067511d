"""Image <-> description pretraining of the tiny backbone (the stand-in for BLIP-2's pretraining).

BLIP-2's CIR fine-tuning starts from an image-text-aligned Q-Former; the tiny preset must too, or
the embedded study would measure something else. `pretrain_tiny` trains the WHOLE tiny model
(vision tower included) on Fashion-Shapes TRAIN images only, each paired with its absolute
description (e.g. "a cropped red striped dress with long sleeves"; on the continuous variant its
coarse-word `describe_continuous`; the tokenizer over the dataset's own vocabulary.txt), with
BLIP-2's image-text contrastive (ITC) objective:

  image side: `encode_corpus` (N, T, D); text side: `encode_text` ([CLS] -> text projection) (U, D);
  sim[n, u] = max_t <image_n,t, text_u> / temperature, in-batch, symmetric.

Several images share a description (same attributes, different nuisance), so texts are
de-duplicated per batch and every image of a description counts as a positive of that text (a
plain CLIP loss would push true matches apart). No triplets and no modification captions are seen.

The checkpoint is cached in `out_dir` (reused when its recorded settings match) so QuRe and every
baseline start from the same weights; the report gives image -> description top-1 accuracy on the
val images (retrieval among the distinct descriptions of the val images) and per-attribute accuracy.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from qurelib.data.synthetic import describe, load_fashion_shapes, read_manifest
from qurelib.data.synthetic_continuous import attribute_words, describe_continuous, is_continuous
from qurelib.model.checkpoint import load_checkpoint, save_checkpoint
from qurelib.model.load import read_vocabulary
from qurelib.model.modeling import CIRModel, ModelLoadError, build_tiny, resolve_device
from qurelib.progress import progress_bar

log = logging.getLogger(__name__)

# Default profile (~4,050 train images): 15 epochs x 31 steps of 128 = 465 steps, ~95 s on 2 cores,
# val image->description top-1 ~0.76 (540 descriptions; chance 0.002).
DEFAULTS = dict(epochs=15, batch_size=128, lr=1e-3, weight_decay=0.05, warmup_frac=0.05)


def load_described_images(data_root, split: str, model: CIRModel):
    """All images of a Fashion-Shapes split -> (pixels (N,3,S,S), descriptions list[str], records list[dict]).

    Discrete data: `describe` and the attribute values; the continuous variant: `describe_continuous`
    and the coarse words a description fixes (`attribute_words`), so per-attribute accuracy is
    measured on what the text can say."""
    pixels, texts, records = [], [], []
    for category, cir in load_fashion_shapes(data_root, split).items():
        continuous = is_continuous(cir.attributes)
        for image_id in cir.corpus_ids:
            values = cir.attributes[image_id]["attributes"]
            pixels.append(model.preprocess([cir.load_image(image_id)])[0])
            texts.append(describe_continuous(category, values) if continuous else describe(category, values))
            records.append({"category": category, **(attribute_words(values) if continuous else values)})
    return torch.stack(pixels), texts, records


def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, labels: torch.Tensor,
                     temperature: torch.Tensor) -> torch.Tensor:
    """Symmetric multi-positive ITC loss.

    image_emb (B, T, D); text_emb (U, D) distinct texts; labels (B,) long, the text of each image.
    image -> text: cross-entropy over the U texts; text -> image: -log of the softmax mass on the
    images of that text.
    """
    sim = torch.einsum("btd,ud->but", image_emb, text_emb).amax(-1) / temperature   # (B, U)
    i2t = F.cross_entropy(sim, labels)
    positive = labels[:, None] == torch.arange(text_emb.shape[0], device=labels.device)  # (B, U)
    t2i = (torch.logsumexp(sim, 0) - torch.logsumexp(sim.masked_fill(~positive, -torch.inf), 0)).mean()
    return (i2t + t2i) / 2


@torch.no_grad()
def describe_accuracy(model: CIRModel, pixels: torch.Tensor, texts: list[str], records: list[dict],
                      batch_size: int = 256) -> dict:
    """Image -> description retrieval among the distinct `texts`: top-1 and per-attribute accuracy."""
    model.eval()
    distinct = sorted(set(texts))
    index = {t: i for i, t in enumerate(distinct)}
    text_emb = torch.cat([model.encode_text(**model.tokenize(distinct[i:i + batch_size]))
                          for i in range(0, len(distinct), batch_size)])              # (U, D)
    predicted = torch.cat([model.score(text_emb, model.encode_corpus(chunk.to(model.device))).argmax(0)
                           for chunk in pixels.split(batch_size)]).cpu()              # (N,)
    truth = torch.tensor([index[t] for t in texts])
    first = {t: r for t, r in zip(texts, records)}  # a description fixes every attribute
    report = {"val_top1": float((predicted == truth).float().mean()), "val_images": len(texts),
              "val_descriptions": len(distinct), "chance_top1": 1 / len(distinct)}
    for name in records[0]:
        hits = [first[distinct[p]][name] == r[name] for p, r in zip(predicted.tolist(), records)]
        report[f"val_{name}_acc"] = sum(hits) / len(hits)
    return report


def _schedule(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 1% (a multiplier of the base lr)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))


def _settings(data_root: Path, **kwargs) -> dict:
    """What a cached checkpoint must match to be reused: hyperparameters + the data's manifest."""
    manifest = read_manifest(data_root)
    data = {k: manifest.get(k) for k in ("profile", "seed", "version", "sizes")}
    return {"data": data, **kwargs}


def _train(model: CIRModel, pixels, texts, *, epochs, batch_size, lr, weight_decay, warmup_frac,
           seed, progress) -> list[float]:
    """The contrastive loop; returns the per-epoch mean losses."""
    distinct = sorted(set(texts))
    tokens = model.tokenize(distinct)                                               # (U, L) all texts
    index = {t: i for i, t in enumerate(distinct)}
    labels = torch.tensor([index[t] for t in texts])                                # (N,)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                  weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = len(texts) // batch_size
    total = epochs * steps_per_epoch
    bar = progress_bar(total=total, desc="pretrain tiny (image<->description)", show=progress)
    losses, step = [], 0
    model.train()
    for _ in range(epochs):
        order, epoch_loss = torch.randperm(len(texts), generator=generator), 0.0
        for b in range(steps_per_epoch):
            idx = order[b * batch_size:(b + 1) * batch_size]
            used, batch_labels = torch.unique(labels[idx], return_inverse=True)   # distinct texts
            for group in optimizer.param_groups:
                group["lr"] = lr * _schedule(step, total, max(1, int(warmup_frac * total)))
            image_emb = model.encode_corpus(pixels[idx].to(model.device))           # (B, T, D)
            text_emb = model.encode_text(tokens["input_ids"][used], tokens["attention_mask"][used])
            loss = contrastive_loss(image_emb, text_emb, batch_labels.to(model.device),
                                    model.temperature.clamp(min=0.01))  # BLIP-2 clamps ITC temp too
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", temp=f"{model.temperature.item():.3f}")
        losses.append(epoch_loss / max(1, steps_per_epoch))
    bar.close()
    return losses


def pretrain_tiny(data_root, out_dir, *, epochs: int = DEFAULTS["epochs"],
                  batch_size: int = DEFAULTS["batch_size"], lr: float = DEFAULTS["lr"], seed: int = 0,
                  device: str = "auto", force: bool = False, progress: bool = True,
                  identity: dict | None = None) -> tuple[CIRModel, dict]:
    """Pretrain (or reuse) the tiny backbone on Fashion-Shapes at `data_root`; checkpoint at `out_dir`.

    Returns (model with the vision tower frozen again for CIR fine-tuning, report dict): the report
    holds val_top1, chance_top1, per-attribute accuracies, seconds, epochs, losses and `reused`.
    The saved temperature is reset to 0.07 (the CIR stage's initial value; the learned one is
    reported as `pretrain_temperature`). `identity` (e.g. the code and data digests) is part of what
    a cached checkpoint must match to be reused.
    """
    data_root, out_dir = Path(data_root), Path(out_dir)
    settings = _settings(data_root, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                         weight_decay=DEFAULTS["weight_decay"], warmup_frac=DEFAULTS["warmup_frac"])
    if identity is not None:
        settings["identity"] = identity
    if out_dir.exists() and not force:
        try:
            cached = load_checkpoint(out_dir, device=device, freeze_vision=True)
            if cached.extra.get("pretrain_settings") == settings:
                return cached.model, {**cached.extra["pretrain_report"], "reused": True}
            log.info("pretrain_tiny: %s was made with other settings; retraining", out_dir)
        except ModelLoadError as error:
            log.warning("pretrain_tiny: cannot reuse %s (%s); retraining", out_dir, error)
    start = time.perf_counter()
    words = read_vocabulary(data_root)  # the dataset's own words (discrete: exactly VOCABULARY)
    model = build_tiny(words, freeze_vision=False, seed=seed).to(resolve_device(device))
    pixels, texts, _ = load_described_images(data_root, "train", model)
    with torch.random.fork_rng(devices=[]):  # seeded run, caller's RNG state untouched
        torch.manual_seed(seed)
        losses = _train(model, pixels, texts, epochs=epochs, batch_size=batch_size, lr=lr,
                        weight_decay=DEFAULTS["weight_decay"], warmup_frac=DEFAULTS["warmup_frac"],
                        seed=seed, progress=progress)
    train_seconds = time.perf_counter() - start
    report = describe_accuracy(model, *load_described_images(data_root, "val", model))
    report.update(train_images=len(texts), epochs=epochs, batch_size=batch_size, lr=lr,
                  losses=[round(x, 4) for x in losses], train_seconds=round(train_seconds, 1),
                  seconds=round(time.perf_counter() - start, 1),
                  pretrain_temperature=round(model.temperature.item(), 4), reused=False)
    with torch.no_grad():
        model.temperature.fill_(0.07)
    model.set_vision_frozen(True)
    model.eval()
    save_checkpoint(model, out_dir, extra={"pretrain_settings": settings, "pretrain_report": report})
    return model, report


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m qurelib.model.pretrain --data DIR --out DIR [--epochs N] [--force]."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="Fashion-Shapes root (make_fashion_shapes output)")
    parser.add_argument("--out", required=True, help="checkpoint directory (reused unless --force)")
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--force", action="store_true", help="retrain even if a matching checkpoint exists")
    args = parser.parse_args(argv)
    _, report = pretrain_tiny(args.data, args.out, epochs=args.epochs, batch_size=args.batch_size,
                              lr=args.lr, seed=args.seed, device=args.device, force=args.force)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
