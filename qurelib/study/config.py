"""The study's settings: one frozen `StudyConfig` per notebook run, built from the notebook's
`parameters` cell (whose values default to params/smoke.yaml; papermill applies the profile's
file on top). It has no defaults of its own: every shared setting comes from the parameters, and
every training setting the study does not name comes from `TrainConfig`'s defaults.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path

from qurelib import paths
from qurelib.data.synthetic import PROFILES
from qurelib.model import resolve_device
from qurelib.train import TrainConfig

DATASETS = ("fashion-shapes", "fashioniq", "cirr")


@dataclass(frozen=True)
class StudyConfig:
    """The parameters every stage shares (each notebook declares all of them)."""

    profile: str          # artefacts under runs/<profile>/, figures under figures/<profile>/
    dataset: str          # fashion-shapes | fashioniq | cirr
    data_root: str        # dataset folder; empty = data/generated/fashion-shapes-<data_profile>
    data_profile: str     # Fashion-Shapes size when generated: smoke | default
    model_name: str       # "tiny" (pretrained here first) | BLIP-2 hub id or local dir
    pretrain_epochs: int  # tiny backbone: image <-> description epochs
    epochs: int           # E: CIR fine-tuning epochs in all (warm-up included)
    n_def: int            # H definitions: warm-up E // n_def epochs, then re-mine every E // n_def
    batch_size: int       # queries per step
    lr: float             # AdamW lr, cosine to lr / 100
    seed: int             # every random draw of training (backbone pretraining included)
    data_seed: int        # the generated Fashion-Shapes (a second seed: the data varied, training fixed)
    device: str           # auto | cpu | cuda

    def __post_init__(self):
        for name in ("seed", "data_seed"):  # checked before anything is generated or moved
            if getattr(self, name) < 0:
                raise ValueError(f"parameter {name}={getattr(self, name)!r}: expected an int >= 0")
        if self.dataset not in DATASETS:
            raise ValueError(f"parameter dataset={self.dataset!r}: expected one of {DATASETS}")
        if self.dataset != "fashion-shapes" and not self.data_root:
            raise ValueError(f"parameter data_root: dataset {self.dataset!r} needs the folder it was "
                             f"downloaded to (see README.md, section 'Datasets')")
        if self.dataset == "fashion-shapes" and self.data_profile not in PROFILES:
            raise ValueError(f"parameter data_profile={self.data_profile!r}: expected one of {tuple(PROFILES)} "
                             f"(the size of the generated Fashion-Shapes)")
        try:  # checked in the first cell, not by torch's assertion when the model moves
            resolve_device(self.device)
        except ValueError as error:
            raise ValueError(f"parameter {error}") from None

    @property
    def run_dir(self) -> Path:
        return paths.run_dir(self.profile)

    @property
    def root(self) -> Path:
        return Path(self.data_root) if self.data_root else paths.generated_data_dir(self.data_profile, self.data_seed)

    def train_config(self, **stage) -> TrainConfig:
        """The TrainConfig of a stage: the study's shared settings plus the stage's own (`stage`,
        e.g. strategy, rule, k); everything else is TrainConfig's default."""
        shared = dict(epochs=self.epochs, n_def=self.n_def, batch_size=self.batch_size, lr=self.lr,
                      seed=self.seed, device=self.device)
        return TrainConfig(**{**shared, **stage})


FIELDS = {f.name: f for f in dataclasses.fields(StudyConfig)}


def study_config(**params) -> StudyConfig:
    """StudyConfig from notebook parameters: every shared one must be given with its type; an
    unknown name is an error that names it and the closest known one."""
    unknown = sorted(set(params) - set(FIELDS))
    if unknown:
        hints = [f"{u!r}" + (f" (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(u, FIELDS, 1)) else "")
                 for u in unknown]
        raise TypeError(f"unknown study parameter(s) {', '.join(hints)}; known: {', '.join(FIELDS)}")
    missing = [name for name in FIELDS if name not in params]
    if missing:
        raise TypeError(f"missing study parameter(s) {', '.join(missing)} (see params/smoke.yaml)")
    for key, value in params.items():
        expected = FIELDS[key].type
        ok = {"str": str, "int": int, "float": (int, float)}[expected]
        if not isinstance(value, ok) or isinstance(value, bool):
            raise TypeError(f"parameter {key}={value!r}: expected {expected}")
    return StudyConfig(**params)
