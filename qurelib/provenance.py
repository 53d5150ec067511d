"""Provenance written next to artefacts: what made a number, so a reader can tell two runs apart.

    git_commit()        HEAD, with "+dirty" when tracked files differ from it
    environment()       the packages that shape the numbers, torch's threads and CPU kernels, the CPU
    code_digest()       sha256 of the library code that trains (a change retrains, see study.identity)
    data_digest(root)   sha256 of a dataset folder's content
    split_fingerprint   sha256 of a CIRSplit's queries and corpus ids

Why the CPU matters: torch, MKL and oneDNN pick their kernels by the instruction set of the
machine (AVX-512 vs AVX2) and split reductions by the number of threads, and each choice rounds
floats differently. Training amplifies a rounding difference (the drop rule is discontinuous), so
the same seed gives different numbers on two CPUs unless both are pinned. The Makefile pins them
(`NUMERICS` there: AVX2 kernels, 2 threads); `environment()` records what was in force.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from qurelib.paths import REPO_ROOT

# the distributions whose versions can move a number of the study (recorded in every result)
PACKAGES = ("torch", "numpy", "transformers", "tokenizers", "safetensors", "pillow", "pandas", "faiss-cpu",
            "matplotlib", "papermill")
# the environment variables that pin the CPU numerics (set by the Makefile; see the module docstring)
NUMERICS_ENV = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "NPY_DISABLE_CPU_FEATURES",
                "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# modules that only present results: editing them never changes a trained model
PRESENTATION = ("study/plots.py", "study/display.py", "study/html_report.py", "study/explore.py", "study/lab.py",
                "study/tables.py", "study/report.py", "study/seeds.py", "study/runner.py", "nbtools.py",
                "progress.py", "provenance.py", "bench/")


def git_commit() -> str | None:
    """HEAD of the repository qurelib runs from, with "+dirty" if tracked files changed; None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def package_versions() -> dict[str, str | None]:
    """{distribution: installed version (None if absent)} of `PACKAGES`."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """What shapes the numbers besides code, data and settings: package versions, Python, torch's
    thread count and CPU kernel level, the CPU, and the pinning variables in force."""
    import torch  # here, not at the top: provenance is imported by light tools too

    return {"packages": package_versions(), "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cuda": torch.version.cuda if torch.cuda.is_available() else None,
            "cpu": cpu_model(), "machine": platform.machine(),
            "numerics_env": {k: os.environ.get(k) for k in NUMERICS_ENV}}


def _presentation(rel: str) -> bool:
    return any(rel == p or (p.endswith("/") and rel.startswith(p)) for p in PRESENTATION)


def code_digest() -> str:
    """sha256 (first 16 hex) of every qurelib source file that can change a trained model (all of
    them but the presentation modules, `PRESENTATION`): the code part of a run's identity."""
    package = REPO_ROOT / "qurelib"
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        if not _presentation(rel):
            h.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def data_digest(root: str | os.PathLike, *, images: str = "content") -> str:
    """sha256 (first 16 hex) of a dataset folder: every file's relative path and content.

    images="content" hashes image files too (the generated Fashion-Shapes: tens of MB, a second);
    images="size" hashes only their names and sizes (real datasets: tens of GB), so an image
    rewritten in place with the same size is not noticed there. Hidden files are skipped.
    """
    root = Path(root)
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        is_image = path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")
        what = str(path.stat().st_size) if is_image and images == "size" else file_sha256(path)
        h.update(f"{rel}\0{what}\n".encode())
    return h.hexdigest()[:16]


def split_fingerprint(split) -> str:
    """sha256 (first 16 hex) of a CIRSplit's queries and corpus ids: same data, same fingerprint."""
    payload = json.dumps({"queries": [[q.query_id, q.reference_id, q.modification_text, q.target_id]
                                      for q in split.queries], "corpus": list(split.corpus_ids)})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
