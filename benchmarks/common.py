"""Helpers shared by the benchmark scripts: results files and the RESULTS.md sections."""

import json
import os
import platform
import re

import tensorflow as tf

from tfkd import files

RESULTS_MD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


def machine() -> str:
    """Where a figure was measured, to print next to it."""
    return (f"CPU only ({os.cpu_count()} cores, {platform.machine()}), TensorFlow "
            f"{tf.__version__}, no GPU")


def write_section(name: str, markdown: str) -> None:
    """Replaces (or appends) the section `name` of RESULTS.md, leaving the others intact."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = open(RESULTS_MD, encoding="utf-8").read() if os.path.exists(RESULTS_MD) else (
        "# Benchmark results\n\nWritten by the scripts in `benchmarks/`; each section says how "
        "it was measured.\n")
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else f"{text}\n{block}\n"
    files.write_text(RESULTS_MD, text)


def write_json(path: str, payload: dict) -> None:
    files.write_text(path, json.dumps(payload, indent=2, sort_keys=True))
