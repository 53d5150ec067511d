"""The notebook stages' plumbing: parameter checking, tables, stale runs set aside."""

import json
import warnings

import pytest
import yaml

from qurelib import study
from qurelib.mining_spec import MiningSpec
from qurelib.paths import PARAMS_DIR
from qurelib.study import identity
from qurelib.study.config import FIELDS
from qurelib.train import config_json

SMOKE = {k: v for k, v in yaml.safe_load((PARAMS_DIR / "smoke.yaml").read_text()).items() if k in FIELDS}


def smoke_config(**changes):
    return study.study_config(**{**SMOKE, **changes})


def test_study_config_checks_names_types_and_datasets():
    cfg = smoke_config(profile="unit", epochs=4, lr=1)
    assert (cfg.profile, cfg.epochs, cfg.lr) == ("unit", 4, 1)
    with pytest.raises(TypeError, match="epochs"):
        smoke_config(epochs="4")
    with pytest.raises(TypeError, match=r"'epochz' \(did you mean 'epochs'\?\)"):
        smoke_config(epochz=5)
    with pytest.raises(TypeError, match="missing study parameter.*seed"):
        study.study_config(**{k: v for k, v in SMOKE.items() if k != "seed"})
    with pytest.raises(ValueError, match="dataset"):
        smoke_config(dataset="fiq")
    with pytest.raises(ValueError, match="data_root"):
        smoke_config(dataset="fashioniq")


def test_train_config_carries_the_study_settings():
    cfg = smoke_config(epochs=9, n_def=3, batch_size=8, lr=2e-4, seed=5)
    tc = cfg.train_config(mining="top_k-k7")
    assert (tc.epochs, tc.n_def, tc.batch_size, tc.lr, tc.seed, tc.mining.strategy, tc.mining.k) == \
        (9, 3, 8, 2e-4, 5, "top_k", 7)
    assert cfg.train_config(mining="top_k-k7") == cfg.train_config(mining=MiningSpec("top_k", k=7))
    assert tc.period == 3


def test_table_renders_markdown_and_html():
    table = study.Table([{"model": "qure", "R@10": 13.8333, "loss": 0.00931, "mean |H|": None},
                         {"model": "x", "note": "n/a"}])
    md = str(table)
    assert md.splitlines()[0] == "| model | R@10 | loss | mean \\|H\\| | note |"
    assert "| qure | 13.83 | 0.00931 | — |  |" in md
    html = table._repr_html_()
    assert "<table" in html and ">13.83<" in html and ">0.00931<" in html and ">—<" in html
    assert list(table.frame.columns) == ["model", "R@10", "loss", "mean |H|", "note"]


def test_a_run_with_other_settings_is_set_aside_not_resumed(tmp_path):
    run = tmp_path / "qure"
    run.mkdir()
    old = smoke_config(epochs=3).train_config()
    (run / "config.json").write_text(json.dumps({"train_config": config_json(old)}))
    identity.set_aside_if_changed(run, smoke_config(epochs=3).train_config(device="cpu"), {})  # same run
    assert run.is_dir()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        identity.set_aside_if_changed(run, smoke_config(epochs=4).train_config(), {})
    assert not run.exists() and "epochs" in str(caught[0].message)
    (moved,) = (tmp_path / "stale").iterdir()
    assert (moved / "config.json").is_file()
