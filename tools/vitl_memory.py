"""What a LAVIS BLIP-2 ViT-L run holds in GPU memory, measured on the tiny fixture, computed for ViT-L.

    .venv/bin/python tools/vitl_memory.py [--batch 32]

Counts tensor bytes, device-independently (no GPU needed): the weights (fp32, as `load_model`
puts them on the device), gradients and AdamW's two moments of the trainable part (Q-Former,
ln_vision, projections, query tokens, temperature; the ViT is frozen), the image cache (the
frozen ViT's features, fp16 on CUDA, `encode.build_image_cache`), and the activations one
training step saves for backward (`saved_tensors_hooks`): the Bradley-Terry step of qurelib.train,
a batch of queries (reference features + text) and 2 x batch corpus images (target, negative).

The tiny case runs the fixture model (tests/fixtures/lavis_tiny) and checks that the byte
formulas match what the tensors hold; the ViT-L case builds the real sizes (ViT-L/14 at 224 px,
23 blocks; BERT-base Q-Former, 32 query tokens) with a 1-block ViT, since training reads cached
features and never runs the ViT, and measures its activations at batch 2 (they grow linearly).
Activations are fp32 here; under bf16 autocast on CUDA the matmul inputs are saved in 2 bytes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import Blip2Config, Blip2ForImageTextRetrieval, Blip2QFormerConfig, Blip2VisionConfig

from qurelib.model.lavis import add_vision_pre_layernorm, load_lavis_model
from qurelib.model import CIRModel
from qurelib.model.tokenizer import WordTokenizer

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "lavis_tiny"
GB = 1e9
FASHIONIQ_IMAGES = {"val": 15_536, "train + val": 62_145}  # 3 categories pooled
CIRR_IMAGES = {"train + val": 16_939 + 2_297}


def vit_l_config(vision_blocks: int = 23) -> Blip2Config:
    """LAVIS BLIP-2 clip_L sizes, as qurelib.model.lavis reads them from blip2 / QuRe checkpoints."""
    vision = Blip2VisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=vision_blocks,
                               num_attention_heads=16, image_size=224, patch_size=14, hidden_act="quick_gelu",
                               layer_norm_eps=1e-5, qkv_bias=True, initializer_range=0.02)
    qformer = Blip2QFormerConfig(vocab_size=30_523, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                 intermediate_size=3072, cross_attention_frequency=2, encoder_hidden_size=1024,
                                 layer_norm_eps=1e-12, max_position_embeddings=512, use_qformer_text_input=True)
    return Blip2Config(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(), num_query_tokens=32,
                       image_text_hidden_size=256)


def parameter_counts(model: CIRModel) -> dict[str, int]:
    """Frozen (the ViT) and trainable parameter counts of a CIRModel with a frozen tower."""
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"frozen": frozen, "trainable": trainable}


def static_bytes(counts: dict[str, int]) -> dict[str, int]:
    """fp32 weights, fp32 gradients of the trainable part, AdamW's exp_avg + exp_avg_sq (fp32)."""
    return {"weights": 4 * (counts["frozen"] + counts["trainable"]), "gradients": 4 * counts["trainable"],
            "adamw": 8 * counts["trainable"]}


