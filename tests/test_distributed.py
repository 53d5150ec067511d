"""Data-parallel training, sharded image cache, scoring and mining (qurelib.distributed) at world
size 2 on CPU with gloo, each rank one thread, against the single process (world 1, spawned the
same way). What must be exact and what only equal to float rounding:

- sharded image cache, scoring and mining from the same weights: exact (every row is encoded,
  scored and mined on its own; rows are only placed on other ranks);
- losses and weights after data-parallel steps: equal to float reduction order (the gradient of a
  global batch is a sum of two half-batch sums instead of one sum), about 1e-7 relative per step;
- hence sets mined later in a run: exact only from the same weights. The drop rule is discontinuous,
  so a rounding-level weight difference can move a drop pair (it does on this tiny model after the
  warm-up), which is why the trajectory test forks world 1 and world 2 from one checkpoint.
"""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from qurelib import distributed
from qurelib import train as T
from qurelib.data.synthetic import load_fashion_shapes
from qurelib.model import load_checkpoint

sys.path.insert(0, str(Path(__file__).parent))  # spawned ranks import the workers by name
import distributed_workers as W  # noqa: E402

CONFIG = dict(epochs=2, n_def=2, batch_size=8, lr=1e-4, device="cpu", progress=False,
              audit=("drops-paper", "top_k-k10"))
LOSS_RTOL = 1e-6  # float reduction order: one sum of B terms vs two sums of B / 2


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory):
    from qurelib.data.synthetic import make_fashion_shapes

    return str(make_fashion_shapes(tmp_path_factory.mktemp("fs") / "smoke", "smoke", seed=0))


def _strip(history):
    return [{k: v for k, v in r.items() if k not in T.TIMING_KEYS} for r in history]


def _state(run_dir):
    ckpt = load_checkpoint(Path(run_dir) / T.CHECKPOINT, device="cpu")
    return ckpt.model.state_dict(), ckpt.state


def test_shard_ranges_and_batch_size_errors():
    assert [distributed.shard_range(10, r, 3) for r in range(3)] == [(0, 4), (4, 7), (7, 10)]
    assert [distributed.shard_range(1, r, 2) for r in range(2)] == [(0, 1), (1, 1)]
    assert distributed.local_batch_size(32, 4) == 8
    with pytest.raises(ValueError, match=r"batch_size=30 .* world size of 4"):
        distributed.local_batch_size(30, 4)


@pytest.fixture(scope="module")
def first(smoke_root, tmp_path_factory):
    """`distributed_workers.first_pass` at world 1 and world 2: {world: folder}."""
    mining = {**CONFIG, "mining": "drops-xref", "audit": ("drops-paper", "top_k-k10", "all")}
    out = {}
    for world in (1, 2):
        out[world] = tmp_path_factory.mktemp(f"w{world}")
        distributed.spawn(W.first_pass, world, smoke_root, str(out[world]), CONFIG, mining)
    return out


def test_sharded_cache_scoring_and_mining_equal_single_process(first):
    one, two = torch.load(first[1] / "mine.pt"), torch.load(first[2] / "mine.pt")
    for key in ("cache", "indptr", "indices", "fallback"):
        assert torch.equal(one[key], two[key]), key
    assert one["rows"] == two["rows"] and one["stats"] == two["stats"]


