"""The objectives of `qurelib.objectives` inside training: TrainConfig's settings and their checks,
`batch_loss` on a Draw (m = 1 multi-negative is Bradley-Terry, in-batch + hard with m = 0 is
InfoNCE), the default run on QuRe's own code path, the auxiliary positives recorded at each
re-mining, and exact resume of a run with m negatives and auxiliary positives."""

import json
import pytest
import torch

from qurelib import train as T
from qurelib.objectives import MultiNegativeSampler
from qurelib.qure import MiningSpec, NegativeSampler
from qurelib.train import loop
from qurelib.train.mining import negative_sampler

# Eq. 1 computed two ways (elementwise product + sum on QuRe's path, einsum in
# `objectives.hard_negative_scores`) rounds differently in float32: scores of magnitude ~1 agree to a
# few ulps (~1e-7), divided by a temperature ~0.07 and averaged, well inside 1e-5 relative.
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Fashion-Shapes smoke data (one split), a tiny model in eval mode (no dropout), its image cache,
    TrainData."""
    from qurelib.data.synthetic import load_fashion_shapes, make_fashion_shapes
    from qurelib.encode import build_image_cache
    from qurelib.model import load_model

    root = make_fashion_shapes(tmp_path_factory.mktemp("fs") / "smoke", "smoke", seed=0)
    splits = {"dress": load_fashion_shapes(root, "train")["dress"]}  # one split of 60 queries: fast enough
    model = load_model("tiny", device="cpu")
    cache = build_image_cache(model, splits.values(), progress=False)
    model.eval()
    return root, splits, model, cache, T.TrainData.build(splits, cache)


def _loss(world, ids, negatives, loss):
    _, _, model, cache, data = world
    with torch.no_grad():
        return T.batch_loss(model, data, cache, torch.tensor(ids), negatives, loss)


def _ones(q: int, m: int) -> torch.Tensor:
    return torch.ones(q, m, dtype=torch.bool)


# --- settings -----------------------------------------------------------------------------------
def test_defaults_are_qure_and_the_objective_settings_are_checked_by_name():
    config = T.TrainConfig()
    assert (config.loss, config.negatives, config.aux_positives, config.aux_weighting) == \
        ("bradley_terry", 1, 0, "none")
    assert config.mines and not T.TrainConfig(loss="info_nce").mines
    assert not T.TrainConfig(loss="in_batch_hard", negatives=0).mines  # m = 0 is InfoNCE: nothing to mine
    for bad, field in [(dict(loss="triplet"), "loss"), (dict(negatives=5), "negatives"),
                       (dict(loss="multi_negative", negatives=0), "negatives"),
                       (dict(loss="info_nce", negatives=3), "negatives"),
                       (dict(loss="multi_negative", negatives=True), "negatives"),
                       (dict(loss="in_batch_hard", negatives=-1), "negatives"),
                       (dict(loss="aux_positive"), "aux_positives"),
                       (dict(loss="multi_negative", aux_positives=2), "aux_positives"),
                       (dict(loss="aux_positive_weighted", aux_positives=2), "aux_weighting"),
                       (dict(loss="aux_positive", aux_positives=2, aux_weighting="rank"), "aux_weighting"),
                       (dict(loss="aux_positive_weighted", aux_positives=2, aux_weighting="rank", aux_decay=0),
                        "aux_decay"),
                       (dict(aux_width=float("nan")), "aux_width")]:
        with pytest.raises(ValueError, match=field):
            T.TrainConfig(**bad)
    T.TrainConfig(loss="aux_positive_weighted", aux_positives=2, negatives=4, aux_weighting="score", aux_width=0.1)


def test_the_objective_settings_may_fork_the_warm_up_and_old_configs_stay_valid():
    new = {"loss", "negatives", "aux_positives", "aux_weighting", "aux_decay", "aux_width"}
    assert new <= T.FORK_KEYS  # they act from the first re-mining on
    config = T.TrainConfig(loss="multi_negative", negatives=5)
    saved = T.config_json(T.TrainConfig())
    assert T.config_differences(saved, config, fork=True) == []
    assert T.config_differences(saved, config) != []  # a resume must not change the objective
    old = {k: v for k, v in saved.items() if k not in T.ADDED_KEYS}  # a config.json written before them
    assert T.config_differences(old, T.TrainConfig()) == []
    assert T.config_differences(old, T.TrainConfig(loss="multi_negative", negatives=2)) == \
        ["loss: 'bradley_terry' != 'multi_negative'", "negatives: 1 != 2"]


# --- batch_loss ---------------------------------------------------------------------------------
def test_multi_negative_with_one_negative_is_bradley_terry_through_batch_loss(world):
    _, _, _, _, data = world
    gen = torch.Generator().manual_seed(0)
    negatives = data.random_negatives(gen)  # (Q,) cache rows, never the target
    ids = torch.randperm(len(data), generator=gen)[:12].tolist()
    bt = _loss(world, ids, negatives, "bradley_terry")
    draw = T.Draw(negatives[:, None], _ones(len(data), 1))
    torch.testing.assert_close(_loss(world, ids, draw, "multi_negative"), bt, rtol=RTOL, atol=ATOL)
    # no auxiliary positive drawn (every one masked): the auxiliary objectives are the same loss
    aux = T.Draw(negatives[:, None], _ones(len(data), 1), aux=torch.full((len(data), 2), -1),
                 aux_mask=torch.zeros(len(data), 2, dtype=torch.bool), aux_weights=torch.zeros(len(data), 2))
    for name in ("aux_positive", "aux_positive_weighted"):
        torch.testing.assert_close(_loss(world, ids, aux, name), bt, rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(_loss(world, ids, draw, name), bt, rtol=RTOL, atol=ATOL)  # the warm-up: none yet
    with pytest.raises(ValueError, match="Draw"):
        _loss(world, ids, negatives, "multi_negative")
    with pytest.raises(ValueError, match="tensor"):
        _loss(world, ids, draw, "bradley_terry")


def test_in_batch_hard_without_hard_negatives_is_info_nce_through_batch_loss(world):
    _, _, model, cache, data = world
    ids = [0, 5, 9, 14, 33, 51]
    model.train()  # dropout on: the same draws give the same loss only on the same code path
    try:
        losses = []
        for name in ("info_nce", "in_batch_hard"):
            torch.manual_seed(3)
            losses.append(T.batch_loss(model, data, cache, torch.tensor(ids), None, name).detach())
    finally:
        model.eval()
    assert torch.equal(losses[0], losses[1])  # m = 0: exactly InfoNCE
    nce = _loss(world, ids, None, "info_nce")
    # a hard negative that is another query's target in the batch is masked, not counted twice;
    # a padding slot (mask False) adds nothing: both leave InfoNCE's value
    other = data.target_rows[torch.tensor(ids)].roll(1)  # (B,) each query gets its neighbour's target
    negatives = torch.zeros(len(data), 2, dtype=torch.long)
    negatives[ids, 0] = other
    mask = torch.zeros(len(data), 2, dtype=torch.bool)
    mask[:, 0] = True
    torch.testing.assert_close(_loss(world, ids, T.Draw(negatives, mask), "in_batch_hard"), nce, rtol=RTOL, atol=ATOL)
    # a real hard negative adds mass to the denominator: the loss grows
    negatives[ids, 0] = data.random_negatives(torch.Generator().manual_seed(1))[ids]
    assert float(_loss(world, ids, T.Draw(negatives, mask), "in_batch_hard")) > float(nce)


# --- runs ---------------------------------------------------------------------------------------
BASE = dict(epochs=4, n_def=2, batch_size=16, lr=1e-4, device="cpu", progress=False)  # warm-up 0-1, H mined at 2


def _strip(history):
    return [{k: v for k, v in r.items() if k not in T.TIMING_KEYS} for r in history]


@pytest.fixture(scope="module")
def warmup(world, tmp_path_factory):
    _, splits, _, cache, _ = world
    from qurelib.model import load_model

    run = tmp_path_factory.mktemp("objectives") / "warmup"
    T.train(load_model("tiny", device="cpu"), splits, T.TrainConfig(**BASE), run, image_cache=cache, stop_epoch=2)
    return run


def test_default_run_takes_qures_code_path(world, warmup, tmp_path, monkeypatch):
    """The defaults train as before the objectives existed (bit-identical weights were checked
    against the code before them): NegativeSampler, a (Q,) tensor of negatives, Bradley-Terry,
    no auxiliary positives in the checkpoint and no new field in the history."""
    from qurelib.model import load_checkpoint, load_model

    _, splits, _, cache, _ = world
    seen, real = [], T.batch_loss
    monkeypatch.setattr(loop, "batch_loss", lambda *a, **k: seen.append((a[4], a[5])) or real(*a, **k))
    history = T.train(load_model("tiny", device="cpu"), splits, T.TrainConfig(**BASE), tmp_path / "qure",
                      image_cache=cache, init_from=warmup)
    assert {loss for _, loss in seen} == {"bradley_terry"}
    assert all(isinstance(n, torch.Tensor) and n.dim() == 1 for n, _ in seen)
    state = load_checkpoint(tmp_path / "qure" / T.CHECKPOINT, device="cpu").state
    assert "aux" not in state and "m" not in state["sampler"]  # NegativeSampler's own state
    assert all("sets_below_m" not in r and all("aux" not in s for s in r.get("mining", {}).values())
               for r in history)
    assert isinstance(negative_sampler(_sets(), T.TrainConfig(), seed=0), NegativeSampler)
    assert isinstance(negative_sampler(_sets(), T.TrainConfig(loss="multi_negative", negatives=1), seed=0),
                      MultiNegativeSampler)


def _sets():
    from qurelib.qure import HardNegativeSets

    return HardNegativeSets.from_lists([[1, 2], [0]], [False, False])


def test_a_run_with_m_negatives_and_auxiliary_positives_resumes_exactly(world, warmup, tmp_path):
    """Epochs 0-1 are the shared warm-up, H is mined at epoch 2 and epoch 3 draws from the
    checkpointed samplers: stopping after epoch 2 and resuming gives the uninterrupted run."""
    from qurelib.model import load_checkpoint, load_model

    _, splits, _, cache, _ = world
    config = T.TrainConfig(**BASE, loss="aux_positive_weighted", negatives=3, aux_positives=2,
                           aux_weighting="score", mining="drops-w0.2")
    whole = T.train(load_model("tiny", device="cpu"), splits, config, tmp_path / "whole", image_cache=cache,
                    init_from=warmup)
    T.train(load_model("tiny", device="cpu"), splits, config, tmp_path / "cut", image_cache=cache,
            init_from=warmup, stop_epoch=3)
    state = load_checkpoint(tmp_path / "cut" / T.CHECKPOINT, device="cpu").state
    assert state["sampler"]["m"] == 3 and state["aux"]["sampler"]["m"] == 2
    resumed = T.train(load_model("tiny", device="cpu"), splits, config, tmp_path / "cut", image_cache=cache)
    # the sampler, the mined sets, every record, the loss and the weights resume exactly (the gather of
    # repeated rows has a reproducible backward: `loop.take_rows`)
    assert _strip(resumed) == _strip(whole)
    a = load_checkpoint(tmp_path / "cut" / T.CHECKPOINT, device="cpu").model.state_dict()
    b = load_checkpoint(tmp_path / "whole" / T.CHECKPOINT, device="cpu").model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # what the history records: |H| < m per draw, the auxiliary positives and their true positives
    assert [r["negatives"] for r in whole] == ["random", "random", "mined", "mined"]
    assert all(isinstance(r["sets_below_m"], int) and 0 <= r["sets_below_m"] <= len(world[4]) for r in whole[2:])
    for stats in whole[2]["mining"].values():
        aux = stats["aux"]
        assert aux["queries"] == stats["queries"] and aux["size_mean"] >= 0 and 0 <= aux["empty"] <= aux["queries"]
        assert aux["tp_rate"] is None or 0.0 <= aux["tp_rate"] <= 100.0  # Fashion-Shapes knows every positive
    assert any(s["aux"]["size_mean"] > 0 for s in whole[2]["mining"].values())
    assert json.loads((tmp_path / "whole" / "config.json").read_text())["train_config"]["negatives"] == 3


def test_in_batch_hard_with_m0_trains_as_info_nce(world, tmp_path):
    from qurelib.model import load_checkpoint, load_model

    _, splits, _, cache, _ = world
    small = {k: v for k, v in BASE.items() if k != "epochs"}
    runs = {}
    for name, extra in (("info_nce", {}), ("in_batch_hard", dict(negatives=0))):
        config = T.TrainConfig(**small, epochs=1, loss=name, **extra)
        history = T.train(load_model("tiny", device="cpu"), splits, config, tmp_path / name, image_cache=cache)
        assert [r["negatives"] for r in history] == ["in_batch"]
        runs[name] = (history, load_checkpoint(tmp_path / name / T.CHECKPOINT, device="cpu").model.state_dict())
    (ha, a), (hb, b) = runs.values()
    assert _strip(ha) == _strip(hb) and all(torch.equal(a[k], b[k]) for k in a)


def test_aux_sets_are_recorded_as_cache_rows_between_target_and_h(world):
    """mine_with_aux: the auxiliary positives of every query are cache rows of its own split, never
    its target, and never a member of its H; weights align with them."""
    _, splits, model, cache, data = world
    config = T.TrainConfig(progress=False, device="cpu", loss="aux_positive", aux_positives=1,
                           mining=MiningSpec(window=0.2))
    sets, (aux, weights), stats = T.mine_with_aux(model, data, cache, config, epoch=1, aux=True)
    assert len(aux) == len(data) and weights.shape == aux.indices.shape and bool((weights == 1).all())
    for q in range(0, len(data), 7):
        members = set(aux[q].tolist())
        assert int(data.target_rows[q]) not in members and not members & set(sets[q].tolist())
    assert set(stats) == set(splits) and all("aux" in s for s in stats.values())
    assert sum(len(aux[q]) for q in range(len(data))) == pytest.approx(
        sum(s["aux"]["size_mean"] * s["aux"]["queries"] for s in stats.values()))


def test_take_rows_backward_is_the_serial_sum_every_time():
    """Gathering repeated rows of a tensor that needs gradients: above ATen's grain size (32,768
    gathered elements) advanced indexing's backward sums the repeats in parallel, in an order that can
    change from run to run; `take_rows` gives the serial (deterministic-mode) sum on every call."""
    from qurelib.train.loop import take_rows

    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 8, 128, generator=g)
    index = torch.randint(0, 6, (8, 5), generator=g)  # 8 x 5 x 8 x 128 = 40,960 gathered elements
    upstream = torch.randn(8, 5, 8, 128, generator=g)

    def grad(gather) -> torch.Tensor:
        leaf = x.clone().requires_grad_(True)
        gather(leaf).backward(upstream)
        return leaf.grad

    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the parallel path needs more than one thread
    try:
        torch.use_deterministic_algorithms(True)
        try:
            serial = grad(lambda t: t[index])
        finally:
            torch.use_deterministic_algorithms(False)
        assert torch.equal(take_rows(x, index), x[index])
        assert all(torch.equal(grad(lambda t: take_rows(t, index)), serial) for _ in range(20))
    finally:
        torch.set_num_threads(threads)

