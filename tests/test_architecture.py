"""The package's shape: imports go downward (no cycles), no module reaches into another's private
names, and qurelib imports sit at the top of their file."""

import ast
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
