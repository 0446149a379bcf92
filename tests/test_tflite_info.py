import json
import os

import pytest

import tfkd
from tests.helpers import programs
from tfkd import export
from tfkd.export import tflite_info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    digits = tfkd.data.load("digits")
    model = tfkd.models.build("cnn_small", (8, 8, 1), 10)
    out = tmp_path_factory.mktemp("tflite")
    export.export(
        model,
        str(out),
        ["float32", "dynamic", "int8_io_int8"],
        preprocessing=digits.preprocessing,
        class_names=digits.class_names,
        representative=export.representative_set(digits, 20),
    )
    return out


def test_integer_model_is_integer_only_with_quantized_io(exported):
    info = tflite_info.describe(str(exported / "student_int8_io_int8.tflite"))
    assert info.integer_only and info.float_ops == []
    assert info.inputs[0].dtype == "int8" and info.inputs[0].scale > 0
    assert [op.name for op in info.ops][:3] == ["CONV_2D"] * 3
    assert info.to_dict()["integer_only"] is True


def test_float_model_lists_every_op_as_float(exported):
    info = tflite_info.describe(str(exported / "student_float32.tflite"))
    assert not info.integer_only
    assert [op.name for op in info.float_ops] == [op.name for op in info.ops]
    assert "<- float" in info.table()


def _inspect(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return programs.run("tools/tflite_inspect.py", args, cwd=ROOT, env=env)


# Slow: two program runs. What the tool prints comes from tfkd.export.tflite_info, tested above.
@pytest.mark.slow
def test_cli_prints_tables_writes_json_and_checks_integer_only(exported, tmp_path):
    int8 = str(exported / "student_int8_io_int8.tflite")
    dynamic = str(exported / "student_dynamic.tflite")
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(export.convert(tfkd.models.build("cnn_tiny", (8, 8, 1), 10), "float32"))
    # Two processes (each imports TensorFlow): a float model fails --require_integer, an
    # integer-only one passes.
    result = _inspect(
        "--require_integer", f"--json={tmp_path / 'out.json'}", int8, dynamic, str(bare)
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "integer-only" in result.stdout and "compute in float" in result.stdout
    described = json.loads((tmp_path / "out.json").read_text())
    assert described[int8]["integer_only"] and not described[dynamic]["integer_only"]
    # The metadata inside each file, and a file without it reported as such.
    assert described[int8]["metadata"]["associated_files"]["labels.txt"].split() == [
        str(d) for d in range(10)
    ]
    assert "metadata: student v2" in result.stdout and "file labels.txt: 10 lines" in result.stdout
    assert described[str(bare)]["metadata"] is None and "metadata: none" in result.stdout
    assert _inspect("--require_integer", int8).returncode == 0
