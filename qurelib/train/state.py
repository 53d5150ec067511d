"""A run directory's state: the config as saved (`config_json`) and what forbids resuming or
forking under another (`config_differences`, `identity_differences`, `fork_problems`), the
checkpoint written after every epoch (`save_epoch`: model, optimizer, sampler, mined sets and
history) and read back (`resume`), and history.jsonl (`read_history`, checked against the
checkpoint; `restore_history` and its CLI, `python -m qurelib.train restore-history RUN_DIR`)."""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path

from qurelib.files import read_json_object, write_text_atomic
from qurelib.model import load_checkpoint, save_checkpoint
from qurelib.objectives import MultiNegativeSampler
from qurelib.qure import HardNegativeSets
from qurelib.train.config import ADDED_KEYS, CHECKPOINT, FORK_KEYS, HISTORY, NOT_RESUME_KEYS, TrainConfig
from qurelib.train.mining import AuxPositives, negative_sampler

def config_json(config: TrainConfig) -> dict:
    """The config as written to config.json and checkpoints: mining specs as their text, tuples as
    lists (`TrainConfig(**config_json(c)) == c`)."""
    plain = {f.name: getattr(config, f.name) for f in fields(config)}
    plain["mining"], plain["audit"] = str(config.mining), [str(spec) for spec in config.audit]
    return json.loads(json.dumps(plain))


def config_differences(saved: dict, config: TrainConfig, *, fork: bool = False) -> list[str]:
    """"key: saved != new" for every setting that forbids resuming a run saved with `saved`
    (a `config_json` dict) under `config`; with fork, also the settings a fork may change."""
    mine = config_json(config)
    if saved:  # a run saved before a setting existed was trained under its default
        defaults = config_json(TrainConfig())
        saved = {**{k: defaults[k] for k in ADDED_KEYS}, **saved}
    free = NOT_RESUME_KEYS | (FORK_KEYS if fork else frozenset())
    return [f"{k}: {saved.get(k)!r} != {mine.get(k)!r}"
            for k in sorted(set(saved) | set(mine)) if k not in free and saved.get(k) != mine.get(k)]


def identity_differences(saved: dict | None, identity: dict | None, *, fork: bool = False) -> list[str]:
    """"key: saved != new" for every part of a run's identity (what made it besides its settings:
    code, data, backbone, world size; `study.identity`) that differs. None on either side (a caller
    that tracks no identity) compares nothing; a fork does not compare "init" (the warm-up has none)."""
    if identity is None or saved is None and not identity:
        return []
    saved = saved or {}
    keys = sorted((set(saved) | set(identity)) - ({"init"} if fork else set()))
    return [f"{k}: {saved.get(k)!r} != {identity.get(k)!r}" for k in keys if saved.get(k) != identity.get(k)]


def save_epoch(model, optimizer, run_dir: Path, config: TrainConfig, epoch: int, history: list[dict],
          sets: HardNegativeSets | None, sampler, identity: dict | None = None,
          aux: AuxPositives | None = None) -> None:
    """Checkpoint after `epoch`, then history.jsonl (rewritten from the checkpointed history).
    The auxiliary positives (sets, weights, sampler) are saved only by a run that has them."""
    state = {"epoch": epoch, "optimizer": optimizer.state_dict(), "history": history,
             "sets": None if sets is None else {"indptr": sets.indptr, "indices": sets.indices,
                                               "fallback": sets.fallback},
             "sampler": None if sampler is None else sampler.state_dict()}
    if aux is not None:
        state["aux"] = {"indptr": aux.sets.indptr, "indices": aux.sets.indices, "fallback": aux.sets.fallback,
                        "weights": aux.weights, "sampler": aux.sampler.state_dict()}
    extra = {"kind": "qurelib-train", "epoch": epoch, "train_config": config_json(config), "identity": identity}
    save_checkpoint(model, run_dir / CHECKPOINT, extra=extra, state=state)
    write_text_atomic(run_dir / HISTORY, "".join(json.dumps(r) + "\n" for r in history))


def fork_problems(init_from: str | os.PathLike, config: TrainConfig) -> list[str]:
    """Why `init_from`'s checkpoint cannot start a fork trained with `config` (empty if it can),
    read from its config.json alone, so a stage can check before it moves or writes anything."""
    path = Path(init_from) / CHECKPOINT / "config.json"
    if not path.is_file():
        return [f"{path.parent} does not exist: run the warm-up stage first"]
    extra = read_json_object(path, "rerun the warm-up (stage 01)").get("extra", {})
    problems = config_differences(extra.get("train_config", {}), config, fork=True)
    if extra.get("epoch", 0) + 1 > config.period:
        problems.append(f"it is at epoch {extra.get('epoch', 0) + 1}, past the first re-mining (epoch {config.period})")
    return problems


