"""Mutation testing of the core with mutmut, one group of modules at a time (`make mutation`).

    python tools/mutation.py run [GROUP ...] [--jobs N]   # default: every group
    python tools/mutation.py run GROUP --survivors        # retest all but the killed and the equivalent
    python tools/mutation.py score                        # kill score per module

Each group mutates its modules and selects only the fast unit tests that concern them, so a
mutant runs a few seconds of tests rather than the whole suite (mutmut itself further narrows the
selection to the tests that reach the mutated function, fastest first, stopping at the first
failure). A group runs in build/mutation/<group>/, a copy of qurelib/, tests/ and pyproject.toml
with the group's [tool.mutmut] section, where mutmut keeps its results (`mutmut show NAME` there
prints a mutant's diff). Mutants docs/MUTATION.md lists as equivalent (`| name |` table rows) are
left out of the score; "no tests" (nothing selected reaches the function) counts as survived; a
timeout counts as killed and is shown in its own column (`--survivors` retests timeouts, survivors
not listed as equivalent, and the mutants an interrupted run did not reach).
mutmut 3 does not mutate decorated functions: the @torch.no_grad() ones (kernels.score_corpus_chunked,
encode.build_image_cache / encode_split, train.mining.mine_splits) are outside the score.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "mutation"

GROUPS = {
    "qure": dict(  # the method and its fast paths
        files=["qurelib/qure.py", "qurelib/kernels.py", "qurelib/mining_spec.py"],
        mutants=["qurelib.qure.*", "qurelib.kernels.*", "qurelib.mining_spec.*"],
        tests=["tests/test_qure.py", "tests/test_kernels.py", "tests/test_mining_oracle.py", "tests/test_properties.py",
               "tests/test_drop_windows.py", "tests/test_mining_spec.py",
               "tests/test_wiring.py::test_info_nce_loss_by_hand_with_several_tokens",
               "tests/test_wiring.py::test_bradley_terry_by_hand_with_both_signs_and_a_temperature"]),
    "metrics": dict(
        files=["qurelib/metrics/*.py"],
        mutants=["qurelib.metrics.*"],
        tests=["tests/test_metrics.py", "tests/test_evaluate.py::test_metrics_from_scores_cirr_protocol_and_missing_targets"]),
    "evaluate": dict(  # evaluation and the encoding it calls
        files=["qurelib/evaluate.py", "qurelib/encode.py"],
        mutants=["qurelib.evaluate.*", "qurelib.encode.*"],
        tests=["tests/test_evaluate.py", "tests/test_wiring.py"]),
    "train": dict(  # the loss wiring of qurelib/train/, not checkpointing or the run loop
        files=["qurelib/train/loop.py", "qurelib/train/data.py"],
        mutants=["qurelib.train.loop.x_batch_loss*", "qurelib.train.loop.x_run_epoch*",
                 "qurelib.train.data.xǁTrainDataǁ*"],
        # test_train's runs reach these functions too but retrain a smoke model per mutant (minutes
        # on 2 shared cores); test_wiring checks the same wiring by value, on one shared fixture
        tests=["tests/test_wiring.py", "tests/test_train.py::test_config_schedule_and_validation"]),
}
FAILED = {1, 3}  # a failing test or a pytest error
TIMEOUT = {36, 24, -24, 152, 255}
KILLED = FAILED | TIMEOUT
NOT_RUN = {None, 2, 34}  # not checked, interrupted, skipped


def _config(group: dict) -> str:
    def toml_list(items):
        return "[" + ", ".join(json.dumps(i) for i in items) + "]"

    return ("\n[tool.mutmut]\n"
            'source_paths = ["qurelib"]\n'
            f"only_mutate = {toml_list(group['files'])}\n"
            f"pytest_add_cli_args_test_selection = {toml_list(group['tests'] + ['-m', 'not slow and not gpu'])}\n"
            'pytest_add_cli_args = ["-p", "no:cacheprovider", "-W", "ignore"]\n'
            'use_git_change_detection = false\n'  # a group's copy is not a checkout of its own
            # mutmut's wall-clock limit is (estimated test time + 1 s) x multiplier: on a loaded shared
            # machine its default of 15 turned slow surviving mutants into false "timeout" kills
            'timeout_multiplier = 60.0\n'
            'process_isolation = "forkserver"\n')  # torch is not fork-safe once used


def _results(work: Path) -> dict:
    codes = {}
    for meta in sorted((work / "mutants" / "qurelib").rglob("*.py.meta")):
        codes.update(json.loads(meta.read_text())["exit_code_by_key"])
    return codes


def run(names: list[str], jobs: int, survivors: bool = False) -> None:
    for name in names:
        group, work = GROUPS[name], WORK / name
        in_group = lambda k: any(fnmatch.fnmatch(k, g) for g in group["mutants"])  # noqa: E731
        if survivors:
            listed = equivalent_mutants()
            results = _results(work)
            targets = [k for k, v in results.items() if v not in FAILED and k not in listed and in_group(k)]  # timeouts too
            if not results:
                continue
        work.mkdir(parents=True, exist_ok=True)
        for part in ("qurelib", "tests"):
            shutil.rmtree(work / part, ignore_errors=True)
            shutil.copytree(ROOT / part, work / part, ignore=shutil.ignore_patterns("__pycache__"))
        (work / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + _config(group))
        start = time.time()
        mutmut = [sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs)]
        if not survivors:
            subprocess.run([*mutmut, *group["mutants"]], cwd=work, check=True, stdout=subprocess.DEVNULL)
        else:
            # mutmut regenerates the mutants of the copied code as it starts and forgets the results of
            # every function whose source changed; those (now "not run") are tested in a second pass
            first = targets or sorted(k for k in results if in_group(k))[:1]
            subprocess.run([*mutmut, *first], cwd=work, check=True, stdout=subprocess.DEVNULL)
            reset = [k for k, v in _results(work).items() if v in NOT_RUN and in_group(k)]
            if reset:
                subprocess.run([*mutmut, *reset], cwd=work, check=True, stdout=subprocess.DEVNULL)
        print(f"mutation group {name}: {time.time() - start:.0f} s")


def equivalent_mutants() -> set[str]:
    doc = ROOT / "docs" / "MUTATION.md"
    if not doc.is_file():
        return set()
    return set(re.findall(r"^\|\s*`?(qurelib\.[^|`\s]+__mutmut_\d+)`?\s*\|", doc.read_text(), flags=re.M))


def score() -> int:
    results = {}
    for name, group in GROUPS.items():
        codes = _results(WORK / name)
        results.update({k: v for k, v in codes.items() if any(fnmatch.fnmatch(k, g) for g in group["mutants"])})
    if not results:
        print("no mutmut results under build/mutation/: run `make mutation` first")
        return 1
    equivalent = equivalent_mutants()
    counts: dict[str, Counter] = defaultdict(Counter)
    survivors = []
    for name, code in sorted(results.items()):
        module = name.split(".x")[0].removeprefix("qurelib.")
        if code in NOT_RUN:
            counts[module]["not run"] += 1
        elif code in KILLED:
            counts[module]["killed"] += 1
            counts[module]["timeout"] += code in TIMEOUT
            if name in equivalent:
                print(f"listed as equivalent but killed: {name}")
        elif name in equivalent:
            counts[module]["equivalent"] += 1
        else:
            counts[module]["survived"] += 1
            survivors.append(name)
    print(f"{'module':<20} {'killed':>7} {'(timeout)':>9} {'survived':>9} {'equivalent':>11} {'not run':>8} "
          f"{'raw':>7} {'score':>7}")
    for module, c in sorted(counts.items()):
        judged = c["killed"] + c["survived"]
        raw = 100.0 * c["killed"] / (judged + c["equivalent"]) if judged else float("nan")
        pct = 100.0 * c["killed"] / judged if judged else float("nan")
        print(f"{module:<20} {c['killed']:>7} {c['timeout']:>9} {c['survived']:>9} {c['equivalent']:>11} "
              f"{c['not run']:>8} {raw:>6.1f}% {pct:>6.1f}%")
    print("raw: killed / all run; score: killed / (all run - equivalent)")
    if survivors:
        print(f"\n{len(survivors)} surviving mutants (see them with `cd build/mutation/<group> && mutmut show NAME`):")
        print("\n".join(f"  {s}" for s in survivors))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("run", "score"))
    parser.add_argument("groups", nargs="*", help=f"any of {', '.join(GROUPS)} (default: all)")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--survivors", action="store_true", help="retest every mutant no test has killed yet and docs/MUTATION.md does not "
                        "list as equivalent: survivors, timeouts, and those an interrupted run did not reach")
    args = parser.parse_args()
    unknown = set(args.groups) - set(GROUPS)
    if unknown:
        parser.error(f"unknown group(s) {sorted(unknown)}; expected some of {list(GROUPS)}")
    if args.command == "run":
        run(args.groups or list(GROUPS), args.jobs, args.survivors)
    return score()


if __name__ == "__main__":
    sys.exit(main())
