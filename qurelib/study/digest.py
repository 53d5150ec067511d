"""A results file without what may differ between two runs of the same commit: its numbers only.

    numbers(doc)                  results.json / ablation.json minus timing and provenance fields
    smoke_digest(run_dir)         {"results": ..., "ablation": ...} of a smoke run (make test checks it)
    python -m qurelib.study.digest write RUN_DIR FILE     (make smoke-digest)
    python -m qurelib.study.digest compare A.json B.json  two results files, timing fields aside

Two runs of the same commit, data, settings and seed on pinned CPU numerics (the Makefile) give
identical `numbers`, float for float; a change of any number is therefore a deliberate update of the
committed digest (tests/expected/smoke_digest.json), never a surprise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# fields that describe when, where and how long a run took, not what it found
VOLATILE = frozenset({"git_commit", "provenance", "evaluated_at", "evaluate_wall_s", "train_wall_s", "environment",
                      "wall_s", "epoch_s", "mining_s", "train_s", "queries_per_s", "eval_s"})


def numbers(doc):
    """`doc` with every VOLATILE key removed, at any depth."""
    if isinstance(doc, dict):
        return {k: numbers(v) for k, v in doc.items() if k not in VOLATILE}
    if isinstance(doc, list):
        return [numbers(v) for v in doc]
    return doc


def smoke_digest(run_dir: str | Path) -> dict:
    """The numbers of a smoke run's results.json and ablation.json (every metric of every model,
    the mined sets' statistics of every re-mining and audited strategy)."""
    run_dir = Path(run_dir)
    out = {}
    for name in ("results", "ablation"):
        path = run_dir / f"{name}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: run the smoke chain and its ablation first "
                                    f"(make reproduce PROFILE=smoke && make ablation PROFILE=smoke)")
        out[name] = numbers(json.loads(path.read_text()))
    return out


def differences(a, b, path: str = "") -> list[str]:
    """Where two JSON values differ ("path: a != b"), exactly (floats bit for bit)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in (differences(a.get(k), b.get(k), f"{path}/{k}") if k in a and k in b
                          else [f"{path}/{k}: only in {'the first' if k in a else 'the second'}"])]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b and type(a) is type(b) else [f"{path}: {a!r} != {b!r}"]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 3 and argv[0] == "write":
        digest = smoke_digest(argv[1])
        Path(argv[2]).parent.mkdir(parents=True, exist_ok=True)
        Path(argv[2]).write_text(json.dumps(digest, indent=1, sort_keys=True) + "\n")
        print(f"wrote {argv[2]}")
        return 0
    if len(argv) == 3 and argv[0] == "compare":
        a, b = (numbers(json.loads(Path(p).read_text())) for p in argv[1:])
        diff = differences(a, b)
        print("\n".join(diff[:50]) if diff else "identical, timing and provenance fields aside")
        return 1 if diff else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
