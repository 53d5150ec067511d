"""qurelib.train on the Fashion-Shapes smoke profile: schedule, re-mining with a false-negative audit,
evaluation, and exact resume after a subprocess is killed mid-epoch."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from qurelib import train as T
from qurelib.qure import MiningSpec

EPOCHS = 3  # warm-up epoch 0, re-mining at epochs 1 and 2 (n_def = 3)

WORKER = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    from qurelib.data.synthetic import load_fashion_shapes
    from qurelib.model import load_model
    from qurelib.train import TrainConfig, train
    root, run_dir = sys.argv[1], sys.argv[2]
    config = TrainConfig(epochs=%d, n_def=3, batch_size=8, lr=1e-4, device="cpu", progress=False,
                         eval_every=3, audit=("drops-paper", "top_k-k10", "all"))
    train(load_model("tiny", device="cpu"), load_fashion_shapes(root, "train"), config, run_dir,
          val_splits=load_fashion_shapes(root, "val"))
""" % EPOCHS)


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory):
    from qurelib.data.synthetic import make_fashion_shapes

    return make_fashion_shapes(tmp_path_factory.mktemp("fs") / "smoke", "smoke", seed=0)


def _worker(tmp: Path, root: Path, run_dir: Path) -> subprocess.Popen:
    script = tmp / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script), str(root), str(run_dir)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> None:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode()[-3000:]


@pytest.fixture(scope="module")
def reference_run(smoke_root, tmp_path_factory):
    """An uninterrupted smoke run (subprocess, 1 thread)."""
    tmp = tmp_path_factory.mktemp("ref")
    _finish(_worker(tmp, smoke_root, tmp / "run"))
    return tmp / "run"


def _strip(history):
    return [{k: v for k, v in r.items() if k not in T.TIMING_KEYS} for r in history]


def test_smoke_run_trains_remines_audits_and_evaluates(reference_run):
    history = T.read_history(reference_run)
    assert [r["epoch"] for r in history] == list(range(EPOCHS))
    assert [r["negatives"] for r in history] == ["random", "mined", "mined"]
    assert "mining" not in history[0] and all("mining" in r for r in history[1:])
    lrs = [r["lr"] for r in history]
    assert lrs[0] == pytest.approx(1e-4) and lrs[0] > lrs[1] > lrs[2] > 1e-6
    for record in history[1:]:
        for name, stats in record["mining"].items():
            assert 0.0 <= stats["fn_rate"] <= 100.0 and 0.0 <= stats["queries_with_fn"] <= 100.0
            assert stats["size_min"] >= 1
            assert set(stats["audit"]) == {"drops-paper", "top_k-k10", "all"}  # keyed by the specs' texts
            assert stats["audit"]["top_k-k10"]["size_max"] == 10
            # "all" holds every other image, so every query with >1 positive has a false negative
            assert stats["audit"]["all"]["queries_with_fn"] == pytest.approx(100.0)
            # the hardness audit: Fashion-Shapes knows every attribute, so the composition is known
            hard = stats["hardness"]
            assert hard["size_mean"] == pytest.approx(stats["size_mean"])
            assert 0.0 <= hard["rank_p10"] <= hard["rank_median"] <= hard["rank_p90"] <= 1.0
            assert set(hard["composition"]) == {"0", "1", "2", "3", "4"}
            assert sum(hard["composition"].values()) == pytest.approx(100.0)
            assert sum(stats["corpus_composition"].values()) == pytest.approx(100.0)
            assert stats["audit"]["all"]["hardness"]["composition"] == pytest.approx(stats["corpus_composition"])
    val = history[-1]["val"]
    assert {"R@10", "R@50", "avg"} <= set(val) and "nDCG@10" in val["dress"] and "P@5" in val["dress"]
    assert all(r["loss"] > 0 and r["temperature"] > 0 for r in history)
    config = json.loads((reference_run / "config.json").read_text())
    assert config["train_config"]["epochs"] == EPOCHS


