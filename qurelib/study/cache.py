"""The study's image cache: the frozen vision tower's features of every train and val image, kept
in runs/<profile>/image_cache.pt under a fingerprint of the vision weights, the image ids and the
dataset's content, so that every stage reuses it until one of them changes (`qurelib.encode` builds it).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import warnings
from pathlib import Path

import torch

from qurelib import distributed
from qurelib.encode import ImageCache, build_image_cache, split_image_ids
from qurelib.files import save_torch_atomic
from qurelib.study.config import StudyConfig
from qurelib.study.identity import dataset_digest
from qurelib.study.stages import load_splits


def _vision_fingerprint(model, ids: list[str]) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.blip2.vision_model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    h.update(json.dumps(ids).encode())
    return h.hexdigest()


def image_cache(cfg: StudyConfig, model, progress: bool = True) -> ImageCache:
    """The frozen tower's features of every image of the train and val splits, built once per
    profile and reused by every stage (runs/<profile>/image_cache.pt, keyed by the vision weights
    and the image ids).

    Only the tiny preset's cache goes to disk (~0.3 GB on the default profile); real BLIP-2
    features (ViT-g: ~0.7 MB per image, tens of GB for FashionIQ) are rebuilt by each stage on
    the GPU, which takes minutes, rather than written out.
    """
    splits = [*load_splits(cfg, "train").values(), *load_splits(cfg, "val").values()]
    if cfg.model_name != "tiny":
        return build_image_cache(model, splits, progress=progress)
    ids = sorted({i for s in splits for i in split_image_ids(s)})
    key = _vision_fingerprint(model, ids) + ":" + dataset_digest(cfg)  # the pixels too, not only their ids
    path = cfg.run_dir / "image_cache.pt"
    saved = _read_image_cache(path, model.device)
    if saved is not None and saved["key"] == key:
        return ImageCache({i: r for r, i in enumerate(saved["ids"])}, saved["embeds"])
    cache = build_image_cache(model, splits, progress=progress)
    if distributed.is_main():
        save_torch_atomic(path, {"key": key, "ids": sorted(cache.row, key=cache.row.get), "embeds": cache.embeds.cpu()})
    return cache


def _read_image_cache(path: Path, device) -> dict | None:
    """The saved image cache, or None if there is none; a damaged one (truncated, not a torch file,
    not a cache) is only a cache: a warning naming it, and None so that it is rebuilt."""
    if not path.is_file():
        return None
    try:  # torch.load fails in several ways on a damaged file: zip (RuntimeError), OS, pickle, EOF errors
        saved = torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as error:
        saved, why = None, (str(error).strip().splitlines() or [type(error).__name__])[0]
    else:
        why = "not an image cache"
    if isinstance(saved, dict) and {"key", "ids", "embeds"} <= saved.keys():
        return saved
    warnings.warn(f"{path} is unreadable ({why}); rebuilding the image cache", stacklevel=3)
    return None
