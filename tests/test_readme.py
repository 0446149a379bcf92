"""The README's library example runs as written."""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_readme_library_example_runs(tmp_path, monkeypatch, capsys):
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    example = re.search(r"## The library\n\n```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})
    assert (tmp_path / "student.keras").is_file()
    assert (tmp_path / "out" / "student_int8_io_uint8.tflite").is_file()
    accuracy = float(capsys.readouterr().out.strip().splitlines()[-1])
    # The QAD int8 student of a 10-epoch digits run: far above chance (10%).
    assert accuracy > 0.8
