"""The package's layers (docs/architecture.md): each imports only the layers below it, and no modules import each
other in a cycle. Read from the source with `ast`, every import statement counted, inside functions too."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "trainer"  # installed as versavit_trainer
# Bottom first. The first holds the vocabulary every layer shares; each module or subpackage of the package belongs
# to exactly one layer (the package's own __init__, the public facade, imports from all of them).
LAYERS = (
    ("run_folder", "config", "parts", "metrics"),
    ("data",),
    ("objectives",),
    ("core",),
    ("methods",),
    ("evaluation",),
    ("export",),
)


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def internal_imports(root: Path = PACKAGE) -> list[tuple[str, str, int]]:
    """(importing module, imported module, line) for every import of the package's own modules under `root`."""
    modules = {module_name(path, root) for path in root.rglob("*.py")}
    found = []
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        package = [part for part in package if part]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("versavit_trainer"):
                target = node.module.removeprefix("versavit_trainer").lstrip(".")
            elif isinstance(node, ast.Import):
                names = [a.name.removeprefix("versavit_trainer").lstrip(".") for a in node.names
                         if a.name.startswith("versavit_trainer.")]
                found += [(name, target, node.lineno) for target in names if target in modules]
                continue
            else:
                continue
            # `from package import module` imports the module; `from module import name` the module
            targets = [
                f"{target}.{a.name}".lstrip(".") for a in node.names if f"{target}.{a.name}".lstrip(".") in modules
            ]
            found += [(name, t, node.lineno) for t in (targets or [target]) if t != name]
    return found


def layer_of(module: str) -> int | None:
    top = module.split(".")[0]
    for index, members in enumerate(LAYERS):
        if top in members:
            return index
    return None


def upward_imports(imports) -> list[str]:
    return [f"{source}:{line} imports {target} (layer {LAYERS[layer_of(target)]} is above {LAYERS[layer_of(source)]})"
            for source, target, line in imports
            if source and layer_of(source) is not None and layer_of(target) is not None
            and layer_of(target) > layer_of(source)]


def import_cycles(imports) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for source, target, _ in imports:
        if source:  # the package's facade imports everything and is imported by nothing inside
            graph.setdefault(source, set()).add(target)
            graph.setdefault(target, set())
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_every_module_belongs_to_a_layer():
    tops = {module_name(path).split(".")[0] for path in PACKAGE.rglob("*.py")} - {""}
    assert {top for top in tops if layer_of(top) is None} == set()


def test_no_layer_imports_a_layer_above_it():
    assert upward_imports(internal_imports()) == []


def test_no_modules_import_each_other_in_a_cycle():
    assert import_cycles(internal_imports()) == []


def test_the_checks_see_an_upward_import_and_a_cycle(tmp_path):
    """The checks themselves, on a copy of the package with one planted import each."""
    import shutil

    copy = tmp_path / "trainer"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    scenes = copy / "data" / "scenes.py"
    scenes.write_text(scenes.read_text() + "\n\ndef planted():\n    from ..core.trainer import TaskSpec\n")
    assert [line.split(" (")[0] for line in upward_imports(internal_imports(copy))] == [
        f"data.scenes:{len(scenes.read_text().splitlines())} imports core.trainer"]
    schedule = copy / "core" / "schedule.py"
    schedule.write_text(schedule.read_text() + "\n\nfrom .trainer import TaskSpec\n")
    assert ["core.schedule", "core.trainer"] in [
        [m for m in cycle if m in ("core.schedule", "core.trainer")] for cycle in import_cycles(internal_imports(copy))]