def resume(model, optimizer, run_dir: Path, config: TrainConfig, init_from: str | os.PathLike | None = None,
            identity: dict | None = None):
    """(next epoch, history, sets, sampler, auxiliary positives) from run_dir's checkpoint, or from
    `init_from`'s (a fork: only before its first re-mining, and only `FORK_KEYS` may differ), or fresh."""
    fork = not (run_dir / CHECKPOINT).exists()
    if fork and init_from is None:
        return 0, [], None, None, None
    source = Path(init_from) if fork else run_dir
    if not (source / CHECKPOINT).exists():
        raise FileNotFoundError(f"init_from={source}: no {CHECKPOINT}/ there; run the warm-up stage first")
    ckpt = load_checkpoint(source / CHECKPOINT, device=str(model.device))
    diff = config_differences(ckpt.extra.get("train_config", {}), config, fork=fork) + \
        identity_differences(ckpt.extra.get("identity"), identity, fork=fork)
    if diff:
        raise ValueError(f"{source}: its checkpoint was trained with a different config "
                         f"({', '.join(diff)}); use a new run_dir")
    state = ckpt.state
    if fork and (state["sets"] is not None or state["epoch"] + 1 > config.period):
        raise ValueError(f"init_from={source}: a fork must start before the first re-mining "
                         f"(epoch {config.period}); that run is at epoch {state['epoch'] + 1}")
    model.load_state_dict(ckpt.model.state_dict())
    optimizer.load_state_dict(state["optimizer"])
    sets = sampler = aux = None
    if state["sets"] is not None:
        sets = HardNegativeSets(state["sets"]["indptr"], state["sets"]["indices"], state["sets"]["fallback"])
        sampler = negative_sampler(sets, config, seed=0)
        sampler.load_state_dict(state["sampler"])
    if state.get("aux") is not None:
        saved = state["aux"]
        aux_sets = HardNegativeSets(saved["indptr"], saved["indices"], saved["fallback"])
        aux = AuxPositives(aux_sets, saved["weights"], MultiNegativeSampler(aux_sets, config.aux_positives,
                                                                            allow_empty=True))
        aux.sampler.load_state_dict(saved["sampler"])
    return state["epoch"] + 1, list(state["history"]), sets, sampler, aux


def read_history(run_dir: str | os.PathLike) -> list[dict]:
    """The records of `run_dir/history.jsonl` (empty list if the run has not finished an epoch).

    The file must hold exactly epochs 0..e of the run's checkpoint (after epoch e): a damaged,
    truncated or edited history is a ValueError naming the file and the fix (`restore_history`).
    """
    run_dir = Path(run_dir)
    path = run_dir / HISTORY
    fix = f"restore it from the checkpoint: python -m qurelib.train restore-history {run_dir}"
    if not path.is_file():
        if (run_dir / CHECKPOINT).is_dir():
            raise ValueError(f"{path} is missing although {run_dir / CHECKPOINT} exists; {fix}")
        return []
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError as error:
                raise ValueError(f"{path}, line {n}, is damaged ({error}); {fix}") from None
    saved = run_dir / CHECKPOINT / "config.json"
    if saved.is_file():
        last = read_json_object(saved, f"rerun the run's stage; {run_dir / CHECKPOINT} is damaged") \
            .get("extra", {}).get("epoch")
        epochs = [r.get("epoch") if isinstance(r, dict) else None for r in records]
        if last is not None and epochs != list(range(last + 1)):
            raise ValueError(f"{path} holds epochs {epochs[:8]}{' ...' if len(epochs) > 8 else ''} but the checkpoint "
                             f"is after epoch {last} (expected epochs 0..{last}): the file was cut or edited; {fix}")
    return records


def restore_history(run_dir: str | os.PathLike) -> Path:
    """Rewrite `run_dir/history.jsonl` from the history its checkpoint holds (the checkpoint's files
    are verified by sha256); returns the file's path."""
    run_dir = Path(run_dir)
    ckpt = load_checkpoint(run_dir / CHECKPOINT, device="cpu")
    if not ckpt.state or "history" not in ckpt.state:
        raise ValueError(f"{run_dir / CHECKPOINT} holds no training state: retrain the run (rerun its stage)")
    write_text_atomic(run_dir / HISTORY, "".join(json.dumps(r) + "\n" for r in ckpt.state["history"]))
    return run_dir / HISTORY


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m qurelib.train restore-history RUN_DIR."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m qurelib.train", description="maintenance of a training run")
    ap.add_argument("command", choices=["restore-history"])
    ap.add_argument("run_dir", type=Path)
    args = ap.parse_args(argv)
    print(f"rewrote {restore_history(args.run_dir)} from its checkpoint")
    return 0
