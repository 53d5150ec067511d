"""What a reader sees in the executed notebooks of the smoke chain (runs/smoke/NN_*.ipynb, written by
`make reproduce PROFILE=smoke`, which `make test` runs first; QURELIB_EXECUTED=<folder> checks
another run): every cell that builds a figure shows it as an image/png output of a readable size,
no figure is shown as its text repr, and progress bars leave no widget outputs behind.

Tables are not checked here (text/html tables come with the pandas DataFrames). Without executed
notebooks every test here is skipped, saying so.
"""

import base64
import json
import os
import re
import struct
from pathlib import Path

import pytest

from qurelib import paths

RUN_DIR = Path(os.environ.get("QURELIB_EXECUTED", paths.run_dir("smoke")))
NOTEBOOKS = sorted(RUN_DIR.glob("[0-9][0-9]_*.ipynb"))
FIGURE_CALL = re.compile(r"\b(plot_\w+|query_figure)\(")  # the library calls that build a figure
WIDGET = "application/vnd.jupyter.widget-view+json"
MIN_WIDTH = 500  # px: a figure narrower than this is unreadable on a projector


def code_cells(path: Path) -> list[dict]:
    nb = json.loads(path.read_text())
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def png_size(b64) -> tuple[int, int]:
    data = base64.b64decode("".join(b64))
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "image/png output is not a PNG"
    return struct.unpack(">II", data[16:24])  # IHDR width, height


pytestmark = pytest.mark.skipif(not NOTEBOOKS, reason=f"no executed notebooks in {RUN_DIR}: "
                                                      "run `make reproduce PROFILE=smoke` first")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_figure_cell_shows_an_image(path):
    figure_cells = [c for c in code_cells(path) if FIGURE_CALL.search(source(c))]
    for cell in figure_cells:
        pngs = [o["data"]["image/png"] for o in cell["outputs"] if "image/png" in o.get("data", {})]
        first_line = source(cell).splitlines()[0]
        assert pngs, f"{path.name}: the cell {first_line!r} builds a figure but shows no image/png"
        for b64 in pngs:
            width, height = png_size(b64)
            assert width >= MIN_WIDTH and height >= 150, f"{path.name}: {first_line!r}: a {width}x{height} image"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_figure_is_shown_as_text(path):
    for cell in code_cells(path):
        for out in cell["outputs"]:
            data = out.get("data", {})
            text = "".join(data.get("text/plain", ""))
            assert not (text.startswith("<Figure size") and "image/png" not in data), \
                f"{path.name}: {source(cell).splitlines()[0]!r} shows {text!r} instead of the figure"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_progress_leaves_no_widget_outputs(path):
    """Only the explorer is a widget; progress bars are text, one per stage."""
    for cell in code_cells(path):
        widgets = [o for o in cell["outputs"] if WIDGET in o.get("data", {})]
        allowed = 1 if "explorer(" in source(cell) else 0
        assert len(widgets) <= allowed, f"{path.name}: {len(widgets)} widget outputs in {source(cell)[:60]!r}"
        assert len(cell["outputs"]) <= 40, f"{path.name}: {len(cell['outputs'])} outputs in {source(cell)[:60]!r}"


TABLE_LAST_LINE = re.compile(r"^(study\.(data_summary|history_table|results_table|external_benchmarks)\(.*|audit|table)$")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_table_cell_shows_an_html_table(path):
    """A cell ending in a study table shows it as an HTML table (pandas), not as a list repr."""
    for cell in code_cells(path):
        lines = [line for line in source(cell).splitlines() if line.strip()]
        if not lines or not TABLE_LAST_LINE.match(lines[-1].strip()):
            continue
        html = ["".join(o["data"]["text/html"]) for o in cell["outputs"] if "text/html" in o.get("data", {})]
        assert html and ("<table" in html[0] or "(no rows)" in html[0]), \
            f"{path.name}: {lines[-1]!r} shows no HTML table"
