"""`tools/`, `pipelines/` and `benchmarks/` use the library through `tfkd.__all__` and the
subpackages' `__all__` only, and the library never imports `pipelines/`
(docs/architecture.md)."""

import os
import re

import tfkd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sources(*folders):
    for folder in folders:
        for directory, _, names in os.walk(os.path.join(ROOT, folder)):
            for name in names:
                if name.endswith(".py"):
                    path = os.path.join(directory, name)
                    with open(path, encoding="utf-8") as handle:
                        yield os.path.relpath(path, ROOT), handle.read()


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