def step_activation_bytes(model: CIRModel, batch: int, text_length: int = 32) -> int:
    """Bytes saved for backward by one training step's forward (queries + 2 x batch corpus images)."""
    config = model.blip2.config.vision_config
    tokens = (config.image_size // config.patch_size) ** 2 + 1
    features = torch.randn(3 * batch, tokens, config.hidden_size)             # cached ViT features
    ids = torch.randint(5, model.blip2.config.qformer_config.vocab_size, (batch, text_length))
    seen = {p.untyped_storage().data_ptr() for p in model.parameters()}  # weights are counted apart
    total = 0

    def pack(tensor):
        nonlocal total
        if tensor.untyped_storage().data_ptr() not in seen:  # each storage once (views share one)
            seen.add(tensor.untyped_storage().data_ptr())
            total += tensor.untyped_storage().nbytes()
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        query = model.encode_query(image_embeds=features[:batch], input_ids=ids)             # (B, D)
        corpus = model.encode_corpus(image_embeds=features[batch:])                           # (2B, T, D)
        scores = torch.einsum("bd,ntd->bnt", query, corpus).amax(-1) / model.temperature      # (B, 2B)
    del scores
    return total


def tiny_case() -> dict:
    meta = json.loads((FIXTURE / "fixture.json").read_text())
    model = load_lavis_model(FIXTURE / "model.pth", tokenizer_dir=FIXTURE / "tokenizer",
                             vision_heads=meta["vision"]["heads"], qformer_heads=meta["qformer"]["heads"])
    counts = parameter_counts(model)
    predicted = static_bytes(counts)
    # measured: the tensors themselves, after one AdamW step over the trainable parameters
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable)
    model.train()
    pixels = torch.randn(2, 3, model.image_size, model.image_size)
    loss = model.encode_corpus(pixels).sum() + model.encode_query(pixels, **model.tokenize(["a", "b"])).sum() \
        + model.temperature  # every trainable tensor but itm_head (BLIP-2's, unused by QuRe) gets a gradient
    loss.backward()
    optimizer.step()
    measured = {"weights": sum(p.numel() * p.element_size() for p in model.parameters()),
                "gradients": sum(p.grad.numel() * p.grad.element_size() for p in trainable if p.grad is not None),
                "adamw": sum(v.numel() * v.element_size() for s in optimizer.state.values()
                             for k, v in s.items() if k != "step")}
    with torch.no_grad():
        feature = model.encode_image(torch.randn(1, 3, model.image_size, model.image_size)).half()
    vision = model.blip2.config.vision_config
    cache = {"measured": feature.numel() * feature.element_size(),
             "predicted": ((vision.image_size // vision.patch_size) ** 2 + 1) * vision.hidden_size * 2}
    return {"counts": counts, "predicted": predicted, "measured": measured, "cache_bytes_per_image": cache,
            "activations_batch_2": step_activation_bytes(model, 2)}


def vit_l_case(batch: int) -> dict:
    with torch.device("meta"):
        full = CIRModel(add_vision_pre_layernorm(Blip2ForImageTextRetrieval(vit_l_config())),
                        WordTokenizer(["a"]), backend="lavis")
    counts = parameter_counts(full)
    one_block = vit_l_config(vision_blocks=1)
    with torch.random.fork_rng(devices=[]):
        small = CIRModel(add_vision_pre_layernorm(Blip2ForImageTextRetrieval(one_block)), WordTokenizer(["a"]),
                         backend="lavis")
    per_sample = step_activation_bytes(small, 2) / 2
    per_image = 257 * 1024 * 2
    return {"counts": counts, "static": static_bytes(counts), "activations_per_query": per_sample,
            f"activations_batch_{batch}": per_sample * batch, "cache_bytes_per_image": per_image,
            "cache": {f"FashionIQ {k}": n * per_image for k, n in FASHIONIQ_IMAGES.items()}
            | {f"CIRR {k}": n * per_image for k, n in CIRR_IMAGES.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="queries per training step (paper profiles: 32)")
    args = parser.parse_args()
    tiny = tiny_case()
    print("tiny fixture:", json.dumps(tiny, indent=1))
    real = vit_l_case(args.batch)
    print("ViT-L:", json.dumps(real, indent=1))
    total = sum(real["static"].values()) + real[f"activations_batch_{args.batch}"]
    print(f"ViT-L training state + step activations (batch {args.batch}, fp32): {total / GB:.2f} GB; "
          f"image cache {real['cache_bytes_per_image'] / 2**20:.3f} MiB per image")


if __name__ == "__main__":
    main()
