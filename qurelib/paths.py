"""Repository paths, resolved from this file so nothing depends on the working directory."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
# QURELIB_RUNS_DIR moves every run elsewhere: `make test` trains the smoke chain in a fresh
# temporary folder, so the library under test is what trains (never a finished run of older code).
RUNS_DIR = Path(os.environ.get("QURELIB_RUNS_DIR") or REPO_ROOT / "runs")
FIGURES_DIR = REPO_ROOT / "figures"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PARAMS_DIR = REPO_ROOT / "params"


def generated_data_dir(profile: str, seed: int = 0) -> Path:
    """Where Fashion-Shapes of a profile is generated (git-ignored); seeds other than 0 beside it."""
    return DATA_DIR / "generated" / (f"fashion-shapes-{profile}" + (f"-seed{seed}" if seed else ""))


def run_dir(profile: str) -> Path:
    """Artefacts (executed notebooks, checkpoints, results) of a profile's run."""
    return RUNS_DIR / profile


def figure_dir(profile: str) -> Path:
    """Figures of a profile's run, as `figNN_<slug>.png` plus a `.csv` of the plotted numbers: in
    the run folder (git-ignored), so a run never edits the repository; `make readme-figures` copies
    the ones the README shows into figures/<profile>/ (FIGURES_DIR), committed."""
    return run_dir(profile) / "figures"
