"""Shared pytest setup: offline hub, the `slow` / `gpu` markers skipped unless asked for, and the
global random generators seeded per test.

Seeding. Every test starts with `random`, numpy's global generator and torch's global generator
seeded from its own node id (plus the run's base seed), so what a test draws does not depend on
which tests ran before it or in which order. A fixture wider than a test (module scope) is seeded
the same way from its own name when it is set up, because the test that happens to set it up first
changes with the order. Nothing is restored afterwards: the next test seeds again.

The base seed is pytest-randomly's seed when that plugin is active (it is in the `dev` extra and
then shuffles the test order on every run), else 0. pytest-randomly seeds `random` and numpy with
the same values (base + crc32(node id)); torch is seeded here. The seed is printed at the end of the
run; to replay a failure, order and draws alike:

    pytest tests -p randomly --randomly-seed=<printed seed>

(`-p no:randomly` runs in file order with base seed 0.) A test that fails for some seeds and not
for others tests its draw: make it hold for every draw instead of pinning a seed.
"""

import os
import random
import zlib

import numpy as np
import pytest
import torch

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


def base_seed(config) -> int | None:
    """pytest-randomly's seed for this run, or None when the plugin is not active."""
    seed = config.getoption("randomly_seed", None)
    return seed if isinstance(seed, int) else None


def seed_everything(config, key: str) -> int:
    """Seed random, numpy and torch from `key` (a node id) and the run's base seed; returns the seed.
    The value is pytest-randomly's own per-test value, base + crc32(key)."""
    seed = (base_seed(config) or 0) + zlib.crc32(key.encode(errors="surrogatepass"))
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed % 2 ** 32)
    return seed


@pytest.fixture(autouse=True)
def seeded_global_rngs(request):
    """random, numpy and torch seeded from this test's node id (see the module docstring)."""
    return seed_everything(request.config, request.node.nodeid)


@pytest.hookimpl(tryfirst=True)
def pytest_fixture_setup(fixturedef, request):
    """A module- or session-scoped fixture draws from generators seeded by its own name, not from
    whatever the test that first needed it left behind."""
    if fixturedef.scope != "function":
        seed_everything(request.config, f"{fixturedef.baseid}::{fixturedef.argname}")


def pytest_terminal_summary(terminalreporter, config):
    """The seed to replay this run with, and the rows the mining fast path decided itself in the
    parity tests (tests/fastpath.py)."""
    import sys

    seed = base_seed(config)
    if seed is not None:
        terminalreporter.write_line(f"test order and random draws: replay with -p randomly --randomly-seed={seed}")
    fastpath = sys.modules.get("fastpath")
    if fastpath is None or not fastpath.TOTALS:
        return
    decided = sum(d for d, _ in fastpath.TOTALS.values())
    rows = sum(n for _, n in fastpath.TOTALS.values())
    terminalreporter.write_line(f"mining fast path: decided {decided} of {rows} rows itself "
                                f"({100 * decided / max(rows, 1):.1f}%) in the parity tests; per test group:")
    for name, (d, n) in sorted(fastpath.TOTALS.items()):
        terminalreporter.write_line(f"  {name}: {d}/{n}")
