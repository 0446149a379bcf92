"""`tools/`, `pipelines/` and `benchmarks/` use the library through `tfkd.__all__` and the
subpackages' `__all__` only, the library never imports `pipelines/`, no module imports itself
back, and no library module outgrows one concept (docs/architecture.md)."""

import ast
import os
import re

import tfkd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sources(*folders, root=ROOT):
    """(path relative to `root`, text) of every Python file under `folders`."""
    for folder in folders:
        for directory, _, names in os.walk(os.path.join(root, folder)):
            for name in names:
                if name.endswith(".py"):
                    path = os.path.join(directory, name)
                    with open(path, encoding="utf-8") as handle:
                        yield os.path.relpath(path, root), handle.read()


def _public(dotted: str) -> bool:
    """Whether `tfkd.<dotted>` is reached through public names only: each part is listed in the
    `__all__` of the package before it (`tfkd.distill.teachers`, not `tfkd.distill._private` or
    a module the subpackage does not export)."""
    if dotted.split(".")[0] == "keras":  # `from tfkd.keras import keras`: where Keras is chosen
        return True
    package = tfkd
    for part in dotted.split("."):
        if part not in getattr(package, "__all__", ()):
            return False
        package = getattr(package, part)
        if not hasattr(package, "__path__"):  # a module or an object: its names are its own
            return True
    return True


def test_programs_use_only_the_public_modules():
    used = {}
    for path, text in _sources("pipelines", "tools", "benchmarks"):
        names = re.findall(r"\btfkd((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", text)
        names = [n[1:] for n in names]
        for line in re.findall(r"^from tfkd import \(?([^)\n]*(?:\n[^)]*)*?)\)?$", text, re.M):
            names += [n.strip() for n in line.replace("\n", ",").split(",") if n.strip()]
        for package, line in re.findall(
            r"^from tfkd\.([a-z_0-9.]+) import \(?([^)\n]*(?:\n[^)]*)*?)\)?$", text, re.M
        ):
            imported = [n.strip() for n in line.replace("\n", ",").split(",") if n.strip()]
            names += [f"{package}.{n.split(' ')[0]}" for n in imported]
        for name in names:
            parts = name.split(" ")[0].split(".")
            for end in range(1, len(parts) + 1):
                used.setdefault(".".join(parts[:end]), path)
    outside = {name: path for name, path in used.items() if not _public(name)}
    assert not outside, f"not public (tfkd.__all__ and the subpackages' __all__): {outside}"
    # The scan found the uses, down into the subpackages.
    assert {"data", "export", "losses", "Distiller", "distill.teachers", "measure.stats"} <= set(
        used
    )


def test_the_library_never_imports_the_pipeline():
    offenders = [
        path
        for path, text in _sources("tfkd")
        if re.search(r"^\s*(from|import) pipelines\b", text, re.M)
    ]
    assert offenders == []


def _module_cycles(root: str, packages: tuple[str, ...]) -> list[set[str]]:
    """Groups of modules under `root` that import one another at module level (strongly
    connected components of the import graph, two modules or more). A package's `__init__`
    importing its own submodules is not counted: Python runs it first either way."""
    sources = {
        path[:-3].replace(os.sep, ".").removesuffix(".__init__"): (path, text)
        for path, text in _sources(*packages, root=root)
    }

    def known(name: str) -> str | None:
        while name and name not in sources:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, (path, text) in sources.items():
        tree = ast.parse(text)
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        targets = set()
        for node in tree.body:
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                # `from package import module` depends on the module; `from module import
                # name` on the module.
                targets |= {
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in sources else base
                    for alias in node.names
                }
        found = {known(t) for t in targets} - {None, module}
        graph[module] = {t for t in found if t is not None and not module.startswith(t + ".")}
    # Tarjan's strongly connected components.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(component)

    for module in graph:
        if module not in index:
            visit(module)
    return cycles


def test_no_module_imports_itself_back(tmp_path):
    assert _module_cycles(ROOT, ("tfkd", "pipelines")) == []
    # What the check finds: two modules of a package that import each other, one of them late.
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("from pkg import a\n")
    (tmp_path / "pkg" / "a.py").write_text("import math\nfrom pkg.b import B\n")
    (tmp_path / "pkg" / "b.py").write_text("B = 1\nfrom . import a  # noqa\n")
    assert _module_cycles(str(tmp_path), ("pkg",)) == [{"pkg.a", "pkg.b"}]


def test_no_library_module_is_over_450_lines():
    """One concept per module (tfkd/third_party holds generated code: TFLite's metadata
    schema)."""
    lines = {
        path: text.count("\n")
        for path, text in _sources("tfkd")
        if not path.startswith(os.path.join("tfkd", "third_party"))
    }
    assert {path: count for path, count in lines.items() if count > 450} == {}
