import os

import numpy as np
import pytest

import tfkd
from tfkd import export
from tfkd.keras import keras
from tfkd.measure import benchmark

layers = keras.layers


class FakeClock:
    """Returns scripted times: each invoke is timed by two calls."""

    def __init__(self, durations_s, init_s=0.5):
        self.times = [0.0, init_s]
        now = init_s
        for d in durations_s:
            self.times += [now, now + d]
            now += d + 0.001
        self.calls = 0

    def __call__(self):
        value = self.times[self.calls]
        self.calls += 1
        return value


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A conv + depthwise + dense model exported as float32 and int8 with uint8 I/O."""
    inputs = keras.Input((6, 6, 3))
    # Equal, non-zero biases: the converter stores them once, the cost counts each use.
    x = layers.Conv2D(4, 3, padding="same", bias_initializer="ones", name="conv")(inputs)
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", bias_initializer="ones", name="dw")(x)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, layers.Dense(5, bias_initializer="ones", name="fc")(x))
    out = tmp_path_factory.mktemp("tiny")
    prep = tfkd.data.Preprocessing((6, 6), 3, 1 / 255, (0.5,) * 3, (0.5,) * 3)
    images = np.random.default_rng(0).normal(size=(20, 6, 6, 3)).astype(np.float32)
    representative = export.RepresentativeSet(images, np.arange(20) % 5)
    export.export(
        model,
        str(out),
        ["float32", "int8_io_uint8"],
        preprocessing=prep,
        class_names=list("abcde"),
        representative=representative,
        name="tiny",
    )
    return out, model, images


def test_stats_exclude_warmup_and_use_numpy_percentiles(tiny):
    out, _, _ = tiny
    timed = [0.002, 0.004, 0.003, 0.010, 0.001]
    durations = [0.050] + [0.020] * 3 + timed  # first run, 3 warm-up runs, 5 timed runs
    m = benchmark.measure(
        str(out / "tiny_float32.tflite"), warmup=3, runs=5, clock=FakeClock(durations)
    )
    ms = np.array(timed) * 1000
    assert m.latency.runs == 5
    assert m.latency.mean_ms == pytest.approx(ms.mean())
    assert m.latency.p50_ms == pytest.approx(3.0)
    assert m.latency.p90_ms == pytest.approx(np.percentile(ms, 90))
    assert m.latency.max_ms == pytest.approx(10.0) and m.latency.min_ms == pytest.approx(1.0)
    assert m.first_run_ms == pytest.approx(50.0) and m.init_ms == pytest.approx(500.0)


def test_latency_stats_reject_no_runs():
    with pytest.raises(ValueError, match="runs"):
        benchmark.LatencyStats.from_samples([])


def test_model_cost_matches_the_formula(tiny):
    out, model, _ = tiny
    cost = benchmark.model_cost(str(out / "tiny_float32.tflite"))
    conv = 6 * 6 * 4 * (3 * 3 * 3)
    depthwise = 3 * 3 * 4 * (3 * 3)
    dense = 4 * 5
    assert cost.macs == conv + depthwise + dense
    assert cost.params == (3 * 3 * 3 * 4 + 4) + (3 * 3 * 4 + 4) + (4 * 5 + 5)
    assert cost.params == model.count_params()


def test_real_measurement_of_a_tiny_model_is_sane(tiny):
    out, _, images = tiny
    for name in ("tiny_float32", "tiny_int8_io_uint8"):
        path = str(out / f"{name}.tflite")
        m = benchmark.measure(path, threads=1, warmup=5, runs=30, inputs=images)
        assert m.input_source == "data" and m.latency.runs == 30
        assert 0 < m.latency.min_ms <= m.latency.p50_ms <= m.latency.p99_ms <= m.latency.max_ms
        assert m.latency.p50_ms < 50  # a 6x6 model on any CPU
        assert m.size_bytes == os.path.getsize(path) and m.gmacs_per_second > 0
        assert m.to_dict()["latency"]["runs"] == 30
    without = benchmark.measure(str(out / "tiny_float32.tflite"), runs=5, xnnpack=False)
    assert without.xnnpack is False and without.input_source == "random"


def test_inputs_are_quantized_as_the_model_expects(tiny, monkeypatch):
    out, _, images = tiny
    fed = []
    from ai_edge_litert import interpreter as litert

    original = litert.Interpreter.set_tensor
    monkeypatch.setattr(
        litert.Interpreter,
        "set_tensor",
        lambda self, i, v: (fed.append(v.copy()), original(self, i, v))[1],
    )
    benchmark.measure(str(out / "tiny_int8_io_uint8.tflite"), warmup=0, runs=1, inputs=images)
    benchmark.measure(str(out / "tiny_float32.tflite"), warmup=0, runs=1, inputs=images)
    card = export.read_card(str(out))["variants"]["tiny_int8_io_uint8"]["input"]
    expected = np.clip(np.round(images[:1] / card["scale"] + card["zero_point"]), 0, 255)
    assert fed[0].dtype == np.uint8
    np.testing.assert_array_equal(fed[0], expected.astype(np.uint8))
    assert fed[1].dtype == np.float32
    np.testing.assert_array_equal(fed[1], images[:1])


def test_random_inputs_match_the_input_dtype(tiny):
    out, _, _ = tiny
    m = benchmark.measure(str(out / "tiny_int8_io_uint8.tflite"), warmup=0, runs=2)
    assert m.input_source == "random"


@pytest.mark.parametrize("kwargs", [{"threads": 0}, {"runs": 0}, {"warmup": -1}, {"threads": 1.5}])
def test_bad_arguments_are_rejected(tiny, kwargs):
    out, _, _ = tiny
    with pytest.raises(ValueError, match="must be an integer"):
        benchmark.measure(str(out / "tiny_float32.tflite"), **kwargs)


def test_wrong_input_shape_is_rejected(tiny):
    out, _, _ = tiny
    with pytest.raises(ValueError, match=r"shape \(5, 5, 3\).*\(6, 6, 3\)"):
        benchmark.measure(str(out / "tiny_float32.tflite"), inputs=np.zeros((1, 5, 5, 3)))


# Slow: a program of its own. The measurement itself is tested in process above.
@pytest.mark.slow
def test_benchmark_cli_measures_many_files_at_several_thread_counts(tiny, tmp_path):
    import json

    from tests.helpers import programs

    out, _, _ = tiny
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    report = tmp_path / "latency.json"
    result = programs.run(
        "tools/benchmark_tflite.py",
        [
            str(out / "tiny_float32.tflite"),
            str(out / "tiny_int8_io_uint8.tflite"),
            "--threads=1,2",
            "--runs=5",
            "--warmup=1",
            f"--json={report}",
        ],
        cwd=root,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(report.read_text())
    assert [(os.path.basename(r["model"]), r["threads"]) for r in rows] == [
        ("tiny_float32.tflite", 1),
        ("tiny_float32.tflite", 2),
        ("tiny_int8_io_uint8.tflite", 1),
        ("tiny_int8_io_uint8.tflite", 2),
    ]
    assert all(r["latency"]["runs"] == 5 and r["where"] == "host" for r in rows)
    assert result.stdout.count("host") == 4 and "p50 ms" in result.stdout
