"""Faults that once gave silently wrong or stale results: each now gives a correct
result or a clear error that names the file, field or parameter, before anything is moved."""

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from qurelib import audit, qure
from qurelib.data import load_fashioniq
from qurelib.paths import NOTEBOOKS_DIR, PARAMS_DIR
from qurelib.study import cache, identity, models, runner, stages
from qurelib.study.config import FIELDS, study_config
from qurelib.train import TrainConfig, config_json

SMOKE = {k: v for k, v in yaml.safe_load((PARAMS_DIR / "smoke.yaml").read_text()).items() if k in FIELDS}


def cfg_in(tmp_path, monkeypatch, **changes):
    monkeypatch.setattr("qurelib.paths.RUNS_DIR", tmp_path)
    return study_config(**{**SMOKE, **changes})


def fake_run(run_dir, config: TrainConfig, epoch: int):
    """A run folder whose checkpoint's config.json says it finished `epoch` (weights not needed)."""
    (run_dir / "checkpoint").mkdir(parents=True)
    (run_dir / "checkpoint" / "config.json").write_text(json.dumps(
        {"format": "qurelib-cir-checkpoint", "extra": {"epoch": epoch, "train_config": config_json(config)}}))
    (run_dir / "config.json").write_text(json.dumps({"train_config": config_json(config)}))


# --- 1. a killed stage leaves no output; an unfinished run is never evaluated ------------------
def test_a_failed_stage_leaves_no_output_notebook(tmp_path, monkeypatch):
    out = tmp_path / "03.ipynb"
    out.write_text("{}")  # a result of an earlier run must not survive a failed rerun

    def crash(src, dst, **_):
        open(dst, "w").write('{"half": "written"}')  # papermill writes as it executes ...
        raise KeyboardInterrupt  # ... and the process dies
    monkeypatch.setattr(runner.papermill, "execute_notebook", crash)
    with pytest.raises(KeyboardInterrupt):
        runner.run_stage(NOTEBOOKS_DIR / "03_preference_finetune.ipynb", out, PARAMS_DIR / "smoke.yaml")
    assert not out.exists()
    assert (tmp_path / "03.partial.ipynb").exists()


def test_an_interrupted_run_is_refused_by_evaluation(tmp_path, monkeypatch):
    cfg = cfg_in(tmp_path, monkeypatch)
    fake_run(cfg.run_dir / "qure", cfg.train_config(), epoch=1)  # 2 of 3 epochs
    with pytest.raises(RuntimeError, match="stopped after epoch 2 of 3"):
        models.load_run(cfg, "qure")


def test_a_finished_run_saved_by_older_code_still_loads(tmp_path, monkeypatch):
    """A run whose saved settings use names or spellings of an earlier version (mining as loose
    fields, audit specs as "drops/released") is still read for its schedule, not refused by today's
    TrainConfig validation: a finished one loads, an interrupted one is still refused."""
    cfg = cfg_in(tmp_path, monkeypatch)
    old = {**config_json(cfg.train_config()), "strategy": "drops", "rule": "released", "audit_k": 20,
           "audit": ["drops/released", "top_k"]}
    del old["mining"]
    for name, epoch in (("qure", 2), ("stopped", 1)):
        fake_run(cfg.run_dir / name, cfg.train_config(), epoch=epoch)
        path = cfg.run_dir / name / "checkpoint" / "config.json"
        doc = json.loads(path.read_text())
        doc["extra"]["train_config"] = old
        path.write_text(json.dumps(doc))
    monkeypatch.setattr(models, "load_model", lambda path, **_: path)  # no weights in a fake run
    assert models.load_run(cfg, "qure").endswith("checkpoint")
    with pytest.raises(RuntimeError, match="stopped after epoch 2 of 3"):
        models.load_run(cfg, "stopped")


