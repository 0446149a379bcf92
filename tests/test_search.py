"""The search program on Ray Tune + Optuna: a killed search resumes, failed trials are recorded,
a 2-node cluster on loopback runs trials on both nodes, and bad input stops it before any trial.

The tests of this file run one after another (pytest-xdist's loadfile), so only one Ray cluster
exists at a time."""

import glob
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.helpers import programs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, "pipelines", "configs", "digits.flags")
# One epoch each, no QAD, one export mode: a trial is its process start and a few seconds.
TINY = [
    "--teacher_epochs=1",
    "--student_epochs=1",
    "--qat_epochs=0",
    "--modes=float32",
    "--benchmark_runs=3",
    "--trial_memory_gb=0.5",
]


def _flags(out_dir, space_path, *extra):
    """The flags of `python -m pipelines.search` (run forked: tests/helpers/programs.py)."""
    return [
        f"--flagfile={DIGITS}",
        f"--space={space_path}",
        f"--out_dir={out_dir}",
        *TINY,
        *extra,
    ]


def _env(**extra):
    return dict(os.environ, PYTHONPATH=ROOT, RAY_USAGE_STATS_ENABLED="0", **extra)


def _space(tmp_path, text):
    path = tmp_path / "test.space"
    path.write_text(text)
    return str(path)


def _finished_trials(out_dir):
    return sorted(
        os.path.basename(os.path.dirname(p))
        for p in glob.glob(os.path.join(out_dir, "trials", "*", "report.md"))
    )


