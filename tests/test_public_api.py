"""`tools/`, `pipelines/` and `benchmarks/` use the library through `tfkd.__all__` only, and the
library never imports `pipelines/` (docs/architecture.md)."""

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


def test_programs_use_only_the_public_modules():
    used = {}
    for path, text in _sources("pipelines", "tools", "benchmarks"):
        names = re.findall(r"\btfkd\.([A-Za-z_][A-Za-z0-9_]*)", text)
        for line in re.findall(r"^from tfkd import \(?([^)\n]*(?:\n[^)]*)*?)\)?$", text, re.M):
            names += [n.strip() for n in line.replace("\n", ",").split(",") if n.strip()]
        names += re.findall(r"^from tfkd\.([a-z_0-9]+)", text, re.M)
        for name in names:
            used.setdefault(name.split(" ")[0], path)
    outside = {name: path for name, path in used.items() if name not in tfkd.__all__}
    assert not outside, f"not in tfkd.__all__: {outside}"
    assert {"data", "export", "losses", "Distiller"} <= set(used)  # the scan found the uses


def test_the_library_never_imports_the_pipeline():
    offenders = [
        path
        for path, text in _sources("tfkd")
        if re.search(r"^\s*(from|import) pipelines\b", text, re.M)
    ]
    assert offenders == []