# --- 3. parameters: only declared ones reach a notebook; typos are errors ----------------------
def test_each_stage_gets_only_its_parameters_and_typos_fail():
    nb = NOTEBOOKS_DIR / "00_make_data.ipynb"
    values = runner.stage_parameters(nb, PARAMS_DIR / "smoke.yaml", [])
    assert "run_name" not in values and values["epochs"] == 3
    with pytest.raises(runner.StageError, match=r"'epochz' \(did you mean 'epochs'\?\)"):
        runner.stage_parameters(nb, PARAMS_DIR / "smoke.yaml", [("epochz", "5")])
    chain = runner.stage_parameters(nb, None, [("hpfiq_path", "/x.json"), ("epochs", "7")], chain=NOTEBOOKS_DIR)
    assert chain == {"epochs": 7}  # hpfiq_path belongs to notebook 04 only


# --- 4. mining arguments are validated identically for both implementations --------------------
@pytest.mark.parametrize("impl", ["fast", "reference"])
@pytest.mark.parametrize("spec, kwargs, match", [
    ("percent_of_positive-k0-r0.9", {}, "k must be an int >= 1"),  # a spec's text: parsed by mine_hard_negatives
    (dict(strategy="percent_of_positive", ratio=0.9, k=-1), {}, "k must be an int >= 1"),  # fields: MiningSpec
    ("top_k-k2.5", {}, "k must be an int >= 1"),
    (dict(strategy="top_k", k=2.5), {}, "k must be an int >= 1"),
    ("drops", dict(block_rows=-1), "block_rows"),
    (dict(consecutive_threshold=-2), {}, "consecutive_threshold"),
])
def test_bad_mining_arguments_fail_the_same_way(impl, spec, kwargs, match):
    """The settings are one MiningSpec, refused before either implementation sees them (a dict
    here: its fields, refused by the constructor)."""
    scores = torch.randn(4, 10, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=match):
        spec = qure.MiningSpec(**spec) if isinstance(spec, dict) else spec
        qure.mine_hard_negatives(scores, torch.arange(4), spec, impl=impl, **kwargs)


def test_mining_inputs_are_checked_not_coerced():
    """Integer targets only; the same float32 values give the same sets whatever their container
    (numpy, float64); half-precision scores are mined as the float32 values they widen to (not as
    the float32 scores they were rounded from: rounding may merge or reorder scores)."""
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 8, generator=g)
    with pytest.raises(TypeError, match="target_idx must hold integer"):
        qure.mine_hard_negatives(scores, torch.tensor([0.9, 1.0, 2.0]))
    with pytest.raises(ValueError, match="1 corpus column"):
        qure.mine_hard_negatives(torch.randn(3, 1, generator=g), torch.zeros(3, dtype=torch.long))
    expected = qure.mine_hard_negatives(scores, torch.arange(3))
    for other in (scores.numpy(), scores.double()):
        got = qure.mine_hard_negatives(other, np.arange(3))
        assert [s.tolist() for s in got] == [s.tolist() for s in expected]
    for half in (torch.bfloat16, torch.float16):
        widened = qure.mine_hard_negatives(scores.to(half).float(), torch.arange(3))
        got = qure.mine_hard_negatives(scores.to(half), np.arange(3))
        assert [s.tolist() for s in got] == [s.tolist() for s in widened], half
        assert got.fallback.tolist() == widened.fallback.tolist(), half


def test_bradley_terry_refuses_a_zero_temperature():
    with pytest.raises(ValueError, match="temperature"):
        qure.bradley_terry_loss(torch.ones(2), torch.zeros(2), 0.0)
    with pytest.raises(ValueError, match="temperature"):
        qure.bradley_terry_loss(torch.ones(2), torch.zeros(2), torch.tensor(-0.1))


