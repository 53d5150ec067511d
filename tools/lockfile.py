"""requirements.lock without some packages (stdin -> stdout), hashes kept for the rest:

    python tools/lockfile.py without torch < requirements.lock > lock-without-torch.txt

GPU users keep the CUDA build of torch they installed and take every other package from the lock
(`make venv TORCH_SPEC=`); an entry is its `name==version \\` line plus its `--hash` and comment lines.
"""

from __future__ import annotations

import re
import sys


def without(lines: list[str], names: set[str]) -> list[str]:
    """The lock's lines minus the entries of `names` (normalised as pip does: case, '-' / '_')."""
    norm = {re.sub(r"[-_.]+", "-", n).lower() for n in names}
    out, skipping = [], False
    for line in lines:
        head = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", line)
        if head:
            skipping = re.sub(r"[-_.]+", "-", head.group(1)).lower() in norm
        elif not line.startswith((" ", "\t")):
            skipping = False
        if not skipping:
            out.append(line)
    return out


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "without":
        print(__doc__, file=sys.stderr)
        return 2
    sys.stdout.writelines(without(sys.stdin.readlines(), set(argv[1:])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