def test_killed_mid_epoch_then_resumed_matches_uninterrupted(reference_run, smoke_root, tmp_path):
    from qurelib.model import load_checkpoint

    run_dir = tmp_path / "run"
    proc = _worker(tmp_path, smoke_root, run_dir)
    deadline = time.time() + 600  # a guard against a hang, not a time limit: CI machines may be loaded
    while not (run_dir / T.HISTORY).is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # into epoch 1 (its re-mining or first batches)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(T.read_history(run_dir))
    assert 1 <= done < EPOCHS, f"the worker was not killed mid-run ({done} epochs done)"
    _finish(_worker(tmp_path, smoke_root, run_dir))  # resumes after the last complete epoch
    assert _strip(T.read_history(run_dir)) == _strip(T.read_history(reference_run))
    resumed = load_checkpoint(run_dir / T.CHECKPOINT, device="cpu").model.state_dict()
    reference = load_checkpoint(reference_run / T.CHECKPOINT, device="cpu").model.state_dict()
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)


def test_resume_refuses_a_different_config(reference_run, smoke_root):
    from qurelib.data.synthetic import load_fashion_shapes
    from qurelib.model import load_model

    config = T.TrainConfig(epochs=EPOCHS, n_def=3, batch_size=8, lr=3e-4, device="cpu", progress=False)
    with pytest.raises(ValueError, match="lr"):
        T.train(load_model("tiny", device="cpu"), load_fashion_shapes(smoke_root, "train"), config, reference_run)


def test_config_schedule_and_validation():
    cfg = T.TrainConfig(epochs=30, n_def=6)
    assert cfg.period == 5
    assert [e for e in range(30) if cfg.mines_at(e)] == [5, 10, 15, 20, 25]  # released FIQ schedule
    assert [e for e in range(50) if T.TrainConfig(epochs=50).mines_at(e)] == [8, 16, 24, 32, 40, 48]
    assert T.TrainConfig(epochs=4, n_def=6, warmup=False).mines_at(0)
    assert not any(T.TrainConfig(epochs=6, loss="info_nce").mines_at(e) for e in range(6))
    assert cfg.lr_at(0) == pytest.approx(5e-6) and cfg.lr_at(30) == pytest.approx(5e-8)
    with pytest.raises(ValueError, match="loss"):
        T.TrainConfig(loss="triplet")


def test_info_nce_baseline_and_warmup_negatives(smoke_root, tmp_path):
    from qurelib.data.synthetic import load_fashion_shapes
    from qurelib.encode import build_image_cache
    from qurelib.model import load_model

    splits = load_fashion_shapes(smoke_root, "train")
    model = load_model("tiny", device="cpu")
    cache = build_image_cache(model, splits.values(), progress=False)
    data = T.TrainData.build(splits, cache)
    neg = data.random_negatives(torch.Generator().manual_seed(0))
    assert not bool((neg == data.target_rows).any())  # never the target
    for name, split in splits.items():  # always inside the query's own split corpus
        part = slice(data.offsets[name], data.offsets[name] + len(split.queries))
        assert set(neg[part].tolist()) <= set(data.corpus_rows[name].tolist())
    sets, stats = T.mine_splits(model, data, cache, T.TrainConfig(progress=False, device="cpu"), epoch=1)
    assert len(sets) == len(data) and set(stats) == set(splits)
    for q in range(0, len(data), 17):  # merged sets hold cache rows of the query's own split, never its target
        name = max((n for n in splits if data.offsets[n] <= q), key=data.offsets.get)
        assert set(sets[q].tolist()) <= set(data.corpus_rows[name].tolist())
        assert int(data.target_rows[q]) not in sets[q].tolist()
    config = T.TrainConfig(epochs=1, loss="info_nce", batch_size=32, lr=1e-4, device="cpu", progress=False)
    history = T.train(model, splits, config, tmp_path / "nce", image_cache=cache)
    assert history[0]["negatives"] == "in_batch" and "mining" not in history[0]
    assert (tmp_path / "nce" / T.CHECKPOINT / "train_state.pt").is_file()


