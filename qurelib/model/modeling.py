"""The CIR scorer of QuRe: BLIP-2's Q-Former on transformers' `Blip2ForImageTextRetrieval`.

Mirrors the released `blip2_qure.py` (docs/METHOD.md, section 9):

1. `encode_image`: the (frozen) ViT, fp16 under autocast on CUDA. It returns the encoder output
   *before* BLIP-2's vision layer-norm (`ln_vision`, here `vision_model.post_layernorm`) because
   the released code trains that layer-norm while the ViT stays frozen: the output can be cached
   once and the layer-norm still learns.
2. `encode_query`: query tokens + modification text through the Q-Former with cross-attention to
   the reference image (BLIP-2's image-text matching path); the query-token outputs ->
   text projection -> mean over tokens -> L2-normalise.  (B, D)
3. `encode_corpus`: query tokens alone through the Q-Former (the image-text contrastive path);
   every token -> vision projection -> L2-normalise.  (N, T, D)
4. `score`: max over the T corpus tokens of the dot product (`qure.score_corpus`); the learnable
   `temperature` (init 0.07, no clamp) divides scores in the training losses.

This module holds the model and its tiny preset; `qurelib.model.load` turns a name into a model
(a checkpoint dir, the "tiny" preset, real BLIP-2 weights) and `qurelib.model.checkpoint` writes
and reads checkpoints.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Blip2Config, Blip2ForImageTextRetrieval, Blip2QFormerConfig, Blip2VisionConfig

from qurelib.data.synthetic import VOCABULARY
from qurelib.data.transforms import targetpad_transform
from qurelib.model.tokenizer import WordTokenizer
from qurelib.qure import score_corpus

MAX_TEXT_LENGTH = 32  # released code: BERT tokenizer with max_txt_len=32


class ModelLoadError(RuntimeError):
    """A model or checkpoint could not be loaded; the message says which file and what to do."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> cuda when available, else cpu. ValueError naming the `device` parameter for a name
    torch does not know or a CUDA device this machine lacks (torch's own error is an assertion)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r} is not a device name; use 'auto', 'cpu' or 'cuda' (or 'cuda:N')") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ValueError(f"device={device!r}: no CUDA device is available here (torch {torch.__version__}, {build}); "
                         f"use device='cpu' or 'auto' (notebooks and make: -p device cpu)")
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                         f"use 'cuda' or 'cuda:0' .. 'cuda:{torch.cuda.device_count() - 1}'")
    return resolved


