"""Tables of the study: rows of dicts shown as pandas DataFrames (HTML in Jupyter and in the HTML
export, text in a terminal) and written as .json (every number) and .md (rounded for reading)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from qurelib.files import write_json_atomic, write_text_atomic

UNKNOWN = "—"  # e.g. a false-negative count on data whose positives are not all known


class Table(list):
    """Rows (dicts) of one study table. `frame` is the pandas DataFrame; Jupyter shows it as an
    HTML table with the study's number format (`fmt`), the .json / .md files hold the same rows."""

    @property
    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(list(self))

    def _repr_html_(self) -> str:
        if not self:
            return "<p>(no rows)</p>"
        return self.frame.style.format(fmt).hide(axis="index").to_html()

    def __str__(self) -> str:
        return to_markdown(self)


def fmt(value) -> str:
    """One cell: None / NaN -> "—" (unknown); floats with two decimals, or four significant digits
    below 1 (losses, temperatures); integers and text as they are."""
    if value is None or (isinstance(value, float) and value != value):
        return UNKNOWN
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def to_markdown(rows: list[dict]) -> str:
    """A Markdown table of the rows (`|` inside a header or cell is escaped)."""
    if not rows:
        return "(no rows)"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    cell = lambda v: fmt(v).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(cell(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def save_table(run_dir: Path, table: Table, name: str) -> Path:
    """run_dir/<name>.json and <name>.md of a table."""
    write_json_atomic(run_dir / f"{name}.json", list(table))
    return write_text_atomic(run_dir / f"{name}.md", to_markdown(table) + "\n")
