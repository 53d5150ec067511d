"""Static rules for the notebooks: thin cells, tagged flat parameters,
params/*.yaml keys that exist in the notebook they target with the same type, no stray outputs."""

import ast
import json
from pathlib import Path

import pytest
import yaml

from qurelib.paths import NOTEBOOKS_DIR, PARAMS_DIR

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
PARAM_FILES = sorted(PARAMS_DIR.glob("*.yaml"))


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def parameters(path: Path) -> dict:
    """The literals of the notebook's `parameters` cell, {name: value}."""
    cells = [c for c in code_cells(load(path)) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{path.name}: expected exactly one cell tagged 'parameters', found {len(cells)}"
    out = {}
    for node in ast.parse(source(cells[0])).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, \
            f"{path.name}: the parameters cell may hold only `name = literal` lines"
        out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 6, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_cells_define_nothing(path):
    for cell in code_cells(load(path)):
        tree = ast.parse(source(cell))
        defs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))]
        assert not defs, f"{path.name}: a cell defines {type(defs[0]).__name__}; move it into qurelib"
        loops = [n for n in ast.walk(tree) if isinstance(n, (ast.For, ast.While))]
        assert not loops, f"{path.name}: a cell holds a loop; training and helpers belong in qurelib"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_is_flat_and_commented(path):
    params = parameters(path)
    assert "profile" in params
    cell = next(c for c in code_cells(load(path)) if "parameters" in c.get("metadata", {}).get("tags", []))
    for line in source(cell).splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert "#" in line, f"{path.name}: parameter line without a comment: {line!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_outputs_but_the_kept_summary(path):
    kept = [c for c in code_cells(load(path)) if c.get("outputs")]
    assert len(kept) <= 1, f"{path.name}: {len(kept)} cells carry outputs; strip all but the summary cell"
    for cell in kept:
        assert "NBVAL_CHECK_OUTPUT" in source(cell), f"{path.name}: an output is kept on an unchecked cell"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_papermill_reads_every_parameter(path):
    """papermill's own parser (used by --help-notebook and for typing -p values) sees each line."""
    from papermill.translators import PythonTranslator

    cell = next(c for c in code_cells(load(path)) if "parameters" in c.get("metadata", {}).get("tags", []))
    seen = {p.name for p in PythonTranslator.inspect({"source": source(cell)})}
    assert seen == set(parameters(path)), f"{path.name}: papermill cannot parse {set(parameters(path)) - seen}"


@pytest.mark.parametrize("params_file", PARAM_FILES, ids=lambda p: p.name)
def test_params_keys_exist_with_the_same_type(params_file):
    values = yaml.safe_load(params_file.read_text()) or {}
    declared: dict[str, list[tuple[str, type]]] = {}
    for nb in NOTEBOOKS:
        for name, value in parameters(nb).items():
            declared.setdefault(name, []).append((nb.name, type(value)))
    for key, value in values.items():
        assert key in declared, f"{params_file.name}: key {key!r} is in no notebook's parameters cell (misspelled?)"
        for notebook, expected in declared[key]:
            ok = isinstance(value, expected) or (expected is float and isinstance(value, int) and not isinstance(value, bool))
            assert ok, f"{params_file.name}: {key!r} is {type(value).__name__}, {notebook} declares {expected.__name__}"


def test_shared_parameters_agree_across_notebooks():
    defaults: dict[str, tuple[str, object]] = {}
    for nb in NOTEBOOKS:
        for name, value in parameters(nb).items():
            first = defaults.setdefault(name, (nb.name, value))
            assert first[1] == value, f"{name!r} defaults to {first[1]!r} in {first[0]} but {value!r} in {nb.name}"


def test_every_profile_has_a_params_file():
    names = {p.stem for p in PARAM_FILES}
    assert {"smoke", "default", "paper-fiq", "paper-cirr"} <= names, names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_valid_nbformat(path):
    import warnings

    import nbformat

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. a cell without an id
        nbformat.validate(nbformat.read(path, as_version=4))


def test_notebook_defaults_are_the_smoke_profile():
    """params/smoke.yaml is where the study's defaults live: every parameter of every notebook is
    listed there with the same value, so no notebook restates a default differently."""
    smoke = yaml.safe_load((PARAMS_DIR / "smoke.yaml").read_text())
    for nb in NOTEBOOKS:
        for name, value in parameters(nb).items():
            assert name in smoke, f"{nb.name}: parameter {name!r} is missing from params/smoke.yaml"
            assert smoke[name] == value, f"{nb.name}: {name} = {value!r} but params/smoke.yaml has {smoke[name]!r}"


def test_every_notebook_declares_the_shared_study_parameters():
    from qurelib.study.config import FIELDS

    for nb in NOTEBOOKS:
        missing = set(FIELDS) - set(parameters(nb))
        assert not missing, f"{nb.name}: the shared study parameters {sorted(missing)} are not declared"


def test_library_defaults_match_the_notebook_defaults():
    """Where a TrainConfig field is also a notebook parameter, the smoke profile states the library's
    default (or the study deliberately differs: listed here with the reason)."""
    from dataclasses import fields

    from qurelib.mining_spec import MiningSpec
    from qurelib.train import TrainConfig

    deliberate = {"epochs", "n_def", "batch_size", "lr", "seed", "eval_every"}  # the study's own schedule
    smoke = yaml.safe_load((PARAMS_DIR / "smoke.yaml").read_text())
    for f in fields(TrainConfig):
        if f.name in smoke and f.name not in deliberate:
            value = smoke[f.name]
            if isinstance(f.default, MiningSpec):  # a notebook holds a spec as its text
                value = MiningSpec.parse(value)
            if f.name == "candidates":  # a notebook's text parameter: empty for None (no index)
                value = value or None
            assert value == f.default, f"{f.name}: smoke.yaml {smoke[f.name]!r} != TrainConfig {f.default!r}"
