"""Notebook hygiene for maintainers: notebooks in git carry no outputs except the
one summary cell (marked `# NBVAL_CHECK_OUTPUT`) that nbval checks.

    python -m qurelib.nbtools strip                  # drop every output but the summary cells'
    python -m qurelib.nbtools keep-summary RUN_DIR   # copy the summary outputs of executed notebooks
                                                     # (e.g. runs/smoke/) into notebooks/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from qurelib.paths import NOTEBOOKS_DIR

MARK = "NBVAL_CHECK_OUTPUT"


def _is_summary(cell: dict) -> bool:
    return cell["cell_type"] == "code" and MARK in "".join(cell["source"])


def _write(path: Path, nb: dict) -> None:
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def strip(path: Path) -> None:
    """Clear outputs and execution counts of every code cell but the summary cell."""
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and not _is_summary(cell):
            cell["outputs"], cell["execution_count"] = [], None
        cell.get("metadata", {}).pop("execution", None)
        cell.get("metadata", {}).pop("papermill", None)
    nb.get("metadata", {}).pop("papermill", None)
    _write(path, nb)


def keep_summary(path: Path, executed: Path) -> None:
    """Copy the summary cell's outputs from an executed copy (papermill or nbval run)."""
    nb, done = json.loads(path.read_text()), json.loads(executed.read_text())
    ran = [c for c in done["cells"] if _is_summary(c)]
    mine = [c for c in nb["cells"] if _is_summary(c)]
    if len(ran) != 1 or len(mine) != 1:
        raise ValueError(f"{path.name}: expected one '{MARK}' cell in the notebook and in {executed}")
    mine[0]["outputs"] = [{k: v for k, v in o.items() if k != "execution_count"} for o in ran[0]["outputs"]]
    mine[0]["execution_count"] = 1
    _write(path, nb)
    strip(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=("strip", "keep-summary"))
    ap.add_argument("run_dir", nargs="?", help="folder of executed notebooks (keep-summary)")
    args = ap.parse_args(argv)
    for path in sorted(NOTEBOOKS_DIR.glob("*.ipynb")):
        if args.command == "strip":
            strip(path)
        else:
            executed = Path(args.run_dir) / path.name
            if executed.is_file():
                keep_summary(path, executed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
