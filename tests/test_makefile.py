"""The Makefile's settings, read back through make itself (no stage runs): one setting decides where
runs live, a path make cannot hold is refused by name, and the CPU numerics are pinned."""

import shutil
import subprocess

import pytest

from qurelib.paths import REPO_ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def make_value(expression: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Evaluate `expression` (make syntax) in the project's Makefile with `args` on the command line."""
    probe = f"qurelib-probe: ; @echo {expression}"
    return subprocess.run(["make", "-s", "--no-print-directory", "--eval", probe, "qurelib-probe", *args],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, env=env)


def test_runs_and_qurelib_runs_dir_are_one_setting(tmp_path):
    """`make reproduce RUNS=/x` once trained into /x but wrote results.json under the repository's
    runs/; `QURELIB_RUNS_DIR=/x make reproduce` said done without creating /x."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "QURELIB_RUNS_DIR"}
    by_runs = make_value("$$QURELIB_RUNS_DIR $(RUN)", f"RUNS={tmp_path}/a", "PROFILE=smoke", env=env)
    assert by_runs.stdout.split() == [f"{tmp_path}/a", f"{tmp_path}/a/smoke"]
    by_env = make_value("$$QURELIB_RUNS_DIR $(RUN)", "PROFILE=smoke", env={**env, "QURELIB_RUNS_DIR": f"{tmp_path}/b"})
    assert by_env.stdout.split() == [f"{tmp_path}/b", f"{tmp_path}/b/smoke"]


def test_a_runs_path_with_a_space_is_refused_by_name():
    done = make_value("x", "RUNS=/tmp/my runs")
    assert done.returncode != 0 and 'RUNS="/tmp/my runs" holds a space' in done.stderr


def test_the_numerics_are_pinned_unless_asked_not_to():
    import platform

    pinned = make_value("$$OMP_NUM_THREADS $$ATEN_CPU_CAPABILITY $$MKL_CBWR").stdout.split()
    assert pinned[0] == "2"
    if platform.machine() == "x86_64":
        assert pinned[1:] == ["avx2", "AVX2"]
    assert make_value("[$$ATEN_CPU_CAPABILITY]", "NUMERICS=native",
                      env={"PATH": "/usr/bin:/bin"}).stdout.strip() == "[]"
