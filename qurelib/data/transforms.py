"""Image preprocessing of the released code, without torchvision: the target-pad transform.

QuRe (like CLIP4Cir) preprocesses every split, training included, with
`targetpad_transform(1.25, 224)`: TargetPad -> Resize(224, bicubic) -> CenterCrop(224) -> RGB ->
ToTensor -> Normalize(CLIP mean/std); no augmentation (docs/METHOD.md, section 10).
This module reproduces it with PIL + numpy + torch at any size (224 for BLIP-2, 64 for the tiny
preset). Images are converted to RGB first instead of last; for RGB, L and RGBA inputs the padding
is black either way.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageOps

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def target_pad(image: Image.Image, target_ratio: float = 1.25) -> Image.Image:
    """Pad with black so that max(w, h) / min(w, h) is about `target_ratio`, as TargetPad does.

    Images already below the ratio are returned unchanged; otherwise each side gets
    max(int((max(w, h) / target_ratio - side) / 2), 0) pixels on both ends.
    """
    w, h = image.size
    if max(w, h) / min(w, h) < target_ratio:
        return image
    scaled_max = max(w, h) / target_ratio
    hp, vp = max(int((scaled_max - w) / 2), 0), max(int((scaled_max - h) / 2), 0)
    return ImageOps.expand(image, border=(hp, vp, hp, vp), fill=0)


def resize_short_side(image: Image.Image, size: int) -> Image.Image:
    """Bicubic resize of the shorter side to `size`, the longer one int(size * long / short)."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    if short == size:
        return image
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    return image.resize((new_w, new_h), Image.Resampling.BICUBIC)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """Central size x size crop (offsets rounded as torchvision's CenterCrop)."""
    w, h = image.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def to_normalized_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL -> float32 (3, H, W) in [0, 1], normalised with the CLIP mean / std."""
    array = np.asarray(image, dtype=np.float32) / 255.0  # (H, W, 3)
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)  # (3, H, W)
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return (tensor - mean) / std


def targetpad_transform(size: int, target_ratio: float = 1.25
                        ) -> Callable[[Image.Image], torch.Tensor]:
    """The released preprocessing as a callable: PIL image -> float32 tensor (3, size, size)."""
    if size <= 0 or target_ratio < 1.0:
        raise ValueError(f"targetpad_transform: need size > 0 and target_ratio >= 1, "
                         f"got size={size}, target_ratio={target_ratio}")

    def transform(image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB")
        image = center_crop(resize_short_side(target_pad(image, target_ratio), size), size)
        return to_normalized_tensor(image)  # (3, S, S)

    return transform
