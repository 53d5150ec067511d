"""Tables of the study: rows of dicts that render in Jupyter and in a terminal, and go to disk as
.json (every number) and .md (rounded for reading)."""

from __future__ import annotations

from pathlib import Path

from qurelib.files import write_json_atomic, write_text_atomic


class Table(list):
    """Rows (dicts) that render as a Markdown table in Jupyter and as text in a terminal."""

    def _repr_markdown_(self) -> str:
        return to_markdown(self)

    def __str__(self) -> str:
        return to_markdown(self)


def _fmt(value) -> str:
    """Floats: two decimals, or four significant digits below 1 (losses, temperatures)."""
    if value is None:
        return "—"  # unknown (e.g. a false-negative count on data whose positives are not all known)
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def to_markdown(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def save_table(run_dir: Path, table: Table, name: str) -> Path:
    """run_dir/<name>.json and <name>.md of a table."""
    write_json_atomic(run_dir / f"{name}.json", list(table))
    return write_text_atomic(run_dir / f"{name}.md", to_markdown(table) + "\n")
