"""A run's identity (qurelib.study.identity): a finished run is reused only when the code that
trains, the data's content, the backbone, the settings and the world size are what made it; and a
user's data folder is never rewritten. Each case once gave a stale result with exit code 0."""

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from qurelib import provenance, study
from qurelib import train as T
from qurelib.data.schema import DatasetError
from qurelib.data.synthetic import load_fashion_shapes, make_fashion_shapes
from qurelib.model import load_model
from qurelib.paths import PARAMS_DIR
from qurelib.study import identity, stages
from qurelib.study.config import FIELDS

SMOKE = {k: v for k, v in yaml.safe_load((PARAMS_DIR / "smoke.yaml").read_text()).items() if k in FIELDS}


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory):
    return make_fashion_shapes(tmp_path_factory.mktemp("fs") / "smoke", "smoke", seed=0)


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


def config(tmp_path, monkeypatch, **changes):
    monkeypatch.setattr("qurelib.paths.RUNS_DIR", tmp_path / "runs")
    return study.study_config(**{**SMOKE, **changes})


# --- the parts of the identity ------------------------------------------------------------------
def test_the_code_digest_follows_the_training_code_not_the_presentation(tmp_path, monkeypatch):
    package = tmp_path / "qurelib"
    (package / "study").mkdir(parents=True)
    (package / "train.py").write_text("def lr_at(e): return 1.0\n")
    (package / "study" / "plots.py").write_text("COLOURS = 1\n")
    monkeypatch.setattr(provenance, "REPO_ROOT", tmp_path)
    before = provenance.code_digest()
    (package / "study" / "plots.py").write_text("COLOURS = 2\n")  # a figure's colours: same models
    assert provenance.code_digest() == before
    (package / "train.py").write_text("def lr_at(e): return 0.5\n")  # the schedule: other models
    assert provenance.code_digest() != before


def test_the_data_digest_sees_an_edited_caption(smoke_root, tmp_path, monkeypatch):
    copy = tmp_path / "copy"
    shutil.copytree(smoke_root, copy)
    cfg = config(tmp_path, monkeypatch, data_root=str(copy))
    before = identity.dataset_digest(cfg)
    path = copy / "captions" / "cap.dress.train.json"
    captions = json.loads(path.read_text())
    captions[0]["captions"][0] = "is much redder"
    path.write_text(json.dumps(captions))
    assert identity.dataset_digest(cfg) != before


def test_run_identity_names_what_changed(smoke_root, tmp_path, monkeypatch):
    cfg = config(tmp_path, monkeypatch, data_root=str(smoke_root), model_name="some/blip2")
    one, three = identity.run_identity(cfg, nproc=1), identity.run_identity(cfg, nproc=3)
    assert (one["world_size"], three["world_size"], one["backbone"]) == (1, 3, "some/blip2")
    assert identity.identity_changes(one, three) == ["training processes: 1 -> 3"]
    assert identity.identity_changes(one, one) == []
    old = identity.identity_changes(None, one)  # a run from before identities: retrained
    assert [c.split(":")[0] for c in old] == ["backbone weights", "library code", "dataset content",
                                              "training processes"]  # not "init": None on both sides


# --- a stage sets aside a run made otherwise --------------------------------------------------------
def _finished_run(run: Path, train_config, ident: dict) -> None:
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"train_config": T.config_json(train_config), "identity": ident}))


@pytest.mark.parametrize("part", ["code", "data", "backbone", "world_size"])
def test_a_finished_run_of_another_identity_is_set_aside(tmp_path, monkeypatch, part):
    cfg = config(tmp_path, monkeypatch)
    ident = {"code": "c1", "data": "d1", "backbone": "b1", "init": None, "world_size": 1}
    run = tmp_path / "runs" / "smoke" / "qure"
    _finished_run(run, cfg.train_config(), ident)
    identity.set_aside_if_changed(run, cfg.train_config(), dict(ident))  # the same run: kept
    assert run.is_dir()
    changed = {**ident, part: 2 if part == "world_size" else "other"}
    with pytest.warns(UserWarning, match="moved to") as caught:
        identity.set_aside_if_changed(run, cfg.train_config(), changed)
    names = {"code": "library code", "data": "dataset content", "backbone": "backbone weights",
             "world_size": "training processes"}
    assert names[part] in str(caught[0].message)
    assert not run.exists() and len(list((tmp_path / "runs" / "smoke" / "stale").iterdir())) == 1


