"""Provenance written next to artefacts (STYLE rule 5): the git commit and input fingerprints."""

from __future__ import annotations

import hashlib
import json
import subprocess

from qurelib.paths import REPO_ROOT


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


def split_fingerprint(split) -> str:
    """sha256 (first 16 hex) of a CIRSplit's queries and corpus ids: same data, same fingerprint."""
    payload = json.dumps({"queries": [[q.query_id, q.reference_id, q.modification_text, q.target_id]
                                      for q in split.queries], "corpus": list(split.corpus_ids)})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
