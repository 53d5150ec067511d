"""The notebook stages' plumbing: parameter checking, tables, stale runs set aside."""

import json
import warnings

import pytest

from qurelib import study


def test_study_config_checks_types_and_datasets():
    cfg = study.study_config(profile="unit", epochs=4, lr=1, other_stage_parameter="ignored")
    assert (cfg.profile, cfg.epochs, cfg.lr) == ("unit", 4, 1)
    with pytest.raises(TypeError, match="epochs"):
        study.study_config(epochs="4")
    with pytest.raises(ValueError, match="dataset"):
        study.study_config(dataset="fiq")
    with pytest.raises(ValueError, match="data_root"):
        study.study_config(dataset="fashioniq")


def test_train_config_carries_the_study_settings():
    cfg = study.study_config(epochs=9, n_def=3, batch_size=8, lr=2e-4, seed=5)
    tc = cfg.train_config(strategy="top_k", k=7)
    assert (tc.epochs, tc.n_def, tc.batch_size, tc.lr, tc.seed, tc.strategy, tc.k) == (9, 3, 8, 2e-4, 5, "top_k", 7)
    assert tc.period == 3


def test_table_renders_markdown():
    table = study.Table([{"model": "qure", "R@10": 13.8333, "loss": 0.00931}, {"model": "x", "note": "n/a"}])
    md = table._repr_markdown_()
    assert md.splitlines()[0] == "| model | R@10 | loss | note |"
    assert "| qure | 13.83 | 0.00931 |  |" in md


def test_a_run_with_other_settings_is_set_aside_not_resumed(tmp_path):
    run = tmp_path / "qure"
    run.mkdir()
    old = study.study_config(epochs=3).train_config()
    from qurelib.train import _config_json

    (run / "config.json").write_text(json.dumps({"train_config": _config_json(old)}))
    study._set_aside_if_changed(run, study.study_config(epochs=3).train_config(device="cpu"))  # same run
    assert run.is_dir()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study._set_aside_if_changed(run, study.study_config(epochs=4).train_config())
    assert not run.exists() and "epochs" in str(caught[0].message)
    (moved,) = (tmp_path / "stale").iterdir()
    assert (moved / "config.json").is_file()
