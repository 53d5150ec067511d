"""A run's identity: everything that made it, so a finished run is reused only when nothing did change.

    {"code": the library code that trains (provenance.code_digest),
     "data": the dataset's content (provenance.data_digest),
     "backbone": the weights every run starts from (the pretrained tiny checkpoint's sha256, or the
                 BLIP-2 source a real run loads),
     "init": the weights a fork starts from (the warm-up checkpoint's sha256; None otherwise),
     "world_size": the training processes (data-parallel gradients round differently)}

The settings (TrainConfig) are compared beside it by `qurelib.train`. A stage whose run has another
identity moves the old run aside (`set_aside_if_changed`: runs/<profile>/stale/, kept) and retrains
it, naming what changed; `train` itself refuses to resume a checkpoint of another identity.
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path

from qurelib import distributed
from qurelib.files import read_json_object
from qurelib.model import ModelLoadError, verify_checkpoint
from qurelib.provenance import code_digest, data_digest
from qurelib.study.config import StudyConfig
from qurelib.train import CHECKPOINT, TrainConfig, config_differences

def dataset_digest(cfg: StudyConfig) -> str:
    """The content digest of the study's dataset folder: every file of the generated Fashion-Shapes;
    annotation files and image names and sizes of a real dataset (tens of GB of images)."""
    root = cfg.root
    if not root.is_dir():
        raise FileNotFoundError(f"data_root {root} does not exist; run stage 00 (00_make_data) first")
    return data_digest(root, images="content" if cfg.dataset == "fashion-shapes" else "size")


def weights_digest(checkpoint: str | Path) -> str | None:
    """The sha256 of a qurelib checkpoint's weights, as its config.json records it (None if absent)."""
    path = Path(checkpoint) / "config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("files", {}).get("model.safetensors")
    except (ValueError, OSError):
        return None


def backbone_digest(cfg: StudyConfig) -> str:
    """What every run of the study starts from: the pretrained tiny checkpoint's weights, or the
    name / path of real BLIP-2 weights."""
    if cfg.model_name != "tiny":
        return cfg.model_name
    digest = weights_digest(cfg.run_dir / "pretrained")
    if digest is None:
        raise FileNotFoundError(f"{cfg.run_dir / 'pretrained'} holds no backbone: run stage 01 first")
    return digest


def run_identity(cfg: StudyConfig, nproc: int = 1, init: str | Path | None = None) -> dict:
    """The identity of a training run of this study (see the module docstring). nproc: the stage's
    processes (inside a torchrun rank, the group's world size)."""
    world = nproc if nproc > 1 else distributed.world_size()
    return {"code": code_digest(), "data": dataset_digest(cfg), "backbone": backbone_digest(cfg),
            "init": None if init is None else weights_digest(Path(init) / "checkpoint"), "world_size": world}


def identity_changes(saved: dict | None, current: dict) -> list[str]:
    """"what: saved -> current" for every part of the identity that differs (a run written before
    identities were recorded differs in all of them)."""
    saved = saved or {}
    names = {"code": "library code", "data": "dataset content", "backbone": "backbone weights",
             "init": "warm-up weights it forks", "world_size": "training processes"}
    return [f"{names.get(k, k)}: {saved.get(k)} -> {current.get(k)}"
            for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]


def set_aside_if_changed(run_dir: Path, config: TrainConfig, identity: dict) -> None:
    """A stage rebuilt with other settings, code, data, backbone or world size (`identity`) starts
    its run afresh: an existing run made otherwise moves to runs/<profile>/stale/<name>-<time>/
    (kept, never deleted) with a warning naming what changed. So does a run whose checkpoint is
    damaged (it could neither resume nor be evaluated)."""
    saved_path = run_dir / "config.json"
    if not saved_path.is_file():
        if not run_dir.exists():
            return
        diff = [f"{saved_path} is missing"]
    else:
        try:
            saved = read_json_object(saved_path, "")
            diff = config_differences(saved.get("train_config", {}), config) + \
                identity_changes(saved.get("identity"), identity)
        except ValueError:  # damaged: whether the run may resume is unknown, so it starts afresh
            diff = [f"{saved_path} is damaged"]
    if not diff and (run_dir / CHECKPOINT).exists():
        try:
            verify_checkpoint(run_dir / CHECKPOINT)
        except ModelLoadError as error:
            diff = [f"its checkpoint is unusable ({error})"]
    if diff:
        stale = run_dir.parent / "stale" / f"{run_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        stale.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(run_dir), stale)
        warnings.warn(f"{run_dir.name}: settings changed ({'; '.join(diff)}); the old run moved to {stale}",
                      stacklevel=3)
