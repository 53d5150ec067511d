"""Run one notebook stage with papermill, safely (`make reproduce` calls this for every stage):

    python -m qurelib.study.runner notebooks/03_preference_finetune.ipynb runs/smoke/03_....ipynb \
        --params params/smoke.yaml [-p strategy top_k -p k 20 ...]

- The notebook gets only the parameters it declares: the profile's file holds every stage's
  settings, and each stage takes its own from it (so papermill never warns about unknown ones).
- A `-p` name the notebook does not declare is an error naming it, the closest known name and the
  notebook's parameters; nothing runs. With `--chain DIR` (the Makefile's way: one NB_ARGS for
  every stage) a name another notebook of DIR declares is passed only to the stages that declare
  it, and a name no notebook declares is the error.
- The executed notebook appears at OUTPUT only when every cell ran: papermill writes to a
  temporary sibling as it goes, renamed on success. A killed or failed stage leaves no OUTPUT (the
  partial notebook stays as `OUTPUT.partial.ipynb` to read), so the next `make` reruns the stage.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import time
import uuid
from pathlib import Path

import papermill
import yaml
from jupyter_client.manager import AsyncKernelManager
from papermill.cli import _resolve_type as papermill_value  # papermill's own -p typing, used as-is
from jupyter_core.paths import jupyter_runtime_dir
from traitlets import CaselessStrEnum, default


class LocalKernelManager(AsyncKernelManager):
    """A stage's kernel on this machine talks over IPC sockets (files in Jupyter's runtime folder), not
    unencrypted TCP ports: nothing to eavesdrop on, and the kernel starts without ipykernel's warning,
    so a warning that does appear means something. Each kernel's sockets get a name of their own:
    kernels started at once (`make -j2 ablation`) would otherwise race for the same socket files."""

    transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

    @default("ip")
    def _unique_ipc_path(self) -> str:
        folder = Path(jupyter_runtime_dir())
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder / f"qurelib-{uuid.uuid4().hex[:16]}-ipc")


class StageError(ValueError):
    """A stage cannot start: the message names the notebook and the offending parameter."""


def declared_parameters(notebook: Path) -> list[str]:
    """The names of the notebook's `parameters` cell, as papermill reads them."""
    return list(papermill.inspect_notebook(str(notebook)))


def stage_parameters(notebook: Path, params_file: Path | None, overrides: list[tuple[str, str]],
                     chain: Path | None = None) -> dict:
    """{name: value} for `notebook`: its share of `params_file`, then the `-p` overrides (checked
    against the notebook, or against every notebook of `chain`)."""
    declared = declared_parameters(notebook)
    known = declared if chain is None else sorted({n for nb in sorted(chain.glob("*.ipynb"))
                                                   for n in declared_parameters(nb)})
    values, given = {}, {}
    for name, raw in overrides:  # one name, one value: `-p profile other` in NB_ARGS beside make's own
        if name in given and given[name] != raw:
            raise StageError(f"parameter {name!r} given twice, as {given[name]!r} and {raw!r}"
                             + (" (use make's PROFILE=..., which also decides where make looks for the run)"
                                if name == "profile" else ""))
        given[name] = raw
    if params_file is not None:
        try:
            profile = yaml.safe_load(params_file.read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise StageError(f"{params_file}: cannot read the profile's parameters: {error}") from None
        if not isinstance(profile, dict):
            raise StageError(f"{params_file}: expected 'name: value' lines, got {type(profile).__name__}")
        values.update({k: v for k, v in profile.items() if k in declared})
    for name, raw in overrides:
        if name not in known:
            close = difflib.get_close_matches(name, known, 1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            where = notebook.name if chain is None else f"no notebook of {chain}"
            raise StageError(f"{where}: unknown parameter {name!r}{hint}; known: {', '.join(known)}")
        if name in declared:
            values[name] = papermill_value(raw)
    return values


def run_stage(notebook: Path, output: Path, params_file: Path | None = None,
              overrides: list[tuple[str, str]] = (), chain: Path | None = None, progress: bool = True) -> Path:
    """Execute `notebook` into `output` (atomically, see the module docstring); returns `output`."""
    parameters = stage_parameters(notebook, params_file, list(overrides), chain)
    try:  # a read-only or full runs folder is named here, not by a traceback deep inside a stage
        output.parent.mkdir(parents=True, exist_ok=True)
        probe = output.parent / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise StageError(f"cannot write to the runs folder {output.parent} ({error.strerror or error}); "
                         f"choose a writable one (make ... RUNS=/path, or QURELIB_RUNS_DIR=/path)") from None
    partial = output.with_name(output.stem + ".partial.ipynb")
    output.unlink(missing_ok=True)  # an old result must not survive a failed rerun
    started = time.perf_counter()
    papermill.execute_notebook(str(notebook), str(partial), parameters=parameters, progress_bar=progress,
                               kernel_manager_class=LocalKernelManager)
    os.replace(partial, output)
    print(f"{notebook.stem}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return output


def split_overrides(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(the other arguments, [(name, value)] of every `-p NAME VALUE`), taken before argparse sees
    them: a value such as -1e-4 is a value, not an option."""
    rest, pairs, i = [], [], 0
    while i < len(argv):
        if argv[i] in ("-p", "--parameters"):
            if i + 2 >= len(argv):
                raise StageError(f"{argv[i]} needs a name and a value, got {argv[i + 1:]}")
            pairs.append((argv[i + 1], argv[i + 2]))
            i += 3
        else:
            rest.append(argv[i])
            i += 1
    return rest, pairs


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        argv, pairs = split_overrides(argv)
    except StageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebook", type=Path)
    ap.add_argument("output", type=Path)
    ap.add_argument("--params", type=Path, default=None, help="the profile's params/<profile>.yaml")
    ap.add_argument("--chain", type=Path, default=None,
                    help="the notebooks folder: -p names any of its notebooks declares are allowed")
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="one more parameter (papermill's -p); VALUE may start with '-' (-p lr -1e-4)")
    args = ap.parse_args(argv)
    try:
        run_stage(args.notebook, args.output, args.params, pairs, args.chain)
    except StageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