def test_info_nce_gathered_negatives_equal_the_global_batch(first):
    r = torch.load(first[2] / "nce.pt")  # 7 queries: shares of 4 and 3
    assert r["offset_seen"] == 7  # each rank scored its queries against all 7 targets
    assert r["parallel_loss"] == pytest.approx(r["single_loss"], rel=LOSS_RTOL)
    for single, parallel in zip(r["single"], r["parallel"]):
        assert (single is None) == (parallel is None)
        if single is not None:
            torch.testing.assert_close(parallel, single, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def warmups(first):
    """The warm-up epoch (random negatives) at world 1 and world 2: {world: run_dir}."""
    return {world: first[world] / "warmup" for world in (1, 2)}


def _fork(warmup, smoke_root, tmp):
    """`warmup` resumed for the mining epoch at world 1 and at world 2: {world: run_dir}."""
    for world in (1, 2):
        shutil.copytree(warmup, tmp / f"w{world}")
        distributed.spawn(W.train_run, world, smoke_root, str(tmp / f"w{world}"), CONFIG)
    return {world: tmp / f"w{world}" for world in (1, 2)}


@pytest.fixture(scope="module")
def forks(warmups, smoke_root, tmp_path_factory):
    """The world-2 warm-up resumed at world 1 and at world 2 (the world-2 one is an uninterrupted
    world-2 run: resuming is exact, tests/test_train.py)."""
    return _fork(warmups[2], smoke_root, tmp_path_factory.mktemp("fork"))


def _assert_same_mining_epoch(one, two):
    """Runs resumed from one checkpoint at world 1 (`one`) and world 2 (`two`) mined the same sets,
    drew the same negatives and reached the same loss (to float reduction order)."""
    h1, h2 = T.read_history(one), T.read_history(two)
    assert [r["negatives"] for r in h1] == [r["negatives"] for r in h2] == ["random", "mined"]
    assert h2[1]["mining"] == h1[1]["mining"]  # sets mined from the same weights: identical statistics
    assert h2[1]["loss"] == pytest.approx(h1[1]["loss"], rel=1e-5)
    (_, s1), (_, s2) = _state(one), _state(two)
    for key in ("indptr", "indices", "fallback"):
        assert torch.equal(s1["sets"][key], s2["sets"][key]), key
    for key in ("perm", "cursor"):  # the sampler drew the same negatives and stands at the same place
        assert (s1["sampler"][key] == s2["sampler"][key]).all(), key
    assert s1["sampler"]["rng"] == s2["sampler"]["rng"]


def test_world2_trajectory_sets_and_negatives_equal_world1(warmups, forks, smoke_root):
    one, two = T.read_history(warmups[1]), T.read_history(warmups[2])
    assert [r["negatives"] for r in one] == [r["negatives"] for r in two] == ["random"]
    assert two[0]["loss"] == pytest.approx(one[0]["loss"], rel=LOSS_RTOL)
    w1, _ = _state(warmups[1])
    w2, _ = _state(warmups[2])
    queries = sum(len(s.queries) for s in load_fashion_shapes(smoke_root, "train").values())
    steps = -(-queries // CONFIG["batch_size"])  # AdamW steps of the warm-up epoch
    for k in w1:  # AdamW divides each gradient coordinate by its own scale: a coordinate whose gradient
        # is a near-cancelling sum (rounding-dominated) moves by up to ~lr per step in either process,
        # so the weights agree to lr x steps, not to float epsilon
        torch.testing.assert_close(w2[k], w1[k], rtol=0, atol=CONFIG["lr"] * steps)
    # the mining epoch from the same (world-2) weights, resumed at world 1 and at world 2
    _assert_same_mining_epoch(forks[1], forks[2])


def test_a_world1_run_resumes_at_world2(warmups, smoke_root, tmp_path):
    """The other direction: a run started in one process goes on at world 2 as it goes on alone."""
    resumed = _fork(warmups[1], smoke_root, tmp_path)
    assert T.read_history(resumed[2])[0] == T.read_history(warmups[1])[0]  # epoch 0 kept, not retrained
    _assert_same_mining_epoch(resumed[1], resumed[2])


KILLABLE = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    import distributed_workers as W
    from qurelib import distributed
    if __name__ == "__main__":
        distributed.spawn(W.train_run, 2, sys.argv[2], sys.argv[3], %r)
""" % CONFIG)


def test_killed_rank_then_resumed_matches_uninterrupted(forks, smoke_root, tmp_path):
    reference = forks[2]  # a world-2 run of both epochs
    run_dir = tmp_path / "run"
    script = tmp_path / "killable.py"
    script.write_text(KILLABLE)
    proc = subprocess.Popen([sys.executable, str(script), str(Path(__file__).parent), smoke_root, str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 600  # a guard against a hang, not a time limit: CI machines may be loaded
    while not (run_dir / T.HISTORY).is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # into epoch 1 (its re-mining or first batches)
    pid = int((run_dir / "rank1.pid").read_text())
    os.kill(pid, signal.SIGKILL)  # one rank dies; the other fails in its next collective
    proc.communicate(timeout=600)
    assert proc.returncode != 0
    assert len(T.read_history(run_dir)) == 1, "rank 1 was not killed mid-run"
    distributed.spawn(W.train_run, 2, smoke_root, str(run_dir), CONFIG)  # resumes after epoch 0
    assert _strip(T.read_history(run_dir)) == _strip(T.read_history(reference))
    (w_run, s_run), (w_ref, s_ref) = _state(run_dir), _state(reference)
    assert all(torch.equal(w_run[k], w_ref[k]) for k in w_ref)
    assert all(torch.equal(s_run["sets"][k], s_ref["sets"][k]) for k in s_ref["sets"])
