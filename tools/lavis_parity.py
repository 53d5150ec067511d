"""Golden fixture for the LAVIS converter, computed by salesforce-lavis itself (`make lavis-parity`).

Two modes, run in two environments (they cannot share one: LAVIS 1.0.2 pins transformers < 4.27,
qurelib needs transformers 5), which is why each mode imports its library inside its function:

    .venv-lavis/bin/python tools/lavis_parity.py generate tests/fixtures/lavis_tiny
        Builds LAVIS's own modules - `lavis.models.clip_vit.VisionTransformer` (CLIP ViT, `ln_pre`,
        QuickGELU, bias-free patch conv) and `lavis.models.blip2_models.Qformer.BertLMHeadModel`
        (cross-attention every 2nd layer) - with tiny sizes and random weights, offline (LAVIS's
        model-zoo constructors would download bert-base-uncased and clip_vit_L.pth). It casts the
        ViT's conv / Linear weights to fp16 with LAVIS's own `convert_weights_to_fp16`, as LAVIS
        checkpoints store them, and saves `model.state_dict()` of a module laid out like the
        released `Blip2QuRe` - the released QuRe checkpoint format (raw state dict, `temp` included).
        Then it computes QuRe's embeddings the released way (`blip2_qure.py`): text through LAVIS's
        `blip_caption` processor and a BERT tokenizer with `[DEC]` added (padding to max_length=32);
        query = Q-Former(text, query tokens, reference image) -> first T positions -> text_proj ->
        mean -> L2; target = Q-Former(query tokens, image) -> vision_proj -> L2 per token;
        scores = max over the T target tokens. The ViT runs in fp32 on the fp16-valued weights.

    .venv/bin/python tools/lavis_parity.py check tests/fixtures/lavis_tiny
        Loads the fixture through qurelib's converter and prints the max abs difference of every
        output; exits 1 if one exceeds 1e-5. (tests/test_lavis.py asserts the same in `make test`.)

Fixture files: model.pth (raw state dict), expected.pt (inputs and LAVIS's outputs), fixture.json
(sizes, texts, versions), tokenizer/vocab.txt (a tiny BERT word-piece vocabulary).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

TOLERANCE = 1e-5
SEED = 12

# Tiny sizes (LAVIS ViT-L/14: width 1024, 16 heads, 23 blocks at 224 px; Q-Former: BERT-base).
IMAGE_SIZE = 32          # 4 x 4 patches + [CLS] = 17 tokens
PATCH_SIZE = 8
VISION_WIDTH = 48
VISION_HEADS = 3         # head dim 16: not the default width // 64, so the loader is told
VISION_LAYERS = 4        # LAVIS's VisionTransformer builds layers - 1 = 3 residual blocks
QFORMER_HIDDEN = 32
QFORMER_HEADS = 2
QFORMER_LAYERS = 3       # cross-attention in layers 0 and 2 (cross_attention_freq = 2)
QFORMER_INTERMEDIATE = 64
CROSS_ATTENTION_FREQ = 2
MAX_POSITIONS = 40       # >= max_txt_len
NUM_QUERY_TOKENS = 4
EMBED_DIM = 16           # vision_proj / text_proj output
MAX_TXT_LEN = 32         # released code
TEMPERATURE = 0.0625     # not the 0.07 init, so the test sees it carried over

# BERT word pieces; [DEC] is added by the tokenizer set-up, as LAVIS's init_tokenizer does.
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", "-", "'", "$", "?", "a", "and", "black",
         "blue", "collar", "color", "##ful", "dark", "##er", "dress", "floral", "has", "is", "it",
         "less", "light", "##ly", "logo", "long", "make", "more", "neck", "no", "of", "photo",
         "print", "red", "s", "shirt", "short", "sleeve", "##s", "that", "the", "v", "white", "with"]
# Upper case, LAVIS-cleaned punctuation, word pieces, [UNK], a CIRCO-style "$", truncation at 32.
TEXTS = [
    "Is Darker and has LONGER sleeves!!",
    "a photo of $ that is more colorful, with a v-neck (floral print); cafe?",
    "make it red ~ " * 6 + "and: no logo * with short sleeves and a white collar and long sleeves",
]
NUM_CORPUS = 5


def _randomize(module, generator) -> None:
    """Every tensor of `module` redrawn with distinct values (so no swap of two weights goes unseen:
    LAVIS copies the text FFN into the query FFN at init, which would hide swapping them)."""
    import torch

    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("LayerNorm.weight") or name.endswith(("ln_1.weight", "ln_2.weight",
                                                                   "ln_pre.weight", "ln_vision.weight")):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=generator))
            elif p.dim() >= 2 and "embedding" not in name and "query_tokens" not in name:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=generator) / fan_in ** 0.5)
            elif p.dim() == 1:  # biases: small, or they dominate and every embedding looks alike
                p.copy_(0.05 * torch.randn(p.shape, generator=generator))
            else:  # embeddings, query tokens
                p.copy_(torch.randn(p.shape, generator=generator))


def _tokenizer(out: Path):
    from transformers import BertTokenizer

    tokenizer_dir = out / "tokenizer"
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    (tokenizer_dir / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tokenizer = BertTokenizer.from_pretrained(str(tokenizer_dir))
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})  # lavis Blip2Base.init_tokenizer
    return tokenizer


def _import_torchvision() -> None:
    """Import torchvision, skipping its compiled-op registrations when they cannot load.

    .venv-lavis pairs the CPU build of torch 2.13.0 (the wheel on this disk) with PyPI's torchvision
    0.28.0, whose compiled ops link against the CUDA build of torch (libc10_cuda.so) and so do not
    load: torchvision then stops at import in `_meta_registrations` ("operator torchvision::nms does
    not exist"). The CUDA pair (torch 2.14.1 + torchvision 0.29.1) imports cleanly but needs 6.8 GB
    against 2.3 GB, more than some CI machines have free. LAVIS and timm import torchvision for image
    transforms only, which the fixture never calls (its images are random tensors fed to the ViT), so
    that one module is left out; calling a compiled torchvision op would still raise.
    """
    import types

    try:
        import torchvision  # noqa: F401
        return
    except RuntimeError as error:
        if "torchvision::" not in str(error):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
    import torchvision  # noqa: F401,F811


def generate(out: Path) -> None:
    """Write the fixture into `out` (see the module docstring)."""
    _import_torchvision()
    import lavis
    import torch
    import torch.nn.functional as F
    from lavis.models.blip2_models.blip2 import LayerNorm
    from lavis.models.blip2_models.Qformer import BertConfig, BertLMHeadModel
    from lavis.models.clip_vit import VisionTransformer
    from lavis.models.eva_vit import convert_weights_to_fp16
    from lavis.processors.blip_processors import BlipCaptionProcessor
    from torch import nn

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    tokenizer = _tokenizer(out)

    class QuReLayout(nn.Module):
        """The released Blip2QuRe's attribute names, so state_dict() has the released keys."""

        def __init__(self):
            super().__init__()
            self.visual_encoder = VisionTransformer(IMAGE_SIZE, PATCH_SIZE, VISION_WIDTH, VISION_LAYERS,
                                                    VISION_HEADS, use_grad_checkpointing=False)
            self.ln_vision = LayerNorm(VISION_WIDTH)
            config = BertConfig(vocab_size=len(VOCAB), hidden_size=QFORMER_HIDDEN,
                                num_hidden_layers=QFORMER_LAYERS, num_attention_heads=QFORMER_HEADS,
                                intermediate_size=QFORMER_INTERMEDIATE, max_position_embeddings=MAX_POSITIONS)
            config.encoder_width = VISION_WIDTH          # as Blip2Base.init_Qformer sets them
            config.add_cross_attention = True
            config.cross_attention_freq = CROSS_ATTENTION_FREQ
            config.query_length = NUM_QUERY_TOKENS
            self.Qformer = BertLMHeadModel(config=config)
            self.Qformer.resize_token_embeddings(len(tokenizer))  # + [DEC]
            self.query_tokens = nn.Parameter(torch.zeros(1, NUM_QUERY_TOKENS, QFORMER_HIDDEN))
            self.vision_proj = nn.Linear(QFORMER_HIDDEN, EMBED_DIM)
            self.text_proj = nn.Linear(QFORMER_HIDDEN, EMBED_DIM)
            self.itm_head = nn.Linear(QFORMER_HIDDEN, 2)
            self.temp = nn.Parameter(TEMPERATURE * torch.ones([]))

    model = QuReLayout()
    temp = model.temp.detach().clone()
    _randomize(model, generator)
    model.temp.data.copy_(temp)
    convert_weights_to_fp16(model.visual_encoder)  # LAVIS's vit_precision="fp16" storage
    state = model.state_dict()
    torch.save(state, out / "model.pth")            # train_qure.py: torch.save(model.state_dict())

    model.visual_encoder.float()  # fp16 values, fp32 arithmetic (LAVIS on CPU never autocasts)
    model.eval()
    reference = torch.randn(len(TEXTS), 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    corpus = torch.randn(NUM_CORPUS, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    clean = BlipCaptionProcessor(max_words=50)      # QuRe's txt_processors["eval"]
    tokens = tokenizer([clean(t) for t in TEXTS], padding="max_length", truncation=True,
                       max_length=MAX_TXT_LEN, return_tensors="pt")
    with torch.no_grad():
        # query: blip2_qure.extract_query_features_fiq
        ref_embeds = model.ln_vision(model.visual_encoder(reference)).float()     # (B, P, W)
        ref_atts = torch.ones(ref_embeds.shape[:-1], dtype=torch.long)
        query_tokens = model.query_tokens.expand(ref_embeds.shape[0], -1, -1)      # (B, T, H)
        query_atts = torch.ones(query_tokens.shape[:-1], dtype=torch.long)
        fused = model.Qformer.bert(tokens.input_ids, query_embeds=query_tokens,
                                   attention_mask=torch.cat([query_atts, tokens.attention_mask], dim=1),
                                   encoder_hidden_states=ref_embeds, encoder_attention_mask=ref_atts,
                                   return_dict=True).last_hidden_state
        query = F.normalize(model.text_proj(fused[:, :NUM_QUERY_TOKENS]).mean(dim=1), dim=-1)  # (B, D)
        # targets: blip2_qure.extract_target_features
        vision_features = model.visual_encoder(corpus)                             # (N, P, W)
        tar_embeds = model.ln_vision(vision_features).float()
        tar_out = model.Qformer.bert(query_embeds=model.query_tokens.expand(NUM_CORPUS, -1, -1),
                                     encoder_hidden_states=tar_embeds,
                                     encoder_attention_mask=torch.ones(tar_embeds.shape[:-1], dtype=torch.long),
                                     return_dict=True).last_hidden_state
        target = F.normalize(model.vision_proj(tar_out), dim=-1)                   # (N, T, D)
        scores = torch.einsum("ik,jlk->ijl", query, target).max(dim=-1).values    # (B, N), released score()
    expected = {"reference_pixels": reference, "corpus_pixels": corpus,
                "input_ids": tokens.input_ids, "attention_mask": tokens.attention_mask,
                "vision_features": vision_features, "query_embeds": query, "target_embeds": target,
                "scores": scores}
    torch.save({k: v.contiguous() for k, v in expected.items()}, out / "expected.pt")
    meta = {
        "generated_by": "tools/lavis_parity.py generate (make lavis-parity)",
        "salesforce_lavis": lavis.__version__ if hasattr(lavis, "__version__") else "1.0.2",
        "torch": torch.__version__.split("+")[0],
        "seed": SEED, "texts": TEXTS, "max_txt_len": MAX_TXT_LEN, "temperature": TEMPERATURE,
        "vision": {"image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE, "width": VISION_WIDTH,
                   "heads": VISION_HEADS, "blocks": VISION_LAYERS - 1},
        "qformer": {"hidden": QFORMER_HIDDEN, "heads": QFORMER_HEADS, "layers": QFORMER_LAYERS,
                    "intermediate": QFORMER_INTERMEDIATE, "cross_attention_freq": CROSS_ATTENTION_FREQ,
                    "query_tokens": NUM_QUERY_TOKENS, "vocab": len(tokenizer), "embed_dim": EMBED_DIM},
        "fp16_keys": sorted(k for k, v in state.items() if v.dtype == torch.float16),
    }
    (out / "fixture.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {out}: {len(state)} tensors, "
          f"{sum(v.numel() for v in state.values()):,} numbers; scores {tuple(scores.shape)}")


def check(out: Path) -> int:
    """Max abs differences between qurelib (through the converter) and the fixture; 0 if all <= 1e-5."""
    import torch

    from qurelib.model.lavis import fixture_differences

    diffs = fixture_differences(out)
    worst = max(diffs.values())
    for name, value in diffs.items():
        print(f"  {name:<16} max |qurelib - lavis| = {value:.3g}")
    status = "ok" if worst <= TOLERANCE else "FAILED"
    print(f"lavis parity {status}: worst {worst:.3g} (tolerance {TOLERANCE:g}; torch {torch.__version__})")
    return 0 if worst <= TOLERANCE else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["generate", "check"])
    parser.add_argument("out", type=Path, nargs="?",
                        default=Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "lavis_tiny")
    args = parser.parse_args(argv)
    if args.mode == "generate":
        generate(args.out)
        return 0
    return check(args.out)


if __name__ == "__main__":
    sys.exit(main())
