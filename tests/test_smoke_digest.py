"""The smoke chain's numbers, exactly: every metric of every model and every mined-set statistic of
the smoke run that `make test` trains (QURELIB_RUNS_DIR) against tests/expected/smoke_digest.json.

Same commit, same data, same seed and the Makefile's pinned CPU numerics give the same floats, so any
difference is a change of the study's numbers: deliberate ones are committed by rewriting the file
(`make smoke-digest`), never discovered later in a README that no longer reproduces.
"""

import json
import os
from pathlib import Path

import pytest

from qurelib.study import digest

EXPECTED = Path(__file__).parent / "expected" / "smoke_digest.json"


def test_the_smoke_chain_gives_the_committed_numbers():
    runs = os.environ.get("QURELIB_RUNS_DIR")
    if not runs or not (Path(runs) / "smoke" / "results.json").is_file():
        pytest.skip("needs the smoke chain and its ablation in QURELIB_RUNS_DIR (make test trains them first)")
    got = digest.smoke_digest(Path(runs) / "smoke")
    expected = json.loads(EXPECTED.read_text())
    diff = digest.differences(expected, got)
    assert not diff, (f"{len(diff)} smoke number(s) differ from {EXPECTED.name}, e.g.\n  " + "\n  ".join(diff[:12])
                      + "\nA deliberate change: `make smoke-digest` and commit the file. Otherwise check what made "
                        "them (make's pinned NUMERICS, the lock file's packages, the code).")


def test_numbers_drop_only_timing_and_provenance():
    doc = {"git_commit": "abc+dirty", "provenance": {"cpu": "x"}, "evaluated_at": "now", "train_wall_s": {"a": 1.0},
           "models": {"qure": {"headline": {"avg": 28.125}}},
           "mining": {"qure": [{"epoch": 1, "mean_size": 12.5, "wall_s": 3.0}]}}
    assert digest.numbers(doc) == {"models": {"qure": {"headline": {"avg": 28.125}}},
                                   "mining": {"qure": [{"epoch": 1, "mean_size": 12.5}]}}


def test_differences_are_exact_and_name_the_path():
    a = {"models": {"qure": {"avg": 0.1 + 0.2}}, "n": [1, 2]}
    assert digest.differences(a, json.loads(json.dumps(a))) == []  # JSON round-trips floats exactly
    b = {"models": {"qure": {"avg": 0.3}}, "n": [1, 2]}
    assert digest.differences(a, b) == [f"/models/qure/avg: {0.1 + 0.2!r} != 0.3"]
    assert digest.differences({"x": 1}, {"x": 1.0}) == ["/x: 1 != 1.0"]
    assert digest.differences({"x": 1}, {"y": 1}) == ["/x: only in the first", "/y: only in the second"]
