"""The study's models by name: the backbone every run starts from, the runs under runs/<profile>/
(`WARMUP_RUN`, `BASELINE_RUN`, forks by their run name) and the aliases notebooks use
("pretrained", "warmup_only").

    backbone          the pretrained starting point (tiny: pretrained once, cached in pretrained/)
    load_named_model  a model by study name, run name or path; missing_model says why one is absent
    load_run          a finished run's checkpoint (an interrupted run is an error)
    histories         {name: history} of the runs that exist
"""

from __future__ import annotations

from qurelib.files import read_json_object
from qurelib.model import load_model
from qurelib.model.pretrain import pretrain_tiny
from qurelib.provenance import code_digest
from qurelib.study.config import StudyConfig
from qurelib.study.identity import dataset_digest
from qurelib.train import CHECKPOINT, TrainConfig, read_history

WARMUP_RUN = "warmup"           # runs/<profile>/warmup: the warm-up every fork starts from
BASELINE_RUN = "info_nce"       # runs/<profile>/info_nce: the contrastive baseline


def backbone(cfg: StudyConfig, progress: bool = True):
    """The CIR starting point: the tiny preset pretrained on Fashion-Shapes train images (cached in
    runs/<profile>/pretrained, shared by QuRe and every baseline), or real BLIP-2 weights.
    Returns (model with a frozen vision tower, pretraining report or None)."""
    if cfg.model_name != "tiny":
        return load_model(cfg.model_name, device=cfg.device), None
    return pretrain_tiny(cfg.root, cfg.run_dir / "pretrained", epochs=cfg.pretrain_epochs, seed=cfg.seed,
                         device=cfg.device, progress=progress,
                         identity={"code": code_digest(), "data": dataset_digest(cfg)})


def load_named_model(cfg: StudyConfig, name: str):
    """A model of the study by name: "pretrained" (the backbone every run starts from),
    "warmup_only" (the warm-up run), the name of a run under runs/<profile>/, or a model that
    `load_model` reads (a path, or "lavis:/path/model.pth" for a released QuRe checkpoint)."""
    if "/" in name or ":" in name:  # run names hold neither
        return load_model(name, device=cfg.device, freeze_vision=True)
    if name == "pretrained":
        source = str(cfg.run_dir / "pretrained") if cfg.model_name == "tiny" else cfg.model_name
        return load_model(source, device=cfg.device, freeze_vision=True)
    return load_run(cfg, WARMUP_RUN if name == "warmup_only" else name)


def missing_model(cfg: StudyConfig, name: str) -> str | None:
    """Why `load_named_model(cfg, name)` would find nothing (None if the model is there)."""
    if "/" in name or ":" in name or (name == "pretrained" and cfg.model_name != "tiny"):
        return None  # load_model names what is missing itself
    path = cfg.run_dir / ("pretrained" if name == "pretrained" else
                          (WARMUP_RUN if name == "warmup_only" else name) + "/" + CHECKPOINT)
    return None if path.is_dir() else f"{path} does not exist: run the stage that trains {name!r} first"


def load_run(cfg: StudyConfig, name: str):
    """The model of a finished run: runs/<profile>/<name>/checkpoint. A run whose last epoch is not
    its planned last one (the warm-up: E // n_def epochs; any other run: E) was interrupted: an
    error, never silently evaluated."""
    path = cfg.run_dir / name / CHECKPOINT
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist: run the stage that trains {name!r} first")
    extra = read_json_object(path / "config.json", f"rerun the stage that trains {name!r}").get("extra", {})
    saved = extra.get("train_config")
    if saved is not None:  # only the schedule is read: a run saved by older code may hold other settings
        config = TrainConfig(epochs=saved["epochs"], n_def=saved["n_def"])
        planned = config.period if name == WARMUP_RUN else config.epochs
        if extra.get("epoch", -1) + 1 != planned:
            raise RuntimeError(f"{cfg.run_dir / name}: the run stopped after epoch {extra.get('epoch', -1) + 1} "
                               f"of {planned} (interrupted?); rerun its stage (`make reproduce` resumes it)")
    return load_model(str(path), device=cfg.device, freeze_vision=True)


def histories(cfg: StudyConfig, names) -> dict:
    """{name: history} of the runs that exist under runs/<profile>/ (warmup_only = the warm-up)."""
    out = {}
    for name in names:
        history = read_history(cfg.run_dir / (WARMUP_RUN if name == "warmup_only" else name))
        if history:
            out[name] = history
    return out