# --- 5. a failed check moves nothing ------------------------------------------------------------
def test_a_fork_that_cannot_start_moves_no_finished_run(tmp_path, monkeypatch):
    cfg = cfg_in(tmp_path, monkeypatch)
    fake_run(cfg.run_dir / "warmup", cfg.train_config(), epoch=0)
    fake_run(cfg.run_dir / "qure", cfg.train_config(), epoch=2)  # a finished run
    changed = study_config(**{**SMOKE, "lr": 1e-3})
    with pytest.raises(ValueError, match="lr"):
        stages.run_finetune(changed, None, {}, None, run_name="qure", mining="drops",
                            audit_specs=audit.hardness_specs(20, 0.95))
    assert (cfg.run_dir / "qure" / "checkpoint").is_dir() and not (cfg.run_dir / "stale").exists()


# --- 6, 8. malformed relevance files and damaged images -----------------------------------------
def test_malformed_positives_and_damaged_images(tmp_path, monkeypatch):
    from qurelib.data.schema import DatasetError
    from qurelib.data.synthetic import load_fashion_shapes, make_fashion_shapes

    root = make_fashion_shapes(tmp_path / "fs", "smoke", seed=0)
    cfg = cfg_in(tmp_path / "runs", monkeypatch, data_root=str(root))
    split = load_fashion_shapes(root, "val")["dress"]
    victim = split.corpus_ids[3]
    split.image_paths[victim].write_bytes(b"\x89PNG not really")  # a corrupt file
    assert split.check_images() == [] and [i for i, _ in split.check_images(verify=True)] == [victim]
    with pytest.raises(DatasetError, match=f"{victim}.*does not decode"):
        split.load_image(victim)
    with pytest.raises(DatasetError, match=f"{victim}"):  # a folder the user passed: named, never rewritten
        stages.prepare_data(cfg)
    assert split.image_paths[victim].read_bytes() == b"\x89PNG not really"
    make_fashion_shapes(root, "smoke", seed=0, force=True)  # what the project's own folder gets (stage 00)
    pos = root / "relevance" / "positives.dress.val.json"
    entries = json.loads(pos.read_text())
    entries[2] = "dress-val-img-0001"  # a string where a list belongs
    pos.write_text(json.dumps(entries))
    with pytest.raises(DatasetError, match=r"positives.dress.val.json, entry 2 .*expected a list"):
        load_fashion_shapes(root, "val")


def test_a_misspelled_compared_model_fails_before_anything_is_evaluated(tmp_path, monkeypatch):
    from qurelib.study import report

    cfg = cfg_in(tmp_path, monkeypatch)
    fake_run(cfg.run_dir / "qure", cfg.train_config(), epoch=2)
    with pytest.raises(FileNotFoundError, match=r"'qurre'.*Runs under .*\['qure'\]"):
        report.evaluate_runs(cfg, ["qurre"], {}, None)
    results, _ = report.evaluate_runs(cfg, ["qurre"], {}, None, allow_missing=True)
    assert "missing" in results["qurre"]


# --- 9. errors that were once vague: each names the file / field / parameter and the fix ---------
def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def fiq_root(root, captions, split="train", corpus=("A", "B", "C")):
    """A one-category (dress) FashionIQ-layout folder; images are not needed to load it."""
    write_json(root / "captions" / f"cap.dress.{split}.json", captions)
    write_json(root / "image_splits" / f"split.dress.{split}.json", list(corpus))
    return root


GOOD = {"candidate": "A", "target": "B", "captions": ["is red", "has dots"]}


@pytest.mark.parametrize("field, value, expected", [
    ("captions", [1, 2], r"field 'captions' must be a list of 2 strings, got \[1, 2\]"),
    ("target", None, r"field 'target' must be an image id \(a string\), got null; only the test split"),
    ("candidate", ["A", "C"], r"field 'candidate' must be an image id \(a string\), got \[\"A\", \"C\"\]"),
])
def test_a_malformed_caption_entry_names_file_entry_and_field(tmp_path, field, value, expected):
    from qurelib.data import DatasetError

    root = fiq_root(tmp_path, [GOOD, {**GOOD, field: value}])
    with pytest.raises(DatasetError, match=r"cap\.dress\.train\.json: entry 1: " + expected):
        load_fashioniq(root, "train", "dress")


