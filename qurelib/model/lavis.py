"""The paper's own weights: LAVIS BLIP-2 (CLIP ViT-L/14) state dicts -> a CIRModel on transformers.

QuRe trains LAVIS's BLIP-2 with the CLIP ViT-L/14 encoder (`vit_model="clip_L"`, backbone
`pretrain_vitL`); transformers' `Blip2ForImageTextRetrieval` holds the same computation under other
names, except for CLIP's pre-LayerNorm `ln_pre`, for which `PreNormVisionEmbeddings` adds a slot.
This module converts, strictly, and is proven equal to salesforce-lavis itself on a tiny golden
fixture (`make lavis-parity`, tools/lavis_parity.py, tests/test_lavis.py).

Accepted files (`load_model("lavis:/path/model.pth")`, or any path ending in `.pth`):
* the released QuRe checkpoints: `torch.save(model.state_dict())`, a raw state dict with the frozen
  `visual_encoder.*`, `ln_vision.*`, `Qformer.*`, `query_tokens`, `vision_proj`, `text_proj`,
  `itm_head` and the learned temperature `temp` (-> `CIRModel.temperature`);
* LAVIS's own checkpoints, `{"model": state_dict, ...}`. LAVIS's trainer drops frozen weights when
  it saves, so such a file may hold no `visual_encoder.*`: `merge_vision_tower` (or
  `python -m qurelib.model.lavis merge-vit`) adds LAVIS's CLIP ViT-L weights (clip_vit_L.pth) once.

Sizes come from the checkpoint: ViT width, patch, image size, number of residual blocks (LAVIS
versions build 21, 22 or 23; QuRe's copy 23), MLP width; Q-Former width, layers, cross-attention
frequency, vocabulary (30,523 = BERT-base-uncased + LAVIS's `[DEC]`), query tokens, projection
width. Attention heads cannot be read from weights: both CLIP and BERT use 64-wide heads
(ViT-L 1024 -> 16, BERT-base 768 -> 12), so heads = width // 64 unless `vision_heads` /
`qformer_heads` say otherwise. Fixed by the architectures: ViT `quick_gelu`, LayerNorm eps 1e-5;
Q-Former GELU, LayerNorm eps 1e-12.

Strict: every checkpoint tensor is mapped or on `IGNORED_KEYS`, every model tensor is filled (from
the checkpoint, or on `FILLED_HERE`), shapes agree; anything else is a ModelLoadError naming the keys.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (Blip2Config, Blip2ForImageTextRetrieval, Blip2QFormerConfig, Blip2VisionConfig,
                          BertTokenizer)
from transformers.models.blip_2.modeling_blip_2 import Blip2VisionEmbeddings

from qurelib.model.modeling import CIRModel, ModelLoadError
from qurelib.model.tokenizer import HFTokenizer

PREFIX = "lavis:"
HEAD_DIM = 64                   # CLIP and BERT attention head width (see the module docstring)
VISION_LAYER_NORM_EPS = 1e-5    # CLIP's LayerNorm (ln_pre, ln_1/ln_2, LAVIS's ln_vision)
QFORMER_LAYER_NORM_EPS = 1e-12  # BERT's
BERT_DIR_ENV = "QURE_BERT_DIR"  # folder with the BERT-base-uncased tokenizer files
BERT_FILES = ("vocab.txt",)     # required; tokenizer_config.json / tokenizer.json are read if there
BERT_HUB_IDS = ("bert-base-uncased", "google-bert/bert-base-uncased")  # looked up in the local HF cache only
CLIP_VIT_L_URL = "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/clip_vit_L.pth"

# Checkpoint tensors with no counterpart, on purpose: the Q-Former's language-model head (QuRe
# never generates text) and BERT's position-id buffer (transformers rebuilds it).
IGNORED_KEYS = (r"Qformer\.cls\..*", r"Qformer\.bert\.embeddings\.position_ids")
# Model tensors with no checkpoint counterpart: CLIP's patch convolution has no bias.
FILLED_HERE = {"vision_model.embeddings.patch_embedding.bias": "zeros (CLIP's conv1 has no bias)"}

# LAVIS name <-> transformers name. `{x}` stands for one of PLACEHOLDERS[x] and is the same on both
# sides, so the table reads both ways (errors name keys the way the user's file spells them).
PLACEHOLDERS = {
    "i": r"\d+", "p": "weight|bias", "att": "attention|crossattention", "qkv": "query|key|value",
    "sub": "dense|LayerNorm", "ffn": "intermediate|intermediate_query", "out": "output|output_query",
    "emb": "word_embeddings|position_embeddings", "proj": "vision|text",
}
_B, _V = "visual_encoder.transformer.resblocks.{i}.", "vision_model.encoder.layers.{i}."
_L, _Q = "Qformer.bert.encoder.layer.{i}.", "qformer.encoder.layer.{i}."
KEY_RULES: tuple[tuple[str, str], ...] = (
    ("visual_encoder.class_embedding", "vision_model.embeddings.class_embedding"),          # (W,) -> (1, 1, W)
    ("visual_encoder.positional_embedding", "vision_model.embeddings.position_embedding"),  # (P, W) -> (1, P, W)
    ("visual_encoder.conv1.weight", "vision_model.embeddings.patch_embedding.weight"),
    ("visual_encoder.ln_pre.{p}", "vision_model.embeddings.pre_layernorm.{p}"),
    (_B + "attn.in_proj_{p}", _V + "self_attn.qkv.{p}"),  # fused q, k, v, in that order on both sides
    (_B + "attn.out_proj.{p}", _V + "self_attn.projection.{p}"),
    (_B + "ln_1.{p}", _V + "layer_norm1.{p}"),
    (_B + "ln_2.{p}", _V + "layer_norm2.{p}"),
    (_B + "mlp.c_fc.{p}", _V + "mlp.fc1.{p}"),
    (_B + "mlp.c_proj.{p}", _V + "mlp.fc2.{p}"),
    ("ln_vision.{p}", "vision_model.post_layernorm.{p}"),
    ("query_tokens", "query_tokens"),
    ("Qformer.bert.embeddings.{emb}.weight", "embeddings.{emb}.weight"),
    ("Qformer.bert.embeddings.LayerNorm.{p}", "qformer.layernorm.{p}"),
    (_L + "{att}.self.{qkv}.{p}", _Q + "{att}.attention.{qkv}.{p}"),
    (_L + "{att}.output.{sub}.{p}", _Q + "{att}.output.{sub}.{p}"),
    (_L + "{ffn}.dense.{p}", _Q + "{ffn}.dense.{p}"),
    (_L + "{out}.{sub}.{p}", _Q + "{out}.{sub}.{p}"),
    ("{proj}_proj.{p}", "{proj}_projection.{p}"),
    ("itm_head.{p}", "itm_head.{p}"),
)


def _template_regex(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)  # text, name, text, name, ...
    return re.compile("".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>{PLACEHOLDERS[part]})"
                              for i, part in enumerate(parts)))


_FORWARD = [(_template_regex(lavis), hf) for lavis, hf in KEY_RULES]
_BACKWARD = [(_template_regex(hf), lavis) for lavis, hf in KEY_RULES]
_IGNORED = [re.compile(pattern) for pattern in IGNORED_KEYS]
_BLOCK = r"visual_encoder\.transformer\.resblocks\.(\d+)\."
_LAYER = r"Qformer\.bert\.encoder\.layer\.(\d+)\."


def _rename(key: str, rules) -> str | None:
    return next((target.format(**m.groupdict()) for regex, target in rules if (m := regex.fullmatch(key))), None)


def lavis_key(key: str) -> str:
    """The LAVIS name of a transformers BLIP-2 key (the key itself when it has none)."""
    return _rename(key, _BACKWARD) or key


# Key layouts of other vision towers, named in the error when one is given instead of CLIP ViT-L.
_EVA_VIT_G = ("visual_encoder.blocks.", "visual_encoder.patch_embed.", "visual_encoder.cls_token")


# -- the vision tower's missing slot ------------------------------------------------------------

class PreNormVisionEmbeddings(Blip2VisionEmbeddings):
    """Blip2VisionEmbeddings followed by CLIP's pre-LayerNorm (`ln_pre`), which transformers' BLIP-2
    vision model (built for EVA ViT-g) lacks: (B, 3, S, S) -> (B, P, W).

    It must not be dropped (the features then differ grossly) and cannot be folded into other
    weights (a LayerNorm is not linear). Being part of `embeddings`, it is frozen with the ViT and
    runs inside `CIRModel.encode_image` and `Blip2VisionModel.forward` alike.
    """

    def __init__(self, config: Blip2VisionConfig):
        super().__init__(config)
        self.pre_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        return self.pre_layernorm(super().forward(pixel_values, interpolate_pos_encoding))


def add_vision_pre_layernorm(blip2: nn.Module) -> nn.Module:
    """Give `blip2.vision_model` the pre-LayerNorm slot (in place; keeps the embedding weights)."""
    old = blip2.vision_model.embeddings
    if not isinstance(old, PreNormVisionEmbeddings):
        new = PreNormVisionEmbeddings(blip2.config.vision_config).to(old.patch_embedding.weight)
        new.load_state_dict(old.state_dict(), strict=False)  # the pre-LayerNorm starts as identity
        blip2.vision_model.embeddings = new
    return blip2


def has_vision_pre_layernorm(blip2: nn.Module) -> bool:
    """True for a model built by this module (checkpoints record it to rebuild the slot)."""
    return isinstance(blip2.vision_model.embeddings, PreNormVisionEmbeddings)


# -- reading ------------------------------------------------------------------------------------

def read_lavis_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of a LAVIS / QuRe `.pth` file: a raw one, or the `"model"` entry of LAVIS's
    `{"model": ..., "optimizer": ...}`. Unpickles tensors and plain containers only (weights_only)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"load_model: no LAVIS checkpoint file {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, not a torch file, or objects weights_only refuses
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ModelLoadError(f"load_model: cannot read {path} as a torch.save state dict ({reason}); "
                             f"is the file complete (compare its size with the download)?") from None
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ModelLoadError(f"load_model: {path} is not a state dict (expected a dict of tensors, or "
                             f"LAVIS's {{'model': state_dict, ...}}); top-level keys: {_head(obj)}")
    return state


def _head(obj, n: int = 6) -> str:
    keys = list(obj)[:n] if isinstance(obj, dict) else [type(obj).__name__]
    return ", ".join(map(str, keys)) + (", ..." if isinstance(obj, dict) and len(obj) > n else "")


def _need(state: dict, key: str, source: str, dims: int) -> torch.Tensor:
    if key not in state:
        raise ModelLoadError(f"load_model: {source} lacks {key!r}, which a LAVIS BLIP-2 CLIP ViT-L "
                             f"checkpoint has")
    value = state[key]
    if value.dim() != dims:
        raise ModelLoadError(f"load_model: {source}: {key!r} has shape {tuple(value.shape)}, expected "
                             f"{dims} dimensions")
    return value


def _indices(state: dict, pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state if (m := regex.match(k))})


def _heads(width: int, heads: int | None, what: str, argument: str, source: str) -> int:
    heads = heads or width // HEAD_DIM
    if heads < 1 or width % heads:
        raise ModelLoadError(f"load_model: {source}: cannot split the {width}-wide {what} into attention "
                             f"heads ({HEAD_DIM}-wide heads assumed); pass {argument}=")
    return heads


def _check_vision_tower(state: dict, source: str) -> None:
    eva = sorted(k for k in state if k.startswith(_EVA_VIT_G))
    if eva:
        raise ModelLoadError(
            f"load_model: {source} holds an EVA ViT-g vision tower ({eva[0]!r}, ... {len(eva)} keys; "
            f"LAVIS vit_model='eva_clip_g'), not CLIP ViT-L (vit_model='clip_L', keys "
            f"'visual_encoder.transformer.resblocks.*'). This converter reads ViT-L checkpoints; for "
            f"ViT-g use transformers' weights: load_model('Salesforce/blip2-itm-vit-g').")
    if not any(k.startswith("visual_encoder.") for k in state):
        raise ModelLoadError(
            f"load_model: {source} holds no vision tower (no 'visual_encoder.*' keys; it has e.g. "
            f"{_head(state, 4)}). LAVIS's trainer saves only trainable weights and BLIP-2's ViT is "
            f"frozen. Add LAVIS's CLIP ViT-L weights ({CLIP_VIT_L_URL}) once:\n"
            f"    python -m qurelib.model.lavis merge-vit {source} clip_vit_L.pth OUT.pth --blocks 23\n"
            f"(23 residual blocks as QuRe's LAVIS copy builds), then load OUT.pth.")


def lavis_blip2_config(state: dict[str, torch.Tensor], *, vision_heads: int | None = None,
                       qformer_heads: int | None = None, source: str = "checkpoint") -> Blip2Config:
    """The transformers BLIP-2 config of a LAVIS CLIP-ViT-L BLIP-2 state dict, sizes read from it."""
    _check_vision_tower(state, source)
    conv = _need(state, "visual_encoder.conv1.weight", source, 4)             # (W, 3, p, p)
    positions = _need(state, "visual_encoder.positional_embedding", source, 2)  # (1 + g*g, W)
    width, patch = conv.shape[0], conv.shape[-1]
    grid = math.isqrt(positions.shape[0] - 1)
    if grid * grid != positions.shape[0] - 1:
        raise ModelLoadError(f"load_model: {source}: 'visual_encoder.positional_embedding' has "
                             f"{positions.shape[0]} rows, not 1 + a square number of patches")
    blocks = _indices(state, _BLOCK)
    mlp = _need(state, f"visual_encoder.transformer.resblocks.{blocks[0] if blocks else 0}.mlp.c_fc.weight",
                source, 2)
    vision = Blip2VisionConfig(
        hidden_size=width, intermediate_size=mlp.shape[0], num_hidden_layers=blocks[-1] + 1,
        num_attention_heads=_heads(width, vision_heads, "ViT", "vision_heads", source),
        image_size=grid * patch, patch_size=patch, hidden_act="quick_gelu",
        layer_norm_eps=VISION_LAYER_NORM_EPS, qkv_bias=True, attention_dropout=0.0,
        initializer_range=0.02)  # the 1e-10 default gives denormals until the weights are loaded

    words = _need(state, "Qformer.bert.embeddings.word_embeddings.weight", source, 2)  # (V, H)
    hidden = words.shape[1]
    layers = _indices(state, _LAYER)
    cross = _indices(state, _LAYER + r"crossattention\.")
    if not layers or not cross:
        raise ModelLoadError(f"load_model: {source}: no Q-Former layers with cross-attention "
                             f"('Qformer.bert.encoder.layer.N.crossattention.*')")
    frequency = cross[1] - cross[0] if len(cross) > 1 else layers[-1] + 1
    if cross != list(range(0, layers[-1] + 1, frequency)):
        raise ModelLoadError(f"load_model: {source}: Q-Former cross-attention in layers {cross}, not "
                             f"every k-th layer from 0 as BLIP-2 builds it")
    cross_key = _need(state, f"Qformer.bert.encoder.layer.{cross[0]}.crossattention.self.key.weight", source, 2)
    if cross_key.shape[1] != width:
        raise ModelLoadError(
            f"load_model: {source}: the Q-Former attends to {cross_key.shape[1]}-wide image features "
            f"('Qformer.bert.encoder.layer.{cross[0]}.crossattention.self.key.weight' "
            f"{tuple(cross_key.shape)}) but the vision tower is {width} wide "
            f"('visual_encoder.conv1.weight' {tuple(conv.shape)}): the Q-Former was trained on another "
            f"ViT (1408 = EVA ViT-g, 1024 = CLIP ViT-L)")
    intermediate = _need(state, f"Qformer.bert.encoder.layer.{layers[0]}.intermediate.dense.weight", source, 2)
    qformer = Blip2QFormerConfig(
        vocab_size=words.shape[0], hidden_size=hidden, num_hidden_layers=layers[-1] + 1,
        num_attention_heads=_heads(hidden, qformer_heads, "Q-Former", "qformer_heads", source),
        intermediate_size=intermediate.shape[0], cross_attention_frequency=frequency,
        encoder_hidden_size=width, layer_norm_eps=QFORMER_LAYER_NORM_EPS,
        max_position_embeddings=_need(state, "Qformer.bert.embeddings.position_embeddings.weight",
                                      source, 2).shape[0],
        use_qformer_text_input=True)  # without it text tokens have no FFN (docs/ENVIRONMENT.md §3)
    query_tokens = _need(state, "query_tokens", source, 3)                     # (1, T, H)
    projection = _need(state, "vision_proj.weight", source, 2)                 # (D, H)
    return Blip2Config(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(),
                       num_query_tokens=query_tokens.shape[1], image_text_hidden_size=projection.shape[0])


def convert_lavis_state_dict(state: dict[str, torch.Tensor], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """LAVIS names -> `Blip2ForImageTextRetrieval` names, float32, CLIP's 1-D class / position
    embeddings given transformers' batch dimensions. `temp` is not a BLIP-2 tensor: read it apart.

    Raises ModelLoadError naming every key that is neither mapped nor on `IGNORED_KEYS`.
    """
    out, unknown = {}, []
    for key, value in state.items():
        if key == "temp" or any(p.fullmatch(key) for p in _IGNORED):
            continue
        target = _rename(key, _FORWARD)
        if target is None:
            unknown.append(key)
            continue
        value = value.detach().float()  # LAVIS stores the ViT's conv / Linear weights in fp16
        if key == "visual_encoder.class_embedding" and value.dim() == 1:
            value = value.reshape(1, 1, -1)                                       # (1, 1, W)
        elif key == "visual_encoder.positional_embedding" and value.dim() == 2:
            value = value.unsqueeze(0)                                            # (1, P, W)
        out[target] = value
    if unknown:
        raise ModelLoadError(f"load_model: {source} has {len(unknown)} tensor(s) a LAVIS BLIP-2 CLIP ViT-L "
                             f"model does not: {_listing(unknown)}")
    return out


def _listing(keys, n: int = 6) -> str:
    keys = sorted(keys)
    return ", ".join(repr(k) for k in keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def fill_strictly(blip2: nn.Module, weights: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load converted `weights` into `blip2`: every model tensor filled (or on FILLED_HERE), every
    weight used, every shape equal; else ModelLoadError naming the keys (LAVIS names) and shapes."""
    expected = blip2.state_dict()
    for key in FILLED_HERE:
        if key in expected and key not in weights:
            weights = {**weights, key: torch.zeros_like(expected[key])}
    missing = [lavis_key(k) for k in expected if k not in weights]
    extra = [lavis_key(k) for k in weights if k not in expected]
    shapes = [f"{lavis_key(k)!r} is {tuple(weights[k].shape)}, the model's {k!r} {tuple(v.shape)}"
              for k, v in expected.items() if k in weights and weights[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"missing: {_listing(missing)}")
    if extra:
        problems.append(f"not in a model of the checkpoint's own sizes: {_listing(extra)}")
    if shapes:
        problems.append("wrong shape: " + "; ".join(shapes[:4]) + (f"; ... ({len(shapes)} in all)" if len(shapes) > 4 else ""))
    if problems:
        raise ModelLoadError(f"load_model: {source} does not fill a BLIP-2 CLIP ViT-L model "
                             f"(sizes read from the file itself):\n  " + "\n  ".join(problems))
    blip2.load_state_dict(weights, strict=True)


# -- the tokenizer ------------------------------------------------------------------------------

def lavis_tokenizer(directory: str | os.PathLike | None = None, *, checkpoint: str | os.PathLike | None = None
                    ) -> HFTokenizer:
    """LAVIS's text side: BERT-base-uncased's tokenizer with `[DEC]` added (Blip2Base.init_tokenizer),
    behind `HFTokenizer` (which applies the `blip_caption` cleaning; CIRModel truncates at 32).

    Read from `directory` if given; otherwise from $QURE_BERT_DIR, then `bert-base-uncased/` beside
    the checkpoint, then the local Hugging Face cache. Never downloads: ModelLoadError says where
    it looked and which files to put there.
    """
    if directory is not None:
        places = [("the given folder", Path(directory).expanduser())]
    else:
        places = [(f"${BERT_DIR_ENV}", Path(os.environ[BERT_DIR_ENV]).expanduser())] \
            if os.environ.get(BERT_DIR_ENV) else []
        if checkpoint is not None:
            places.append(("beside the checkpoint", Path(checkpoint).expanduser().parent / "bert-base-uncased"))
    tokenizer = None
    for _, folder in places:
        if all((folder / name).is_file() for name in BERT_FILES):
            tokenizer = BertTokenizer.from_pretrained(str(folder), local_files_only=True)
            break
    if tokenizer is None and directory is None:
        for hub_id in BERT_HUB_IDS:
            try:
                found = BertTokenizer.from_pretrained(hub_id, local_files_only=True)
            except (OSError, ValueError):
                continue
            # transformers 5 builds a tokenizer of its 5 special tokens when the cache holds no vocab.txt,
            # instead of raising: a vocabulary without ordinary words is "not found"
            if len(found) > 1000 and found.convert_tokens_to_ids("the") != found.unk_token_id:
                tokenizer = found
                break
    if tokenizer is None:
        looked = "; ".join(f"{what}: {folder}" for what, folder in places) or "no folder given"
        raise ModelLoadError(
            f"load_model: the LAVIS text side needs BERT-base-uncased's tokenizer files ({', '.join(BERT_FILES)}; "
            f"tokenizer_config.json optional) in a local folder, never downloaded at run time. Looked in "
            f"{looked}; and the Hugging Face cache ({', '.join(BERT_HUB_IDS)}). On a machine with network:\n"
            f"    hf download google-bert/bert-base-uncased vocab.txt tokenizer_config.json --local-dir DIR\n"
            f"then export {BERT_DIR_ENV}=DIR (or put DIR as 'bert-base-uncased/' beside the checkpoint).")
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    # transformers 5 can map every token to [UNK] when a vocabulary is read wrongly (docs/ENVIRONMENT.md §3)
    if len({tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.unk_token_id}) < 3:
        raise ModelLoadError(f"load_model: the tokenizer read from {places} maps [CLS]/[SEP] to [UNK]")
    return HFTokenizer(tokenizer)


# -- the model ----------------------------------------------------------------------------------

def load_lavis_model(path: str | os.PathLike, *, tokenizer_dir: str | os.PathLike | None = None,
                     vision_heads: int | None = None, qformer_heads: int | None = None,
                     freeze_vision: bool = True) -> CIRModel:
    """A CIRModel (CPU, eval) from a LAVIS BLIP-2 CLIP-ViT-L `.pth` (see the module docstring).

    tokenizer_dir: folder with BERT-base-uncased's vocab.txt (default: see `lavis_tokenizer`).
    vision_heads, qformer_heads: attention heads when not width // 64 (ViT-L: 16, BERT-base: 12).
    """
    source = str(Path(path).expanduser())
    state = read_lavis_state_dict(path)
    if "temp" not in state or state["temp"].numel() != 1:
        raise ModelLoadError(f"load_model: {source} lacks the learned temperature 'temp' (a scalar)")
    config = lavis_blip2_config(state, vision_heads=vision_heads, qformer_heads=qformer_heads, source=source)
    weights = convert_lavis_state_dict(state, source)
    tokenizer = lavis_tokenizer(tokenizer_dir, checkpoint=path)
    if len(tokenizer) != config.qformer_config.vocab_size:
        raise ModelLoadError(
            f"load_model: the tokenizer has {len(tokenizer)} tokens with [DEC], but {source}'s "
            f"'Qformer.bert.embeddings.word_embeddings.weight' has {config.qformer_config.vocab_size} rows "
            f"(LAVIS: 30,523 = BERT-base-uncased + [DEC]); wrong vocabulary folder?")
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten; keep the caller's RNG
        blip2 = add_vision_pre_layernorm(Blip2ForImageTextRetrieval(config))
    fill_strictly(blip2, weights, source)
    model = CIRModel(blip2, tokenizer, freeze_vision=freeze_vision, backend="lavis", source=source)
    with torch.no_grad():
        model.temperature.fill_(float(state["temp"]))
    return model.eval()


def merge_vision_tower(model_path: str | os.PathLike, vision_path: str | os.PathLike,
                       out_path: str | os.PathLike, *, blocks: int | None = None) -> Path:
    """Write a raw state dict: `model_path`'s tensors plus the ViT of `vision_path` as `visual_encoder.*`.

    For LAVIS checkpoints saved without their frozen ViT (e.g. blip2_pretrained_vitL.pth). The vision
    file is LAVIS's clip_vit_L.pth (keys `conv1.weight`, `transformer.resblocks.N.*`, ...; an optional
    `visual_encoder.` prefix is accepted); like LAVIS (which loads it with strict=False) only the
    first `blocks` residual blocks are kept and CLIP's `ln_post` / `proj` are dropped.
    """
    state = {k: v for k, v in read_lavis_state_dict(model_path).items() if not k.startswith("visual_encoder.")}
    vision = {k.removeprefix("visual_encoder."): v for k, v in read_lavis_state_dict(vision_path).items()}
    kept = {}
    for key, value in vision.items():
        match = re.match(r"transformer\.resblocks\.(\d+)\.", key)
        if key.startswith(("ln_post.", "proj")) or (match and blocks is not None and int(match.group(1)) >= blocks):
            continue
        kept[f"visual_encoder.{key}"] = value
    have = _indices(kept, _BLOCK)
    if blocks is not None and have != list(range(blocks)):
        raise ModelLoadError(f"merge_vision_tower: {vision_path} has residual blocks {have[:3]}...{have[-1:]}, "
                             f"fewer than the {blocks} asked for")
    out_path = Path(out_path)
    torch.save({**state, **kept}, out_path)
    return out_path


def is_lavis_source(name: str) -> bool:
    """`load_model` names this backend claims: "lavis:<path>" or a path ending in .pth."""
    return name.startswith(PREFIX) or name.endswith(".pth")




# -- the parity check against salesforce-lavis (tools/lavis_parity.py, tests/test_lavis.py) ------

def fixture_outputs(model: CIRModel, expected: dict, texts: list[str]) -> dict[str, torch.Tensor]:
    """qurelib's counterparts of a LAVIS parity fixture's outputs, from its inputs. Token ids and
    mask are right-padded to LAVIS's max_length padding (pad id 0) so they compare directly."""
    tokens = model.tokenize(texts)                                              # (B, L <= 32)
    with torch.no_grad():
        query = model.encode_query(expected["reference_pixels"], **tokens)     # (B, D)
        features = model.encode_image(expected["corpus_pixels"])               # (N, P, W)
        target = model.encode_corpus(image_embeds=features)                    # (N, T, D)
    pad = expected["input_ids"].shape[1] - tokens["input_ids"].shape[1]
    return {"input_ids": F.pad(tokens["input_ids"], (0, pad), value=model.tokenizer.pad_token_id),
            "attention_mask": F.pad(tokens["attention_mask"], (0, pad)),
            "vision_features": features, "query_embeds": query, "target_embeds": target,
            "scores": model.score(query, target)}


def fixture_differences(directory: str | os.PathLike) -> dict[str, float]:
    """Max |qurelib - LAVIS| per output of the parity fixture in `directory` (written by
    tools/lavis_parity.py): token ids and mask (0 when equal), ViT features, query and target
    embeddings, scores."""
    directory = Path(directory)
    meta = json.loads((directory / "fixture.json").read_text())
    expected = torch.load(directory / "expected.pt", map_location="cpu", weights_only=True)
    model = load_lavis_model(directory / "model.pth", tokenizer_dir=directory / "tokenizer",
                             vision_heads=meta["vision"]["heads"], qformer_heads=meta["qformer"]["heads"])
    ours = fixture_outputs(model, expected, meta["texts"])
    return {name: (ours[name].double() - expected[name].double()).abs().max().item() for name in ours}


def main(argv=None) -> int:
    """`python -m qurelib.model.lavis merge-vit MODEL.pth clip_vit_L.pth OUT.pth --blocks 23`."""
    parser = argparse.ArgumentParser(prog="python -m qurelib.model.lavis", description=merge_vision_tower.__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    merge = sub.add_parser("merge-vit", help="add a CLIP ViT-L (clip_vit_L.pth) to a LAVIS checkpoint")
    merge.add_argument("model", type=Path)
    merge.add_argument("vision", type=Path)
    merge.add_argument("out", type=Path)
    merge.add_argument("--blocks", type=int, default=None, help="residual blocks to keep (QuRe: 23)")
    args = parser.parse_args(argv)
    out = merge_vision_tower(args.model, args.vision, args.out, blocks=args.blocks)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