def test_a_run_with_a_corrupt_checkpoint_is_set_aside_not_resumed(tmp_path, monkeypatch):
    cfg = config(tmp_path, monkeypatch)
    run = tmp_path / "runs" / "smoke" / "qure"
    ident = {"code": "c"}
    _finished_run(run, cfg.train_config(), ident)
    from qurelib.model import save_checkpoint

    save_checkpoint(load_model("tiny", device="cpu"), run / T.CHECKPOINT)
    with (run / T.CHECKPOINT / "model.safetensors").open("r+b") as f:
        f.seek(200)
        f.write(b"\0\0\0\0")
    with pytest.warns(UserWarning, match="checkpoint is unusable"):
        identity.set_aside_if_changed(run, cfg.train_config(), ident)
    assert not run.exists()


def test_train_refuses_to_resume_a_checkpoint_of_another_identity(smoke_root, tmp_path):
    splits = load_fashion_shapes(smoke_root, "train")
    cfg = T.TrainConfig(epochs=2, n_def=2, batch_size=32, lr=1e-4, device="cpu", progress=False)
    torch.manual_seed(0)
    model = load_model("tiny", device="cpu")
    T.train(model, splits, cfg, tmp_path / "run", stop_epoch=1, identity={"code": "a", "world_size": 1})
    with pytest.raises(ValueError, match="code: 'a' != 'b'"):
        T.train(model, splits, cfg, tmp_path / "run", identity={"code": "b", "world_size": 1})
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["identity"] == {"code": "a", "world_size": 1} and "packages" in saved["environment"]


# --- a damaged history stops the stage with the file and the fix -----------------------------------
def test_a_cut_history_is_an_error_with_the_fix_and_the_fix_works(smoke_root, tmp_path):
    splits = load_fashion_shapes(smoke_root, "train")
    cfg = T.TrainConfig(epochs=2, n_def=2, batch_size=32, lr=1e-4, device="cpu", progress=False, warmup=False)
    run = tmp_path / "run"
    T.train(load_model("tiny", device="cpu"), splits, cfg, run)
    whole = T.read_history(run)
    assert [r["epoch"] for r in whole] == [0, 1]
    lines = (run / T.HISTORY).read_text().splitlines(keepends=True)
    (run / T.HISTORY).write_text(lines[0])  # one epoch cut
    with pytest.raises(ValueError, match="restore-history"):
        T.read_history(run)
    (run / T.HISTORY).unlink()
    with pytest.raises(ValueError, match="is missing"):
        T.read_history(run)
    assert T.main(["restore-history", str(run)]) == 0
    assert T.read_history(run) == whole


# --- data a user owns is never rewritten ------------------------------------------------------------
def test_a_negative_seed_is_refused_before_any_file_is_touched(smoke_root, tmp_path, monkeypatch):
    for name in ("seed", "data_seed"):
        with pytest.raises(ValueError, match=f"parameter {name}=-1"):
            config(tmp_path, monkeypatch, **{name: -1})
    copy = tmp_path / "copy"
    shutil.copytree(smoke_root, copy)
    before = tree_digest(copy)
    with pytest.raises(ValueError, match="seed=-1"):
        make_fashion_shapes(copy, "smoke", seed=-1)
    assert tree_digest(copy) == before


def test_a_malformed_entry_in_a_users_data_root_is_an_error_and_the_folder_is_untouched(smoke_root, tmp_path,
                                                                                          monkeypatch):
    copy = tmp_path / "mine"
    shutil.copytree(smoke_root, copy)
    path = copy / "captions" / "cap.shirt.train.json"
    entries = json.loads(path.read_text())
    entries[3]["captions"] = [1, 2]
    path.write_text(json.dumps(entries))
    before = tree_digest(copy)
    cfg = config(tmp_path, monkeypatch, data_root=str(copy))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "regenerating it" warning either
        with pytest.raises(DatasetError, match="cap.shirt.train.json"):
            stages.prepare_data(cfg)
    assert tree_digest(copy) == before


def test_the_projects_own_generated_folder_is_still_repaired(tmp_path, monkeypatch):
    monkeypatch.setattr("qurelib.paths.DATA_DIR", tmp_path / "data")
    cfg = config(tmp_path, monkeypatch)
    root = stages.prepare_data(cfg)
    assert root == tmp_path / "data" / "generated" / "fashion-shapes-smoke"
    (root / "captions" / "cap.toptee.val.json").write_text("[{]")
    with pytest.warns(UserWarning, match="regenerating"):
        stages.prepare_data(cfg)
    assert json.loads((root / "captions" / "cap.toptee.val.json").read_text())
    assert json.loads((cfg.run_dir / "data.json").read_text())["digest"] == identity.dataset_digest(cfg)