def test_cirr_and_circo_entries_name_file_entry_id_and_field(tmp_path):
    from qurelib.data import DatasetError, load_circo, load_cirr

    entry = {"pairid": 7, "reference": "a", "target_hard": "b", "target_soft": {"b": 1.0}, "caption": "x",
             "img_set": {"members": ["a", "b"]}}
    write_json(tmp_path / "cirr" / "image_splits" / "split.rc2.val.json", {"a": "./dev/a.png", "b": "./dev/b.png"})
    cap = tmp_path / "cirr" / "captions" / "cap.rc2.val.json"
    for change, expected in [({"caption": ["x"]}, r"field 'caption' must be a string, got \[\"x\"\]"),
                             ({"target_hard": None}, r"field 'target_hard' must be an image id .*got null"),
                             ({"target_soft": ["b"]}, r"field 'target_soft' must be an object"),
                             ({"img_set": {"members": "ab"}}, r"field 'img_set.members' .*list")]:
        write_json(cap, [{**entry, **change}])
        with pytest.raises(DatasetError, match=r"cap\.rc2\.val\.json: entry 0 \(pairid 7\): " + expected):
            load_cirr(tmp_path, "val")
    write_json(tmp_path / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json",
               {"images": [{"id": 1, "file_name": "1.jpg"}, {"id": 2, "file_name": "2.jpg"}]})
    ann = {"id": 3, "reference_img_id": 1, "target_img_id": 2, "relative_caption": "x", "gt_img_ids": [2]}
    write_json(tmp_path / "annotations" / "val.json", [{**ann, "gt_img_ids": [2, None]}])
    with pytest.raises(DatasetError, match=r"val\.json: entry 0 \(id 3\): field 'gt_img_ids' must be a list of "
                                           r"image ids, got null"):
        load_circo(tmp_path, "val")


@pytest.mark.parametrize("empty", ["captions", "corpus"])
def test_an_empty_split_fails_at_load_naming_the_file(tmp_path, empty):
    from qurelib.data import DatasetError, load_cirr

    root = fiq_root(tmp_path, [] if empty == "captions" else [GOOD], corpus=() if empty == "corpus" else "ABC")
    name = "captions/cap.dress.train.json" if empty == "captions" else "image_splits/split.dress.train.json"
    with pytest.raises(DatasetError, match=f"{name} is empty: a split needs at least one"):
        load_fashioniq(root, "train", "dress")
    write_json(tmp_path / "cirr" / "captions" / "cap.rc2.val.json", [])
    with pytest.raises(DatasetError, match=r"cap\.rc2\.val\.json is empty"):
        load_cirr(tmp_path, "val")


def test_a_single_category_string_is_one_category(tmp_path):
    root = fiq_root(tmp_path, [GOOD])
    assert list(load_fashioniq(root, "train", categories="dress")) == ["dress"]  # not 'd', 'r', 'e', ...
    with pytest.raises(ValueError, match="categories must be a category name or a non-empty sequence"):
        load_fashioniq(root, "train", categories=())


def test_generated_data_repairs_itself_and_its_errors_say_regenerate(tmp_path, monkeypatch):
    from qurelib.data.schema import DatasetError
    from qurelib.data.synthetic import load_fashion_shapes, make_fashion_shapes, read_manifest

    from qurelib import paths

    monkeypatch.setattr("qurelib.paths.DATA_DIR", tmp_path / "data")  # the project's own generated folder
    root = make_fashion_shapes(paths.generated_data_dir("smoke"), "smoke", seed=0)
    cfg = cfg_in(tmp_path / "runs", monkeypatch)
    assert cfg.root == root
    split = load_fashion_shapes(root, "val")["shirt"]
    victim = split.corpus_ids[0]
    split.image_paths[victim].unlink()  # a deleted generated image
    with pytest.raises(DatasetError, match=f"{victim}.*missing.*Regenerate it: rerun stage 00") as error:
        split.load_image(victim)
    assert "README" not in str(error.value)  # nothing to download: the generator makes it
    manifest = root / "manifest.json"
    manifest.write_text(manifest.read_text()[:40])  # a truncated manifest
    with pytest.raises(DatasetError, match=r"cannot read .*manifest\.json .*Regenerate it: rerun stage 00"):
        read_manifest(root)
    with pytest.warns(UserWarning, match=r"manifest\.json is unreadable .*regenerating"):
        stages.prepare_data(cfg)
    assert split.image_paths[victim].is_file() and read_manifest(root)["profile"] == "smoke"
    (root / "captions" / "cap.toptee.train.json").unlink()  # a deleted generated annotation file
    with pytest.warns(UserWarning, match=r"does not load; regenerating it.*cap\.toptee\.train\.json"):
        stages.prepare_data(cfg)
    assert (root / "captions" / "cap.toptee.train.json").is_file()


