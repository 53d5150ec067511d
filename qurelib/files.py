"""Atomic writes: a file appears complete or not at all (temporary sibling, then `os.replace`), so
an interrupted run never leaves a half-written result behind; and the strict reading of the JSON
files the library wrote (a damaged one is an error naming it and how to rebuild it)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch


def _temporary(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` atomically (parents created)."""
    path = Path(path)
    tmp = _temporary(path)
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int | None = 1) -> Path:
    """Write `obj` as JSON (non-JSON values via str) atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=indent, default=str))


def save_torch_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """`torch.save(obj)` to `path` atomically."""
    path = Path(path)
    tmp = _temporary(path)
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def read_json_object(path: str | os.PathLike, fix: str) -> dict:
    """The JSON object in `path`, a file the library wrote; ValueError naming the file, what is wrong
    and `fix` (how to rebuild it, e.g. "rerun stage 01") if it is truncated or not an object."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path} is damaged ({error}); {fix}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} is damaged (a JSON {type(obj).__name__}, not an object); {fix}")
    return obj
