"""The package's shape: imports go downward (no cycles), no module reaches into another's private
names, and qurelib imports sit at the top of their file. The repository's shape: nothing in it
refers to a file outside it or to an issue number users cannot look up."""

import ast
import re
from pathlib import Path

import qurelib

ROOT = Path(qurelib.__file__).parent


def modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), str(path))
    return out


MODULES = modules()


def resolve(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = importer if importer in MODULES and (ROOT.parent / importer.replace(".", "/") / "__init__.py").exists() \
        else importer.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def imports(name: str, tree: ast.Module):
    """(target module, imported names, node) of every qurelib import in `tree`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("qurelib"):
                    yield alias.name, [], node
        elif isinstance(node, ast.ImportFrom):
            base = resolve(name, node)
            if not base.startswith("qurelib"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield (sub, [], node) if sub in MODULES else (base, [alias.name], node)


def graph() -> dict[str, set[str]]:
    return {name: {target for target, _, _ in imports(name, tree) if target != name}
            for name, tree in MODULES.items()}


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    return cycles


def test_no_import_cycles():
    cycles = find_cycles(graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_private_names_across_modules():
    leaks = [f"{name} imports {target}.{n}" for name, tree in MODULES.items()
             for target, names, _ in imports(name, tree) for n in names
             if n.startswith("_") and target != name]
    assert not leaks, leaks


# Local on purpose: `python -m qurelib.data.synthetic` would import the module twice otherwise.
LOCAL_OK = {("qurelib.data", "qurelib.data.synthetic")}


def test_qurelib_imports_at_the_top_of_the_file():
    local = [f"{name}:{node.lineno}" for name, tree in MODULES.items() for target, _, node in imports(name, tree)
             if node not in tree.body and (name, target) not in LOCAL_OK]
    assert not local, f"function-local qurelib imports (hide the dependency graph): {local}"


def test_the_checks_can_fail():
    """The checkers themselves: a loop through `from pkg import module` is found, a private name is seen."""
    fake = {"qurelib.a": ast.parse("from qurelib import b"), "qurelib.b": ast.parse("from qurelib.a import _x")}
    MODULES.update(fake)
    try:
        edges = graph()
        assert find_cycles({k: edges[k] for k in fake}) == [["qurelib.a", "qurelib.b", "qurelib.a"]]
        assert ("qurelib.a", ["_x"]) in [(t, n) for t, n, _ in imports("qurelib.b", fake["qurelib.b"])]
    finally:
        for key in fake:
            MODULES.pop(key)


# --- the repository stands alone: no pointer to files outside it, no private issue numbers ---------
REPO = ROOT.parent
# What a clone must be self-contained in: every text file of these folders, and these files.
SELF_CONTAINED_DIRS = ("qurelib", "params", "notebooks", "docs", "tools", "tests")
SELF_CONTAINED_FILES = ("README.md", "Makefile", "data/README.md", ".ci/run", "pyproject.toml", "environment.yml")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".ipynb", ".toml", ".cfg", ".txt", ".json"}
SKIP_DIRS = {"__pycache__", "fixtures", ".ipynb_checkpoints"}  # fixtures: test data, not prose
# Each pattern names one kind of reference a user who clones the repository cannot follow. They are
# written so that this file does not match itself (`\.` and character classes break the literals).
OUTSIDE_REFERENCES = {
    "a path above the repository": r"\.\.[/\\]shared\b|\bparent\s*/\s*[\"']shared[\"']",
    "the development machine's paths": r"(?<![\w.~-])/wor[k]/",
    "the project's shared folder": r"(?<![\w-])shared/(?:paper|data|hooks)/",
    "a design or notes file outside the repository":
        r"\b(?:DESIGN|STYLE)\.md\b|\bfacts\.md\b|\bseed-summary\.md\b|\blavis-weights\.md\b|\bSTYLE rules? \d",
    # the word issue (issues, Issue) followed by a number, with or without "#", also when the number
    # wraps onto the next (comment) line; a public tracker's issue is fine with its URL on the same
    # line (github.com/<owner>/<repo>/issues/<number>).
    "an issue number of a tracker users cannot see": r"(?<![\w/])[Ii]ssues?(?:[ \t]+|[ \t]*\n[ \t#*>-]*)#?\d+\b",
}


def self_contained_files(repo: Path = REPO) -> list[Path]:
    files = [repo / name for name in SELF_CONTAINED_FILES if (repo / name).is_file()]
    for folder in SELF_CONTAINED_DIRS:
        files += [p for p in sorted((repo / folder).rglob("*"))
                  if p.is_file() and p.suffix in TEXT_SUFFIXES
                  and not SKIP_DIRS & set(p.relative_to(repo).parts)]
    return files


def outside_references(files, repo: Path = REPO) -> list[str]:
    """"path:line: kind: 'text'" for every match of OUTSIDE_REFERENCES in `files`."""
    found = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for kind, pattern in OUTSIDE_REFERENCES.items():
            for match in re.finditer(pattern, text):
                start = text.rfind("\n", 0, match.start()) + 1
                line = text[start:text.find("\n", match.end()) % (len(text) + 1)]
                if "issue" in kind and "github.com/" in line:
                    continue
                lineno = text.count("\n", 0, match.start()) + 1
                found.append(f"{path.relative_to(repo)}:{lineno}: {kind}: {match.group(0)!r}")
    return found


def test_the_repository_refers_to_nothing_outside_it():
    """Code, parameters, notebooks, docs, tools and tests cite docs/ (METHOD, METRICS, DATASETS,
    ENVIRONMENT, LAVIS), never a file beside the repository or an issue number users cannot look up."""
    files = self_contained_files()
    assert any(p.name == "qure.py" for p in files) and any(p.suffix == ".ipynb" for p in files)
    found = outside_references(files)
    assert not found, "references a clone cannot follow (cite docs/ instead):\n" + "\n".join(found)


def test_the_outside_reference_check_can_fail(tmp_path):
    """Each kind of reference is caught in a planted file; legitimate look-alikes are not."""
    # built from pieces, so that this file never holds the references it forbids
    up, shared, issue, style = "..", "sha" + "red", "iss" + "ue", "STY" + "LE"
    planted = {
        "a.py": f'"""See {up}/{shared}/paper/facts{"."}md section 2."""\nRELEASED = ROOT.parent / "{shared}" / "x"\n',
        "b.md": f"Beyond the paper ({issue} 11), and {issue}s 14 and 15.\n# wrapped: the {issue}\n# 10 check\n",
        "c.yaml": f"# (DESIGN{'.'}md) and /wo{'r'}k/main/x and {style} rule 3\n",
    }
    for name, text in planted.items():
        (tmp_path / name).write_text(text)
    clean = tmp_path / "clean.md"
    clean.write_text(f"Tissue 3, {issue}s/12 and a public one: https://github.com/o/r/{issue}s/5 ({issue} #5).\n"
                     f"docs/METHOD.md, section 2; network/work/x; shared weights; data/generated/.\n")
    found = outside_references(sorted(tmp_path.iterdir()), tmp_path)
    by_file = {name: [f for f in found if f.startswith(name + ":")] for name in [*planted, "clean.md"]}
    assert len(by_file["a.py"]) == 4  # the path above the repository, the notes file, the folder, .parent
    assert [f.split(":")[1] for f in by_file["b.md"]] == ["1", "1", "2"]
    assert len(by_file["c.yaml"]) == 3
    assert by_file["clean.md"] == [], by_file["clean.md"]