def test_a_damaged_image_cache_is_rebuilt_with_a_warning(tmp_path, monkeypatch):
    from qurelib.model import load_model

    root = fiq_root(tmp_path / "fiq", [GOOD])
    for i, colour in zip("ABC", [(200, 0, 0), (0, 200, 0), (0, 0, 200)]):
        (root / "images").mkdir(exist_ok=True)
        Image.new("RGB", (16, 16), colour).save(root / "images" / f"{i}.png")
    cfg = cfg_in(tmp_path / "runs", monkeypatch, device="cpu")
    monkeypatch.setattr(cache, "load_splits", lambda cfg, split: load_fashioniq(root, "train", "dress"))
    model = load_model("tiny", device="cpu")
    first = cache.image_cache(cfg, model, progress=False)
    path = cfg.run_dir / "image_cache.pt"
    path.write_bytes(path.read_bytes()[:100])  # truncated (a killed write of an older version, a full disk)
    with pytest.warns(UserWarning, match=r"image_cache\.pt is unreadable .*rebuilding the image cache"):
        again = cache.image_cache(cfg, model, progress=False)
    assert again.row == first.row and torch.equal(again.embeds, first.embeds)
    assert torch.load(path, weights_only=True)["ids"] == ["A", "B", "C"]  # rewritten whole


def test_device_cuda_without_cuda_names_the_parameter_and_the_fix(tmp_path, monkeypatch):
    from qurelib.model import load_model

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only machine, even on a GPU box
    with pytest.raises(ValueError, match=r"parameter device='cuda': no CUDA device is available here "
                                         r"\(torch .*\); use device='cpu' or 'auto' .*-p device cpu"):
        cfg_in(tmp_path, monkeypatch, device="cuda")  # the notebooks' first cell
    with pytest.raises(ValueError, match=r"device='cuda:0': no CUDA device"):
        load_model("tiny", device="cuda:0")
    with pytest.raises(ValueError, match=r"device='gpu' is not a device name; use 'auto', 'cpu' or 'cuda'"):
        cfg_in(tmp_path, monkeypatch, device="gpu")
    assert cfg_in(tmp_path, monkeypatch, device="auto").train_config().device == "auto"


def image_split(root, corpus, captions):
    """A FashionIQ-layout dress train split with real (tiny) images for every id."""
    fiq_root(root, captions, corpus=corpus)
    (root / "images").mkdir(exist_ok=True)
    for n, image_id in enumerate({*corpus, *(c["candidate"] for c in captions)}):
        Image.new("RGB", (16, 16), (30 * n, 90, 0)).save(root / "images" / f"{image_id}.png")
    return load_fashioniq(root, "train", "dress")