def test_staged_warmup_then_forks_with_other_strategies(smoke_root, tmp_path):
    """The study's chain: a warm-up run stopped after E // n_def epochs, forked per strategy."""
    from qurelib.data.synthetic import load_fashion_shapes
    from qurelib.encode import build_image_cache
    from qurelib.model import load_model

    splits = load_fashion_shapes(smoke_root, "train")
    model = load_model("tiny", device="cpu")
    cache = build_image_cache(model, splits.values(), progress=False)
    base = dict(epochs=3, n_def=3, batch_size=16, lr=1e-4, device="cpu", progress=False)
    warm = T.train(model, splits, T.TrainConfig(**base), tmp_path / "warmup", image_cache=cache, stop_epoch=1)
    assert [r["negatives"] for r in warm] == ["random"]
    fork = T.train(load_model("tiny", device="cpu"), splits, T.TrainConfig(**base, mining="top_k-k5"),
                   tmp_path / "top_k", image_cache=cache, init_from=tmp_path / "warmup")
    assert [r["negatives"] for r in fork] == ["random", "mined", "mined"]
    assert fork[0] == warm[0]  # the shared warm-up epoch, carried over
    assert all(stats["size_max"] == 5 for stats in fork[1]["mining"].values())
    assert json.loads((tmp_path / "top_k" / "config.json").read_text())["init_from"].endswith("warmup")
    with pytest.raises(ValueError, match="first re-mining"):  # forking a run that already mined
        T.train(load_model("tiny", device="cpu"), splits, T.TrainConfig(**base, mining=MiningSpec("all")),
                tmp_path / "late", image_cache=cache, init_from=tmp_path / "top_k")
    with pytest.raises(ValueError, match="lr"):  # the warm-up itself must match
        T.train(load_model("tiny", device="cpu"), splits, T.TrainConfig(**{**base, "lr": 2e-4}),
                tmp_path / "other", image_cache=cache, init_from=tmp_path / "warmup")


@pytest.mark.parametrize("settings, field", [
    (dict(mining="drops"), "needs the whole curve"),
    (dict(mining="drops-w0.05", audit=("drops-paper",)), "leave audit empty"),
    (dict(mining="drops-w0.05", loss="aux_positive", aux_positives=2), "auxiliary positives"),
    (dict(mining="drops-w0.05", candidates=""), "factory string"),
    (dict(candidates=None, candidate_search="nprobe=4"), "needs candidates"),
])
def test_candidate_settings_are_refused_where_the_index_cannot_serve(settings, field):
    with pytest.raises(ValueError, match=field):
        T.TrainConfig(**{"candidates": "Flat", **settings})


def test_re_mining_from_the_exact_index_trains_exactly_like_full_mining(smoke_root, tmp_path):
    """The windowed rule re-mined from an exact FAISS index ("Flat", rebuilt from the current model
    at every re-mining) gives the same sets as scoring the whole corpus, so the same training: the
    same statistics at each re-mining and the same weights, to the bit."""
    from qurelib.data.synthetic import load_fashion_shapes
    from qurelib.model import load_model

    splits = load_fashion_shapes(smoke_root, "train")
    runs = {}
    for name, candidates in (("full", None), ("index", "Flat")):
        torch.manual_seed(0)
        config = T.TrainConfig(epochs=2, n_def=2, batch_size=8, lr=1e-4, device="cpu", progress=False,
                               mining="drops-w0.05", candidates=candidates)
        model = load_model("tiny", device="cpu")
        history = T.train(model, splits, config, tmp_path / name)
        runs[name] = (history, model.state_dict())
    (full, w_full), (index, w_index) = runs["full"], runs["index"]
    mined = [(f["mining"], i["mining"]) for f, i in zip(full, index) if "mining" in f]
    assert len(mined) == 1
    for split, stats in mined[0][0].items():
        other = mined[0][1][split]
        assert {k: stats[k] for k in ("size_mean", "size_max", "fallbacks", "fn_rate")} == \
            {k: other[k] for k in ("size_mean", "size_max", "fallbacks", "fn_rate")}
        assert other["candidates"]["index"] == "Flat" and other["candidates"]["rounds"] >= 1
        assert "hardness" in stats and "hardness" not in other  # the rank audit needs the whole corpus
    assert [r["loss"] for r in full] == [r["loss"] for r in index]
    assert all(torch.equal(w_full[k], w_index[k]) for k in w_full)
