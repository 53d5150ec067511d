"""The study's settings: one frozen `StudyConfig` per notebook run, built from the notebook's
`parameters` cell (whose values default to params/smoke.yaml; papermill applies the profile's
file on top). It has no defaults of its own: every shared setting comes from the parameters, and
every training setting the study does not name comes from `TrainConfig`'s defaults.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path

import yaml

from qurelib import paths
from qurelib.data.synthetic import PROFILES
from qurelib.model import resolve_device
from qurelib.train import TrainConfig

DATASETS = ("fashion-shapes", "fashioniq", "cirr")


@dataclass(frozen=True)
class StudyConfig:
    """The parameters every stage shares (each notebook declares all of them)."""

    profile: str          # artefacts and figures under runs/<profile>/
    dataset: str          # fashion-shapes | fashioniq | cirr
    data_root: str        # dataset folder; empty = data/generated/fashion-shapes-<data_profile>
    data_profile: str     # Fashion-Shapes when generated: smoke | default | continuous-smoke | continuous
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
        e.g. mining, audit); everything else is TrainConfig's default."""
        shared = dict(epochs=self.epochs, n_def=self.n_def, batch_size=self.batch_size, lr=self.lr,
                      seed=self.seed, device=self.device)
        return TrainConfig(**{**shared, **stage})


FIELDS = {f.name: f for f in dataclasses.fields(StudyConfig)}


def _assigned_names(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)]


def check_injected_parameters(history: list[str] | None = None) -> None:
    """TypeError naming every parameter that papermill injected but the notebook does not declare.

    Plain papermill (`papermill nb.ipynb out.ipynb -p epochz 5`) only warns about an unknown name
    and runs on with the default, so every notebook checks for itself, whichever way it is run:
    papermill executes cells in order and puts its values in a cell starting "# Parameters" right
    after the `parameters` cell, so in the kernel's input history (IPython's `In`) the injected cell
    follows the declared one. history: that list (None: read from the running IPython kernel; outside
    one, nothing to check)."""
    if history is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return
        shell = get_ipython()
        history = list(shell.user_ns.get("In", [])) if shell is not None else []
    injected = [i for i, cell in enumerate(history) if i > 0 and cell.lstrip().startswith("# Parameters")]
    if not injected:
        return
    i = injected[-1]
    declared = set(_assigned_names(history[i - 1]))
    # `-f params/<profile>.yaml` hands every stage's settings to each notebook: a name some stage
    # declares (params/smoke.yaml lists them all) is not a typo
    chain = set(yaml.safe_load((paths.PARAMS_DIR / "smoke.yaml").read_text()) or {})
    unknown = [n for n in _assigned_names(history[i]) if n not in declared | chain]
    if unknown:
        hints = [f"{u!r}" + (f" (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(u, declared, 1)) else "")
                 for u in unknown]
        raise TypeError(f"unknown parameter(s) {', '.join(hints)}: this notebook does not declare them (papermill "
                        f"would have run on with the defaults); known: {', '.join(sorted(declared))}")


def study_config(**params) -> StudyConfig:
    """StudyConfig from notebook parameters: every shared one must be given with its type; an
    unknown name is an error that names it and the closest known one (also one papermill injected:
    `check_injected_parameters`)."""
    check_injected_parameters()
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
        if key in ("seed", "data_seed") and value < 0:  # before anything is generated, moved or trained
            raise ValueError(f"parameter {key}={value!r}: expected an int >= 0")
    return StudyConfig(**params)