@pytest.mark.slow
def test_killed_search_resumes_without_rerunning_finished_trials(tmp_path):
    """SIGKILL mid-search, rerun the same command: the finished trials are kept (their logs
    untouched), the search completes, and the failing trials are recorded with their error."""
    out = str(tmp_path / "search")
    # A learning rate of 1e30 makes the loss non-finite: those trials fail, the others go on.
    # And a budget no candidate meets: the search warns first, then recommends the fastest.
    flags = _flags(
        out,
        _space(tmp_path, "learning_rate: 0.001 | 1e30\ntemperature: 1.0 .. 4.0\n"),
        "--trials=3",
        "--latency_budget_ms=0.000001",
    )
    # In a session of its own, so that the kill reaches the Ray processes it starts.
    first = programs.start(
        "pipelines.search",
        flags,
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        before=os.setsid,
    )
    deadline = time.time() + 300
    while not _finished_trials(out) and time.time() < deadline and first.poll() is None:
        time.sleep(1)
    finished = _finished_trials(out)
    assert finished, "no trial finished before the deadline"
    time.sleep(3)  # Ray Tune saves its experiment state every few seconds
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    logs = {
        name: os.path.getsize(os.path.join(out, "trials", f"{name}.log"))
        for name in _finished_trials(out)
    }

    second = programs.run("pipelines.search", flags, cwd=ROOT, env=_env(), timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "no candidate can meet --latency_budget_ms=1e-06" in second.stderr
    for name, size in logs.items():
        assert os.path.getsize(os.path.join(out, "trials", f"{name}.log")) == size, name
    report = json.loads(open(os.path.join(out, "report.json")).read())
    assert report["finished"] + len(report["failed"]) == 3
    assert len(glob.glob(os.path.join(out, "trials", "*.flags"))) == 3
    assert all(p["params"]["learning_rate"] == "0.001" for p in report["points"])
    assert all(
        f["params"]["learning_rate"] == "1e30"
        and f["error"].startswith("Stage student: the training loss became nan")
        for f in report["failed"]
    )
    assert set(logs) <= {p["name"] for p in report["points"]}
    # The recommendation is on the front and was exported with its card.
    recommended = report["recommended"]
    assert recommended["name"] in {p["name"] for p in report["front"]}
    assert report["recommendation"].startswith("No model met the budget")
    assert recommended["latency_ms"] == min(p["latency_ms"] for p in report["front"])
    assert os.path.exists(os.path.join(out, "recommended", os.path.basename(recommended["file"])))
    assert os.path.exists(os.path.join(out, "recommended", "model_card.json"))
    assert "## Pareto front" in open(os.path.join(out, "report.md")).read()
    _assert_only_the_base_exports_the_teacher(out)


def _assert_only_the_base_exports_the_teacher(out):
    """Trials share the base run's teacher: none converts, verifies or times it again."""
    assert os.path.exists(os.path.join(out, "base", "tflite", "teacher_float32.tflite"))
    assert glob.glob(os.path.join(out, "trials", "*", "tflite", "student_*.tflite"))
    assert not glob.glob(os.path.join(out, "trials", "*", "tflite", "teacher_*"))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_node_cluster_on_loopback_runs_a_detection_search_on_both_nodes(tmp_path):
    """A detection base run searched on two Ray nodes: its trials distil from the base's
    detector teacher and are scored by mAP, and the latency floor exports untrained detectors.
    (The classification search is the killed search's, above.)"""
    from tests.conftest import CIFAR_SAMPLE
    from tools.make_detection_set import make_detection_set

    dataset = tmp_path / "set"
    make_detection_set(
        CIFAR_SAMPLE, str(dataset), ["frog", "truck"], {"train": 32, "val": 8}, 64, 2, "coco", 0
    )
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    port = _free_port()
    # Ray clusters authenticate with a token every node and driver shares.
    env = _env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    try:
        subprocess.run(
            [
                ray,
                "start",
                "--head",
                f"--port={port}",
                "--num-cpus=1",
                "--include-dashboard=false",
                "--disable-usage-stats",
            ],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            [ray, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1"],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        out = str(tmp_path / "search")
        # Each node has one CPU and each trial asks for one: two trials run, one per node.
        search = programs.run(
            "pipelines.search",
            [
                f"--dataset=coco:{dataset}",
                "--image_size=64,64",
                "--teacher=detector_large",
                "--student=detector_small",
                "--batch_size=16",
                "--max_drop_points=100",
                f"--space={_space(tmp_path, 'student_loss_weight: 0.3 .. 0.8')}",
                f"--out_dir={out}",
                *TINY,
                "--trials=2",
                "--latency_budget_ms=1000",
                f"--address=127.0.0.1:{port}",
            ],
            cwd=ROOT,
            env=env,
            timeout=600,
        )
        assert search.returncode == 0, search.stderr[-3000:]
        report = json.loads(open(os.path.join(out, "report.json")).read())
        assert report["finished"] == 2 and report["objectives"] == ["map", "latency_ms"]
        assert len({p["node"] for p in report["points"]}) == 2
        # Each trial's mAP is the one its own run's verify stage wrote in its model card.
        for point in report["points"]:
            card = json.loads(
                open(os.path.join(os.path.dirname(point["file"]), "model_card.json")).read()
            )
            assert point["map"] == card["variants"][point["variant"]]["map"]["map"]
            assert card["task"] == "object detection"
        assert report["latency_floor"][1] == "detector_small in float32 at 64,64"
        assert "| model | mAP@[.5:.95], % |" in open(os.path.join(out, "report.md")).read()
        _assert_only_the_base_exports_the_teacher(out)
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)


# The other bad inputs (unknown or teacher-side parameters, bad values, bad objectives) are
# refused by the functions the program calls: tests/test_space.py, test_search_report.py. These
# run the program (one looks for a Ray cluster): in the slow suite, beside the other Ray tests.
@pytest.mark.slow
@pytest.mark.parametrize(
    "space_text, extra, message",
    [
        ("# nothing\n", [], "is empty"),
        ("temperature: 1 .. 4\n", ["--address=127.0.0.1:1"], "no Ray cluster answers there"),
    ],
)
def test_bad_input_stops_before_any_trial_and_writes_nothing(tmp_path, space_text, extra, message):
    out = tmp_path / "search"
    result = programs.run(
        "pipelines.search",
        _flags(str(out), _space(tmp_path, space_text), *extra),
        cwd=ROOT,
        env=_env(),
        timeout=120,
    )
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_an_unreachable_address_is_named_with_the_fix():
    from pipelines.search import tune

    with pytest.raises(ValueError, match="ray start --head") as error:
        tune._check_address(f"127.0.0.1:{_free_port()}")
    assert "no Ray cluster answers there" in str(error.value)


def test_a_trial_ships_its_qad_file_when_there_is_one():
    from pipelines.search import trials as search

    card = {"variants": {"student_int8": {}, "student_qad_int8": {}, "student_float16": {}}}
    assert search.shipped_variant(card, "int8") == "student_qad_int8"
    assert search.shipped_variant(card, "float16") == "student_float16"
    with pytest.raises(ValueError, match="No dynamic student"):
        search.shipped_variant(card, "dynamic")


def _write_run(run_dir, variants, drops, host):
    """A finished run's files as objectives_of reads them: the card's `variants`, the verify
    stage's `drops`, the `host` latencies."""
    from pipelines.run import RunDirectory

    (run_dir / "tflite").mkdir(parents=True)
    (run_dir / "benchmark").mkdir()
    (run_dir / "tflite" / "model_card.json").write_text(json.dumps({"variants": variants}))
    RunDirectory(str(run_dir)).record("verify", [], {"drops": drops})
    (run_dir / "benchmark" / "host.json").write_text(json.dumps(host))


def _fake_run(run_dir, drop=0.0):
    """A classification run's files, with latencies on the host and on a phone."""
    _write_run(
        run_dir,
        {
            "student_qad_int8": {
                "file": "student_qad_int8.tflite",
                "size_bytes": 20480,
                "accuracy": {"split": "test", "value": 0.93},
            },
            "student_int8": {
                "file": "student_int8.tflite",
                "size_bytes": 20000,
                "accuracy": {"split": "test", "value": 0.90},
            },
        },
        {"student_qad_int8": drop, "student_int8": 3.0},
        {"student_qad_int8": {"1": {"latency": {"p50_ms": 0.5, "mean_ms": 0.6}}}},
    )
    device = {
        "device": {},
        "variants": {"student_qad_int8": {"1": {"latency": {"p50_ms": None, "mean_ms": 2.5}}}},
    }
    (run_dir / "benchmark" / "device.json").write_text(json.dumps(device))


def test_objectives_come_from_the_shipped_file_on_the_host_or_the_phone(tmp_path):
    import dataclasses

    from pipelines.config import Config
    from pipelines.search import trials as search

    _fake_run(tmp_path / "run")
    config = Config(threads=(1,))
    host = search.objectives_of(str(tmp_path / "run"), config, "int8")
    assert (host["variant"], host["accuracy"], host["latency_ms"], host["size_kb"]) == (
        "student_qad_int8",
        0.93,
        0.5,
        20.0,
    )
    phone = search.objectives_of(
        str(tmp_path / "run"), dataclasses.replace(config, serial="abc"), "int8"
    )
    assert phone["latency_ms"] == 2.5  # no median from the phone: its mean
    # The parity gate of the shipped file decides; another file's failure does not.
    _fake_run(tmp_path / "bad", drop=2.5)
    with pytest.raises(search.TrialFailed, match="lost 2.50 accuracy points"):
        search.objectives_of(str(tmp_path / "bad"), config, "int8")


def test_a_trial_keeps_the_shared_teacher_at_its_resolution(tmp_path):
    """The student's size is searched; the shared teacher still sees the size it was trained
    at (read from the base run's card), and the logits are kept per student size."""
    from pipelines.config import Config
    from pipelines.search import trials as search

    layout = search.Layout(str(tmp_path))
    card = {"variants": {"teacher_float32": {"input": {"shape": [-1, 32, 32, 3]}}}}
    (tmp_path / "base" / "tflite").mkdir(parents=True)
    (tmp_path / "base" / "tflite" / "model_card.json").write_text(json.dumps(card))
    (tmp_path / "base" / "teacher").mkdir()
    (tmp_path / "base" / "teacher" / "teacher.keras").write_text("stand-in")
    base = Config(dataset="digits", out_dir=str(tmp_path), loss="kd", teacher_pool=0.5)
    config = search.trial_config(base, {"image_size": "24,24", "temperature": 2.0}, layout, "t1")
    # The base's teacher, trained on its pool; the trial's students learn from the base's.
    assert config.teacher_pool == 0.5
    assert config.image_size == (24, 24) and config.teacher_image_size == (32, 32)
    assert config.teacher == str(tmp_path / "base" / "teacher" / "teacher.keras")
    assert config.teacher_cache == "disk"
    assert config.teacher_cache_dir == str(tmp_path / "teacher_cache" / "24x24")
    assert "baseline" not in config.stages and config.select == "distilled"
    native = search.trial_config(base, {"temperature": 2.0}, layout, "t2")
    assert native.teacher_image_size == () and native.teacher_cache_dir.endswith("native")


def test_a_detection_trial_shares_the_teacher_uncached_and_is_scored_by_the_map_it_ships(tmp_path):
    """A detection base: the trial runs the base's teacher file (its dense predictions are not
    cached) at the base's size, and is scored by the test mAP of the file it ships."""
    from pipelines.config import Config
    from pipelines.search import trials as search

    layout = search.Layout(str(tmp_path))
    (tmp_path / "base" / "teacher").mkdir(parents=True)
    (tmp_path / "base" / "teacher" / "teacher.keras").write_text("stand-in")
    base = Config(
        dataset=f"coco:{tmp_path / 'set'}",
        image_size=(64, 64),
        teacher="detector_large",
        student="detector_small",
        modes=("int8_io_uint8",),
        threads=(1, 2),
        out_dir=str(tmp_path),
    )
    config = search.trial_config(base, {"student_loss_weight": "0.3"}, layout, "t1")
    assert config.teacher == str(tmp_path / "base" / "teacher" / "teacher.keras")
    assert config.student_loss_weight == 0.3 and config.image_size == (64, 64)
    assert (config.teacher_cache, config.teacher_cache_dir, config.teacher_image_size) == (
        base.teacher_cache,
        "",
        (),
    )
    assert "baseline" not in config.stages and config.threads == (1,)

    run = tmp_path / "trials" / "t1"
    entry = {"file": "student_qad_int8_io_uint8.tflite", "size_bytes": 10240}
    _write_run(
        run,
        {
            "student_qad_int8_io_uint8": dict(entry, map={"split": "test", "map": 0.31}),
            "student_int8_io_uint8": dict(entry, map={"split": "test", "map": 0.25}),
        },
        {"student_qad_int8_io_uint8": 0.5},
        {"student_qad_int8_io_uint8": {"1": {"latency": {"p50_ms": 0.7, "mean_ms": 0.8}}}},
    )
    measured = search.objectives_of(str(run), config, "int8_io_uint8")
    assert (measured["map"], measured["latency_ms"], measured["size_kb"]) == (0.31, 0.7, 10.0)
    assert "accuracy" not in measured
    from pipelines.run import RunDirectory

    RunDirectory(str(run)).record("verify", [], {"drops": {"student_qad_int8_io_uint8": 4.0}})
    with pytest.raises(search.TrialFailed, match=r"lost 4.00 mAP@\[.5:.95\] points"):
        search.objectives_of(str(run), config, "int8_io_uint8")


def test_a_detection_search_reads_its_set_once_for_the_latency_inputs_and_floor(
    tmp_path, monkeypatch
):
    """Reading a detection set opens every image's header: the search's latency inputs (the
    first test image) and the floor's calibration images come from one read."""
    from pipelines.config import Config
    from pipelines.search import tasks
    from tests.conftest import CIFAR_SAMPLE
    from tfkd.tasks.detection import data as detection_data
    from tools.make_detection_set import make_detection_set

    make_detection_set(
        CIFAR_SAMPLE,
        str(tmp_path / "set"),
        ["frog", "truck"],
        {"train": 4, "val": 2},
        64,
        2,
        "coco",
        0,
    )
    reads = []
    original = detection_data.load
    monkeypatch.setattr(detection_data, "load", lambda spec: reads.append(spec) or original(spec))
    base = Config(
        dataset=f"coco:{tmp_path / 'set'}",
        image_size=(64, 64),
        teacher="detector_large",
        student="detector_small",
        modes=("float32", "int8_io_uint8"),
        out_dir=str(tmp_path / "search"),
    )
    inputs = tasks.latency_inputs(base)
    tasks.floor_exporter(base, "64,64")
    assert reads == [base.dataset]
    assert inputs is not None and inputs.shape == (1, 64, 64, 3)


def test_a_trials_ray_worker_imports_no_tensorflow():
    """Ray imports the trainable's module in each trial's worker; the trial's own process
    imports TensorFlow, the worker must not hold a second one."""
    probe = (
        "import sys, pipelines.search.trainable as t; "
        "assert callable(t.run_trial); "
        "heavy = ('tensorflow', 'tf_keras', 'tfkd'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
