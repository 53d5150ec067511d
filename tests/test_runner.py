"""qurelib.study.runner (how make runs a stage) and the notebooks' own parameter check (plain papermill)."""

import pytest

from qurelib.study import runner
from qurelib.study.config import check_injected_parameters
from qurelib.paths import NOTEBOOKS_DIR, PARAMS_DIR

NB = NOTEBOOKS_DIR / "03_preference_finetune.ipynb"


def test_a_value_may_start_with_a_minus():
    rest, pairs = runner.split_overrides(["in.ipynb", "out.ipynb", "-p", "lr", "-1e-4", "--params", "x.yaml",
                                          "-p", "negatives", "3"])
    assert rest == ["in.ipynb", "out.ipynb", "--params", "x.yaml"]
    assert pairs == [("lr", "-1e-4"), ("negatives", "3")]
    with pytest.raises(runner.StageError, match="needs a name and a value"):
        runner.split_overrides(["in.ipynb", "-p", "lr"])
    assert runner.stage_parameters(NB, PARAMS_DIR / "smoke.yaml", pairs)["lr"] == -1e-4


def test_a_parameter_given_twice_with_two_values_is_refused():
    """`make reproduce NB_ARGS="-p profile other"`: make passes -p profile smoke itself; the stage
    trained into runs/other/ while make printed runs/smoke/'s old table."""
    with pytest.raises(runner.StageError, match="'profile' given twice.*PROFILE="):
        runner.stage_parameters(NB, PARAMS_DIR / "smoke.yaml", [("profile", "smoke"), ("profile", "other")])
    same = runner.stage_parameters(NB, PARAMS_DIR / "smoke.yaml", [("negatives", "3"), ("negatives", "3")])
    assert same["negatives"] == 3


def test_a_runs_folder_that_cannot_be_written_is_named(tmp_path, monkeypatch):
    def refuse(self, data):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("pathlib.Path.write_bytes", refuse)
    with pytest.raises(runner.StageError, match=f"cannot write to the runs folder {tmp_path / 'runs'}"):
        runner.run_stage(NB, tmp_path / "runs" / "03.ipynb", PARAMS_DIR / "smoke.yaml")
    assert runner.main([str(NB), str(tmp_path / "runs" / "03.ipynb"), "--params", str(PARAMS_DIR / "smoke.yaml"),
                        "-p", "epochz", "5"]) == 2


def test_the_stage_kernel_uses_ipc_not_tcp_with_sockets_of_its_own():
    """Kernels started at once (make -j2 ablation) once shared socket files and read each other's
    messages ("Invalid Signature")."""
    one, two = runner.LocalKernelManager(), runner.LocalKernelManager()
    assert one.transport == two.transport == "ipc" and one.ip != two.ip


# --- plain papermill: the notebook checks what papermill injected -------------------------------------
def test_an_injected_name_no_stage_declares_is_an_error_naming_it():
    declared = 'epochs = 3  # E\nlr = 1e-4  # AdamW\n'
    history = ["", "from qurelib import study", declared, "# Parameters\nepochz = 5\nlr = 0.001\n"]
    with pytest.raises(TypeError, match="'epochz' \\(did you mean 'epochs'\\?\\)"):
        check_injected_parameters(history)


def test_a_profile_files_other_stage_settings_are_not_typos():
    """`papermill nb.ipynb out.ipynb -f params/smoke.yaml` hands every stage's keys to each notebook."""
    history = ["", "epochs = 3\n", "# Parameters\nepochs = 5\naudit_k = 20\nmining = \"top_k-k20\"\n"]
    check_injected_parameters(history)
    check_injected_parameters(["", "epochs = 3\n"])  # run by hand: nothing injected, nothing to check
