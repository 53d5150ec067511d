"""A training stage on several processes, from the notebook's side: `train_elsewhere` writes the
stage's settings to runs/<profile>/<run>.launch.json and runs `torchrun -m qurelib.study.launch`
on them (the entry each rank runs is `qurelib.study.launch`)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

from qurelib.files import write_json_atomic
from qurelib.model import load_checkpoint
from qurelib.study.config import StudyConfig
from qurelib.train import CHECKPOINT, read_history


def train_elsewhere(cfg: StudyConfig, stage: str, run: str, nproc: int, model=None, *, val: bool = False,
                    **kwargs) -> list[dict]:
    """Run a training stage on `nproc` processes: `torchrun --nproc_per_node=nproc -m
    qurelib.study.launch` on the same settings (written to runs/<profile>/<run>.launch.json),
    then load the run's checkpoint into `model` (if given) and return its history."""
    spec = cfg.run_dir / f"{run}.launch.json"
    write_json_atomic(spec, {"study": dataclasses.asdict(cfg), "stage": stage, "kwargs": kwargs, "val": val})
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "qurelib.study.launch", str(spec)]
    done = subprocess.run(command, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{stage} on {nproc} processes failed (exit {done.returncode}): {' '.join(command)}; "
                           f"its output is above. Rerun with nproc=1 to train in this process")
    if model is not None:
        model.load_state_dict(load_checkpoint(cfg.run_dir / run / CHECKPOINT, device=str(model.device))
                              .model.state_dict())
        model.eval()
    return read_history(cfg.run_dir / run)
