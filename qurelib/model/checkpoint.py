"""Checkpoints of a CIRModel: safetensors weights + a JSON config (+ a training-state file),
written atomically and verified by sha256 on load.

    <dir>/model.safetensors   the weights
    <dir>/config.json         format, BLIP-2 config, tokenizer, image size, temperature, `extra`,
                              and the sha256 of every file (written last)
    <dir>/train_state.pt      optional `state` (optimizer, sampler, RNG, ...)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors.torch import load_file, save_file
from transformers import Blip2Config, Blip2ForImageTextRetrieval

from qurelib.model.lavis import add_vision_pre_layernorm, has_vision_pre_layernorm
from qurelib.model.modeling import CIRModel, ModelLoadError, resolve_device
from qurelib.model.tokenizer import tokenizer_from_config

CHECKPOINT_FORMAT = "qurelib-cir-checkpoint"
CHECKPOINT_FILES = {"config.json", "model.safetensors", "train_state.pt", "tokenizer"}


class Checkpoint(NamedTuple):
    model: CIRModel
    extra: dict
    state: Any


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(model: CIRModel, directory: str | os.PathLike, extra: dict | None = None,
                    state: Any = None) -> Path:
    """Write model.safetensors + config.json (+ train_state.pt) to `directory`, atomically.

    Everything goes to a temporary sibling dir first, which then replaces `directory`; an
    interrupted save leaves either the old checkpoint or none, never a half-written one.
    `extra` must be JSON-able; `state` is anything torch.save accepts (optimizer, RNG states, ...).
    """
    directory = Path(directory)
    foreign = sorted(p.name for p in directory.iterdir() if p.name not in CHECKPOINT_FILES) \
        if directory.is_dir() else []
    if foreign:  # never delete a folder that is not a checkpoint (e.g. a run dir passed by mistake)
        raise FileExistsError(f"save_checkpoint: {directory} exists and holds {foreign[:3]}, which a "
                              f"checkpoint never does; refusing to replace it")
    directory.parent.mkdir(parents=True, exist_ok=True)
    extra_json = json.dumps(extra or {})  # fail before writing anything if not JSON-able
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        weights, seen = {}, set()
        for key, value in model.state_dict().items():
            value = value.detach().cpu()
            weights[key] = value.clone() if value.data_ptr() in seen else value.contiguous()
            seen.add(value.data_ptr())
        save_file(weights, str(tmp / "model.safetensors"))
        model.tokenizer.save(tmp)
        if state is not None:
            torch.save(state, tmp / "train_state.pt")
        config = {
            "format": CHECKPOINT_FORMAT, "version": 1, "backend": model.backend, "source": model.source,
            "blip2_config": model.blip2.config.to_dict(), "tokenizer": model.tokenizer.to_config(),
            "image_size": model.image_size, "temperature": model.temperature.item(),
            "vision_pre_layernorm": has_vision_pre_layernorm(model.blip2),  # LAVIS CLIP ViT's ln_pre
            "vision_frozen": model.vision_frozen, "extra": json.loads(extra_json),
            "files": {"model.safetensors": _sha256(tmp / "model.safetensors"),
                      "train_state.pt": _sha256(tmp / "train_state.pt") if state is not None else None},
        }
        (tmp / "config.json").write_text(json.dumps(config, indent=1))  # written last
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            directory.rename(old)
            tmp.rename(directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _checked_file(directory: Path, name: str, digest: str | None) -> Path:
    path = directory / name
    if not path.is_file():
        raise ModelLoadError(f"load_checkpoint: {path} is missing (partial or interrupted save?)")
    if digest is not None and _sha256(path) != digest:
        raise ModelLoadError(f"load_checkpoint: {path} is corrupt (sha256 differs from config.json)")
    return path


def verify_checkpoint(directory: str | os.PathLike) -> None:
    """ModelLoadError naming the bad file unless `directory` is a complete checkpoint whose files
    match the sha256 its config.json records (no model is built: cheap for large weights too)."""
    directory = Path(directory)
    config_path = directory / "config.json"
    try:
        files = json.loads(config_path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelLoadError(f"load_checkpoint: {config_path} is unreadable or missing: {error}") from None
    for name, digest in files.items():
        if digest is not None:
            _checked_file(directory, name, digest)


def load_checkpoint(directory: str | os.PathLike, device: str = "auto", *,
                    freeze_vision: bool | None = None) -> Checkpoint:
    """Read a `save_checkpoint` dir -> Checkpoint(model, extra, state); ModelLoadError names a bad file.

    freeze_vision: None keeps the frozen/unfrozen setting the model was saved with.
    """
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise ModelLoadError(f"load_checkpoint: no checkpoint directory {directory}")
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ModelLoadError(f"load_checkpoint: {config_path} is missing (partial or interrupted save?)")
    try:
        config = json.loads(config_path.read_text())
        if config.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"'format' is {config.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
        files = config["files"]
        blip2_config = Blip2Config.from_dict(config["blip2_config"])
        tokenizer = tokenizer_from_config(config["tokenizer"], directory)
    except (ValueError, KeyError, TypeError, OSError) as error:
        raise ModelLoadError(f"load_checkpoint: {config_path} is unreadable: {error}") from None
    weights_path = _checked_file(directory, "model.safetensors", files.get("model.safetensors"))
    try:
        weights = load_file(str(weights_path))
    except Exception as error:  # safetensors raises its own error types on truncated headers
        raise ModelLoadError(f"load_checkpoint: {weights_path} is unreadable: {error}") from None
    with torch.random.fork_rng(devices=[]):
        blip2 = Blip2ForImageTextRetrieval(blip2_config)
        if config.get("vision_pre_layernorm"):
            add_vision_pre_layernorm(blip2)
    frozen = config.get("vision_frozen", True) if freeze_vision is None else freeze_vision
    model = CIRModel(blip2, tokenizer, freeze_vision=frozen, backend=config.get("backend", "tiny"),
                     source=config.get("source", str(directory)))
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise ModelLoadError(f"load_checkpoint: {weights_path} does not match config.json: "
                             f"{str(error).splitlines()[0]}") from None
    state = None
    if files.get("train_state.pt") is not None:
        state_path = _checked_file(directory, "train_state.pt", files["train_state.pt"])
        state = torch.load(state_path, map_location="cpu", weights_only=False)
    model.eval()
    return Checkpoint(model.to(resolve_device(device)), config.get("extra", {}), state)