class CIRModel(nn.Module):
    """BLIP-2 Q-Former scorer for composed image retrieval (see the module docstring)."""

    def __init__(self, blip2: nn.Module, tokenizer, *, freeze_vision: bool = True,
                 backend: str = "tiny", source: str = "tiny"):
        super().__init__()
        self.blip2 = blip2                      # transformers Blip2ForImageTextRetrieval
        self.tokenizer = tokenizer              # WordTokenizer | HFTokenizer
        self.image_size = int(blip2.config.vision_config.image_size)
        self.temperature = nn.Parameter(torch.tensor(0.07))  # released code: no clamp
        self.backend, self.source = backend, source
        self._transform = None
        self.set_vision_frozen(freeze_vision)

    # -- set-up -----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.temperature.device

    @property
    def num_query_tokens(self) -> int:
        return self.blip2.query_tokens.shape[1]

    def set_vision_frozen(self, frozen: bool) -> None:
        """Freeze (or unfreeze) the ViT; its layer-norm, the Q-Former and projections stay trainable."""
        self.vision_frozen = bool(frozen)
        vision = self.blip2.vision_model
        for module in (vision.embeddings, vision.encoder):
            module.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True):
        """As nn.Module.train, but a frozen ViT always stays in eval mode."""
        super().train(mode)
        if getattr(self, "vision_frozen", False):
            self.blip2.vision_model.eval()
        return self

    # -- inputs -----------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """LAVIS caption cleaning + tokenizer -> input_ids, attention_mask (B, L<=32) long, on device."""
        out = self.tokenizer(list(texts), max_length=MAX_TEXT_LENGTH)
        return {k: v.to(self.device) for k, v in out.items()}

    def preprocess(self, images: Sequence) -> torch.Tensor:
        """PIL images -> (B, 3, S, S) float32 pixels (target-pad, resize, CLIP normalisation), on CPU."""
        if self._transform is None:
            self._transform = targetpad_transform(self.image_size)
        return torch.stack([self._transform(image) for image in images])

    # -- encoders ---------------------------------------------------------------------------
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """ViT patch features before `ln_vision`: (B, 3, S, S) -> (B, P, H) float32.

        With a frozen tower this runs without autograd (fp16 autocast on CUDA), so the result can be
        cached and passed back as `image_embeds=` to `encode_query` / `encode_corpus`.
        """
        vision = self.blip2.vision_model
        pixels = pixels.to(self.device, vision.embeddings.patch_embedding.weight.dtype)
        half = self.vision_frozen and self.device.type == "cuda"
        autocast = torch.autocast("cuda", dtype=torch.float16) if half else contextlib.nullcontext()
        with autocast, torch.set_grad_enabled(torch.is_grad_enabled() and not self.vision_frozen):
            hidden = vision.embeddings(pixels)                              # (B, P, H)
            hidden = vision.encoder(inputs_embeds=hidden).last_hidden_state  # (B, P, H)
        return hidden.float()

    def _image_tokens(self, pixels, image_embeds) -> torch.Tensor:
        """Cross-attention input of the Q-Former: ln_vision(ViT features) (B, P, H)."""
        if image_embeds is None:
            if pixels is None:
                raise ValueError("pass reference/corpus pixels or precomputed image_embeds")
            image_embeds = self.encode_image(pixels)
        layer_norm = self.blip2.vision_model.post_layernorm
        return layer_norm(image_embeds.to(self.device, layer_norm.weight.dtype))

    def query_hidden_states(self, reference_pixels=None, input_ids=None, attention_mask=None, *,
                            image_embeds=None) -> torch.Tensor:
        """Q-Former output of the matching path: [query tokens ; text] -> (B, T + L, Hq)."""
        image = self._image_tokens(reference_pixels, image_embeds)           # (B, P, H)
        batch, num_query = image.shape[0], self.num_query_tokens
        input_ids = input_ids.to(self.device)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        query_tokens = self.blip2.query_tokens.expand(batch, -1, -1)        # (B, T, Hq)
        embeds = self.blip2.embeddings(input_ids=input_ids, query_embeds=query_tokens)
        query_mask = torch.ones(batch, num_query, dtype=attention_mask.dtype, device=self.device)
        out = self.blip2.qformer(
            query_embeds=embeds, query_length=num_query,
            attention_mask=torch.cat([query_mask, attention_mask.to(self.device)], dim=1),
            encoder_hidden_states=image,
            encoder_attention_mask=torch.ones(image.shape[:2], dtype=torch.long, device=self.device),
        )
        return out.last_hidden_state

    def encode_query(self, reference_pixels=None, input_ids=None, attention_mask=None, *,
                     image_embeds=None) -> torch.Tensor:
        """Composed query embedding (B, D), L2-normalised (released code: mean of projected query tokens).

        reference_pixels (B, 3, S, S) or image_embeds (B, P, H) from `encode_image`;
        input_ids, attention_mask (B, L) long from `tokenize`.
        """
        hidden = self.query_hidden_states(reference_pixels, input_ids, attention_mask,
                                          image_embeds=image_embeds)
        query = hidden[:, : self.num_query_tokens]                          # (B, T, Hq)
        return F.normalize(self.blip2.text_projection(query).mean(dim=1), dim=-1)

    def encode_corpus(self, pixels=None, *, image_embeds=None) -> torch.Tensor:
        """Corpus image embedding (N, T, D): every Q-Former query token -> vision projection, L2-normalised."""
        image = self._image_tokens(pixels, image_embeds)                    # (N, P, H)
        query_tokens = self.blip2.query_tokens.expand(image.shape[0], -1, -1)
        out = self.blip2.qformer(
            query_embeds=query_tokens, encoder_hidden_states=image,
            encoder_attention_mask=torch.ones(image.shape[:2], dtype=torch.long, device=self.device),
        )
        return F.normalize(self.blip2.vision_projection(out.last_hidden_state), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Text-only contrastive embedding (B, D): Q-Former text encoder, [CLS] -> text projection, L2."""
        input_ids = input_ids.to(self.device)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = self.blip2.qformer(query_embeds=self.blip2.embeddings(input_ids=input_ids), query_length=0,
                                 attention_mask=attention_mask.to(self.device))
        return F.normalize(self.blip2.text_projection(out.last_hidden_state[:, 0]), dim=-1)

    def score(self, query_emb: torch.Tensor, corpus_emb: torch.Tensor) -> torch.Tensor:
        """scores[q, c] = max_t <query_q, corpus_c,t>: (Q, D) x (N, T, D) -> (Q, N) float32."""
        return score_corpus(query_emb, corpus_emb)



def tiny_blip2_config(vocab_size: int, image_size: int = 64, init_std: float = 0.08):
    """The tiny preset (sized for 64 px Fashion-Shapes; each literal commented).

    init_std: weight init std everywhere. BERT's 0.02 suits width 768 (gain 0.02 * sqrt(768) ~ 0.55
    per linear); at width 128 it gives 0.23, every residual branch is ~20x weaker than its
    input, all embeddings start at cosine ~0.9999 and contrastive training stalls.
    0.08 ~ 1 / sqrt(128) keeps the branches alive.
    Patch 16 (a 4x4 grid + [CLS]): measured on Fashion-Shapes default, a 3-layer ViT with patch 8
    (64 tokens) learns colour and pattern but stays at chance on garment shape within the 2-minute
    pretraining budget; patch 16 is ~3x cheaper per image and learns shape (val category 77%).
    """
    vision = Blip2VisionConfig(
        hidden_size=128, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4,
        image_size=image_size, patch_size=16,   # 4x4 = 16 patches + [CLS]; see the note above
        initializer_range=init_std)             # the 1e-10 default makes denormals (8x slower backward)
    qformer = Blip2QFormerConfig(
        hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
        cross_attention_frequency=1,            # both layers see the image (BLIP-2: every 2nd of 12)
        encoder_hidden_size=128, vocab_size=vocab_size, max_position_embeddings=64,
        use_qformer_text_input=True,            # without it text tokens have no FFN (AttributeError)
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,  # BERT's 0.1 only slows a short run
        initializer_range=init_std)
    return Blip2Config(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(),
                       num_query_tokens=8, image_text_hidden_size=128,
                       initializer_range=init_std)   # word embeddings use the top-level value


def build_tiny(words: Sequence[str] | None = None, *, freeze_vision: bool = True, seed: int = 0) -> CIRModel:
    """Random-init tiny CIRModel with a word tokenizer over `words` (default: the discrete Fashion-Shapes
    VOCABULARY; a generated dataset's own words, e.g. the continuous variant's, come from
    `load.read_vocabulary(data_root)`).

    Initialisation uses its own seed, so "tiny" is the same model in every process.
    """
    tokenizer = WordTokenizer(VOCABULARY if words is None else words)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        blip2 = Blip2ForImageTextRetrieval(tiny_blip2_config(len(tokenizer)))
        # transformers zero-initialises query tokens; LAVIS draws them N(0, 0.02) - identical
        # zero tokens would make all T corpus tokens equal at init.
        nn.init.normal_(blip2.query_tokens, std=blip2.config.qformer_config.initializer_range)
    return CIRModel(blip2, tokenizer, freeze_vision=freeze_vision, backend="tiny", source="tiny")

