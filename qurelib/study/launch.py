"""One training stage on several processes: `torchrun --nproc_per_node=N -m qurelib.study.launch SPEC`
(what `stages.run_warmup` / `run_finetune` / `run_baseline` start through
`elsewhere.train_elsewhere` when given nproc > 1, e.g. from `make reproduce NPROC=2`).

SPEC is a JSON file written by the stage: {"study": StudyConfig fields, "stage": "warmup" |
"finetune" | "baseline", "kwargs": the stage's keyword arguments, "val": bool}. Every rank loads
the same splits, backbone and image cache and calls the stage in-process (nproc=1) inside the
torch.distributed group; `qurelib.train` shares the work and rank 0 writes the run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from qurelib import distributed
from qurelib.study import stages
from qurelib.study.cache import image_cache
from qurelib.study.config import StudyConfig
from qurelib.study.models import load_named_model


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: torchrun --nproc_per_node=N -m qurelib.study.launch SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    distributed.init_from_env()
    cfg = StudyConfig(**spec["study"])
    train_splits = stages.load_splits(cfg, "train")
    val = {"val_splits": stages.load_splits(cfg, "val")} if spec.get("val") else {}
    progress = spec["kwargs"].pop("progress", True) and distributed.is_main()
    model = load_named_model(cfg, "pretrained")  # a fork / resume overwrites it from its checkpoint
    cache = image_cache(cfg, model, progress=progress)
    if spec["stage"] == "warmup":
        stages.run_warmup(cfg, model, train_splits, cache, progress=progress)
    elif spec["stage"] == "finetune":
        stages.run_finetune(cfg, model, train_splits, cache, **spec["kwargs"], **val, progress=progress)
    else:
        stages.run_baseline(cfg, train_splits, cache, **spec["kwargs"], **val, progress=progress)
    distributed.barrier()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
