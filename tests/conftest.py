"""Shared pytest setup: offline hub, and the `slow` / `gpu` markers skipped unless asked for."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow (real weights / data)")
    parser.addoption("--run-gpu", action="store_true", help="run tests marked gpu (needs CUDA)")


def pytest_collection_modifyitems(config, items):
    for marker, flag in (("slow", "--run-slow"), ("gpu", "--run-gpu")):
        if config.getoption(flag):
            continue
        skip = pytest.mark.skip(reason=f"{marker} test: pass {flag} to run it")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    """Rows the mining fast path decided itself in the parity tests (tests/fastpath.py)."""
    import sys

    fastpath = sys.modules.get("fastpath")
    if fastpath is None or not fastpath.TOTALS:
        return
    decided = sum(d for d, _ in fastpath.TOTALS.values())
    rows = sum(n for _, n in fastpath.TOTALS.values())
    terminalreporter.write_line(f"mining fast path: decided {decided} of {rows} rows itself "
                                f"({100 * decided / max(rows, 1):.1f}%) in the parity tests; per test group:")
    for name, (d, n) in sorted(fastpath.TOTALS.items()):
        terminalreporter.write_line(f"  {name}: {d}/{n}")