@pytest.mark.parametrize("corpus, reference, changes, needed", [
    (["A"], "R", {}, "at least 2 corpus images"),  # N = 1
    (["A", "B"], "B", {"mining": "drops-xref"}, "once exclude_reference removes the reference; .* at least 3"),
    (["A"], "R", {"warmup": False}, "at least 2 corpus images"),  # mined from epoch 0: the same check
])
def test_a_corpus_without_negatives_fails_before_training(tmp_path, corpus, reference, changes, needed):
    from qurelib.model import load_model
    from qurelib.train import train

    splits = image_split(tmp_path / "data", corpus, [{"candidate": reference, "target": "A", "captions": ["a", "b"]}])
    config = TrainConfig(epochs=1, n_def=1, batch_size=2, device="cpu", progress=False, **changes)
    with pytest.raises(ValueError, match=r"split 'dress', query 'dress-train-0': its corpus of \d image\(s\) holds "
                                         r"no negative besides the target.*" + needed):
        train(load_model("tiny", device="cpu"), splits, config, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing encoded, nothing written
    info_nce = TrainConfig(epochs=1, n_def=1, batch_size=2, device="cpu", progress=False, loss="info_nce")
    assert len(train(load_model("tiny", device="cpu"), splits, info_nce, tmp_path / "nce")) == 1  # in-batch: fine


@pytest.mark.parametrize("changes, match", [
    (dict(epochs=2.5), "epochs must be an int >= 1, got 2.5"),
    (dict(batch_size=0), "batch_size must be an int >= 1, got 0"),
    (dict(lr=float("nan")), "lr must be a finite number > 0, got nan"),
    (dict(weight_decay=-0.1), "weight_decay must be a number >= 0"),
    (dict(eval_every=-1), "eval_every must be an int >= 0"),
    (dict(audit=("top_k-k0",)), "audit: .*k must be an int >= 1"),
    (dict(audit=("percent_of_positive-k20-r1.5",)), r"audit: .*needs 0 < ratio <= 1; got ratio=1.5"),
    (dict(audit="drops"), "audit must be a list of mining specs"),  # one text is not a list of them
    (dict(encode_batch_size=0), "encode_batch_size must be an int >= 1"),
    (dict(mining="top_k-k2.5"), "mining: .*k must be an int >= 1"),
    (dict(mining="drops-w1"), "mining: .*window must be None"),
    (dict(mining="bogus"), "mining: .*unknown strategy 'bogus'"),
])
def test_train_config_names_the_bad_parameter(changes, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**changes)


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_bf16_fp16_and_numpy_scores_give_the_float32_results(impl):
    from qurelib import anatomy, audit
    from qurelib.metrics.retrieval import circo_map_at_k, recall_at_k

    scores = torch.randn(6, 40, generator=torch.Generator().manual_seed(3))
    target = torch.tensor([1, 3, 5, 7, 9, 11])
    for given in (scores.bfloat16(), scores.half(), scores.numpy(), scores.half().numpy()):
        exact = torch.as_tensor(given).float()  # the same values in float32
        for spec in ("drops", "percent_of_positive-r0.9"):
            got = qure.mine_hard_negatives(given, target.numpy(), spec, impl=impl)
            want = qure.mine_hard_negatives(exact, target, spec, impl=impl)
            assert [s.tolist() for s in got] == [s.tolist() for s in want]
        assert recall_at_k(given, target) == recall_at_k(exact, target)
        assert circo_map_at_k(given, [[1, 2]] * 6) == circo_map_at_k(exact, [[1, 2]] * 6)
        assert torch.equal(audit.score_ranks(given), audit.score_ranks(exact))
        assert anatomy.gaps_by_decile(given) == anatomy.gaps_by_decile(exact)
        np.testing.assert_array_equal(anatomy.steepest_drop_position(given, target),
                                      anatomy.steepest_drop_position(exact, target))
        assert anatomy.persistent_low_images(given) == anatomy.persistent_low_images(exact)


def test_an_empty_split_built_in_code_is_named_at_evaluation(tmp_path):
    from qurelib.data.schema import CIRSplit
    from qurelib.evaluate import evaluate_splits

    empty = CIRSplit(name="dress-val", queries=[], corpus_ids=["A", "B"], image_paths={})
    with pytest.raises(ValueError, match="split 'dress-val' has 0 queries and 2 corpus images: nothing to rank"):
        evaluate_splits(None, {"dress": empty}, image_cache=object())  # refused before any model call


def test_damaged_run_files_are_named_with_the_stage_to_rerun(tmp_path, monkeypatch):
    from qurelib.train import fork_problems, read_history

    cfg = cfg_in(tmp_path, monkeypatch)
    fake_run(cfg.run_dir / "warmup", cfg.train_config(), epoch=0)
    ckpt = cfg.run_dir / "warmup" / "checkpoint" / "config.json"
    ckpt.write_text(ckpt.read_text()[:30])  # truncated
    with pytest.raises(ValueError, match=r"warmup/checkpoint/config\.json is damaged .*rerun the warm-up \(stage 01\)"):
        fork_problems(cfg.run_dir / "warmup", cfg.train_config())
    with pytest.raises(ValueError, match=r"config\.json is damaged .*rerun the stage that trains 'warmup'"):
        models.load_run(cfg, "warmup")
    (cfg.run_dir / "warmup" / "history.jsonl").write_text('{"epoch": 0}\n{"epo')
    with pytest.raises(ValueError, match=r"history\.jsonl, line 2, is damaged .*restore-history"):
        read_history(cfg.run_dir / "warmup")
    (cfg.run_dir / "warmup" / "config.json").write_text("[")  # cannot tell whether it may resume: start afresh
    with pytest.warns(UserWarning, match=r"config\.json is damaged.*moved to"):
        identity.set_aside_if_changed(cfg.run_dir / "warmup", cfg.train_config(), {})
    assert not (cfg.run_dir / "warmup").exists() and len(list((cfg.run_dir / "stale").iterdir())) == 1


@pytest.mark.parametrize("field, value, match", [
    ("preferred set", ["3"], r"user_1/question_set_1\[0\]: field 'preferred set' must be an integer in \(1, 2\), got \"3\""),
    ("retrieved_set1", [{"img_path": ["/-/image_data/shirt/A.jpg"], "user_score": "good"}],
     r"user_1/question_set_1\[0\]: field 'retrieved_set1.user_score' must be an integer, got \"good\""),
])
def test_hpfiq_judgements_name_the_item_and_field(tmp_path, field, value, match):
    from qurelib.data import DatasetError, load_hpfiq

    def image(asin):
        return f"/-/image_data/shirt/{asin}.jpg"
    qs = {"ref_img_paths": [image("R")], "targ_img_paths": [image("T")], "sentences": ["is red"],
          "preferred set": ["1"], "retrieved_set1": [{"img_path": [image("A")], "user_score": "2"}],
          "retrieved_set2": [{"img_path": [image("B")], "user_score": "4"}]}
    path = write_json(tmp_path / "hpfiq.json", {"user_1": {"question_set_1": {**qs, field: value}}})
    with pytest.raises(DatasetError, match=r"hpfiq\.json: " + match):
        load_hpfiq(path)
    assert load_hpfiq(write_json(path, {"user_1": {"question_set_1": qs}}))[0].preferred == 1


def test_fashion_shapes_records_and_profile_are_checked(tmp_path, monkeypatch):
    from qurelib.data.schema import DatasetError
    from qurelib.data.synthetic import load_fashion_shapes, make_fashion_shapes

    with pytest.raises(ValueError, match=r"parameter data_profile='smok': expected one of \('smoke', 'default'"):
        cfg_in(tmp_path, monkeypatch, data_profile="smok")
    root = make_fashion_shapes(tmp_path / "fs", "smoke", seed=0)
    attributes = root / "relevance" / "attributes.json"
    records = json.loads(attributes.read_text())
    victim = sorted(records)[0]
    records[victim] = {"category": "dress", "attributes": ["red"]}
    attributes.write_text(json.dumps(records))
    with pytest.raises(DatasetError, match=rf"attributes\.json: the record of '{victim}' must be an object with "
                                           r"'category' and 'attributes'.*Regenerate it"):
        load_fashion_shapes(root, victim.split("-")[2])
