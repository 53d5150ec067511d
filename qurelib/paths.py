"""Repository paths, resolved from this file so nothing depends on the working directory."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
RUNS_DIR = REPO_ROOT / "runs"
FIGURES_DIR = REPO_ROOT / "figures"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PARAMS_DIR = REPO_ROOT / "params"


def generated_data_dir(profile: str) -> Path:
    """Where Fashion-Shapes of a profile is generated (git-ignored)."""
    return DATA_DIR / "generated" / f"fashion-shapes-{profile}"


def run_dir(profile: str) -> Path:
    """Artefacts (executed notebooks, checkpoints, results) of a profile's run."""
    return RUNS_DIR / profile


def figure_dir(profile: str) -> Path:
    """Figures of a profile, as `figNN_<slug>.png` plus a `.csv` of the plotted numbers."""
    return FIGURES_DIR / profile
