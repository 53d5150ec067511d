"""The study for a reader without Jupyter: a run's executed notebooks as HTML pages (figures
embedded as data URIs) and an index page that links them under the run's results tables.

    python -m qurelib.study.html_report runs/<profile>     # writes runs/<profile>/html/NN_*.html + index.html

`make reproduce` (and `make ablation`) end with it.
"""

from __future__ import annotations

import argparse
import html
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter
from nbconvert.filters.markdown import markdown2html
from nbconvert.preprocessors import CoalesceStreamsPreprocessor

INDEX_CSS = """body { font-family: system-ui, sans-serif; max-width: 70em; margin: 2em auto; padding: 0 1em;
       line-height: 1.45; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
li { margin: 0.3em 0; } code { background: #f3f3f3; padding: 0 0.2em; }"""


def executed_notebooks(run_dir: Path) -> list[Path]:
    """The stage notebooks of a run, in order (`NN_*.ipynb` directly under `run_dir`)."""
    return sorted(run_dir.glob("[0-9][0-9]_*.ipynb"))


def notebook_title(nb) -> str:
    """The first Markdown heading of a notebook ("05 · Explore"), else ''."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return ""


def export_notebook(path: Path, out_dir: Path) -> tuple[Path, str]:
    """Write `out_dir/<stem>.html` (nbconvert's lab template, images inline); returns (page, title)."""
    nb = nbformat.read(path, as_version=4)
    exporter = HTMLExporter()
    # papermill keeps each redraw of a text progress bar as its own output: merge them and apply the
    # carriage returns, so a bar reads as its last state (as JupyterLab shows it)
    exporter.register_preprocessor(CoalesceStreamsPreprocessor, enabled=True)
    body, _ = exporter.from_notebook_node(nb)
    page = out_dir / f"{path.stem}.html"
    page.write_text(body, encoding="utf-8")
    return page, notebook_title(nb) or path.stem


def write_index(run_dir: Path, pages: list[tuple[Path, str]], out_dir: Path) -> Path:
    """index.html: the notebooks in stage order, then results.md (and ablation.md) as HTML tables."""
    profile = run_dir.name
    parts = [f"<h1>QuRe study: profile <code>{html.escape(profile)}</code></h1>",
             "<p>Each stage notebook as executed by <code>make reproduce</code>, with its figures.</p><ol>"]
    parts += [f'<li><a href="{p.name}">{html.escape(title)}</a> <small>({p.stem}.ipynb)</small></li>'
              for p, title in pages]
    parts.append("</ol>")
    for name in ("results.md", "ablation.md"):
        if (run_dir / name).is_file():
            parts.append(markdown2html((run_dir / name).read_text(encoding="utf-8")))
    if not (run_dir / "results.md").is_file():
        parts.append("<p>No results.md yet: stage 04 has not run.</p>")
    index = out_dir / "index.html"
    index.write_text(f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>QuRe study: {html.escape(profile)}'
                     f"</title><style>{INDEX_CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n",
                     encoding="utf-8")
    return index


def export_run(run_dir: Path) -> Path:
    """Every executed stage notebook of `run_dir` to `run_dir/html/`, plus the index; returns it."""
    run_dir = Path(run_dir)
    notebooks = executed_notebooks(run_dir)
    if not notebooks:
        raise FileNotFoundError(f"{run_dir}: no executed notebooks (NN_*.ipynb); run `make reproduce` first")
    out_dir = run_dir / "html"
    out_dir.mkdir(parents=True, exist_ok=True)
    pages = [export_notebook(path, out_dir) for path in notebooks]
    return write_index(run_dir, pages, out_dir)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, help="folder of executed notebooks, e.g. runs/default")
    args = ap.parse_args(argv)
    print(f"HTML report: {export_run(args.run_dir)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
