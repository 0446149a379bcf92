import json
import os
import stat
import sys

import pytest

from tests.conftest import FIXTURES
from tfkd.measure import device

ADB_FIXTURES = os.path.join(FIXTURES, "adb")

FAKE_ADB = '''#!{python}
"""Stand-in adb: logs its arguments, answers from a scenario in the real output formats."""
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_ADB_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
scenario = json.load(open(os.environ["FAKE_ADB_SCENARIO"]))
if args[:2] == ["-s", args[1] if len(args) > 1 else None]:
    args = args[2:]
if args == ["devices"]:
    print("List of devices attached")
    for serial, state in scenario["devices"].items():
        print(serial + "\\t" + state)
    print()
elif args[0] == "push":
    if scenario.get("fail_push"):
        sys.stderr.write("adb: error: failed to copy '%s' to '%s': "
                         "remote No space left on device\\n" % (args[1], args[2]))
        sys.exit(1)
    print("%s: 1 file pushed, 0 skipped. 12.3 MB/s (20496 bytes in 0.002s)" % args[1])
elif args[0] == "shell":
    command = args[1]
    if command == "getprop":
        sys.stdout.write(open(scenario["getprop"]).read())
    elif "scaling_governor" in command:
        print("schedutil")
    elif "benchmark_model" in command and "--graph=" in command:
        sys.stdout.write(open(scenario["benchmark_output"]).read())
    elif command.startswith("ls "):
        print("student_int8.tflite")
        if not scenario.get("no_result"):
            print("result.json")
    elif command.startswith("cat ") and command.endswith("result.json"):
        print(json.dumps(scenario["app_result"]))
'''


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    """Puts a stand-in `adb` first on PATH; returns (set scenario, read logged calls)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    adb = bin_dir / "adb"
    adb.write_text(FAKE_ADB.replace("{python}", sys.executable))
    adb.chmod(adb.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    log, scenario_path = tmp_path / "calls.jsonl", tmp_path / "scenario.json"
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    monkeypatch.setenv("FAKE_ADB_SCENARIO", str(scenario_path))

    def configure(**changes):
        scenario = {
            "devices": {"emulator-5554": "device"},
            "getprop": os.path.join(ADB_FIXTURES, "getprop.txt"),
            "benchmark_output": os.path.join(ADB_FIXTURES, "benchmark_model.txt"),
            "app_result": {
                "latency_ms": [2.0, 1.0, 3.0, 4.0],
                "init_ms": 12.5,
                "first_run_ms": 6.0,
            },
        }
        scenario.update(changes)
        scenario_path.write_text(json.dumps(scenario))

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    configure()
    return configure, calls


@pytest.fixture
def files(tmp_path):
    model, binary = tmp_path / "student_int8.tflite", tmp_path / "benchmark_model"
    model.write_bytes(b"\0" * 20496)
    binary.write_bytes(b"\x7fELF")
    return str(model), str(binary)


def test_parse_benchmark_model_reads_the_timed_runs_not_the_warmup():
    text = open(os.path.join(ADB_FIXTURES, "benchmark_model.txt")).read()
    parsed = device.parse_benchmark_model(text)
    latency = parsed["latency"]
    assert latency.runs == 50
    assert latency.mean_ms == pytest.approx(1.2046) and latency.p50_ms == pytest.approx(1.190)
    assert latency.min_ms == pytest.approx(1.150) and latency.max_ms == pytest.approx(1.530)
    assert latency.p90_ms is None and latency.p99_ms is None
    assert parsed["init_ms"] == pytest.approx(5.579)
    assert parsed["first_run_ms"] == pytest.approx(1.410)
    assert parsed["memory_overall_mb"] == pytest.approx(9.23047)


def test_parse_benchmark_model_older_format_without_percentiles():
    text = (
        "count=50 first=249042 curr=250889 min=247067 max=254474 avg=249684 std=1442\n"
        "Inference timings in us: Init: 16242, First inference: 360262, Warmup (avg): "
        "304586, Inference (avg): 249684\n"
        "Peak memory footprint (MB): init=4.92969 overall=138.809\n"
    )
    parsed = device.parse_benchmark_model(text)
    assert parsed["latency"].mean_ms == pytest.approx(249.684)
    assert parsed["latency"].p50_ms is None
    assert parsed["memory_overall_mb"] == pytest.approx(138.809)


def test_parse_benchmark_model_failure_shows_the_tail():
    with pytest.raises(device.DeviceError, match="(?s)no timing summary.*Failed to load model"):
        device.parse_benchmark_model("STARTING!\nERROR: Failed to load model\n")


def test_getprop_parsing_and_fingerprint(fake_adb):
    info = device.fingerprint(device.connect())
    assert info == {
        "manufacturer": "Google",
        "model": "Pixel 7",
        "soc_manufacturer": "Google",
        "soc": "GS201",
        "board": "gs201",
        "abi": "arm64-v8a",
        "android": "14",
        "sdk": "34",
        "build": "google/panther/panther:14/UQ1A.240205.004/11269751:user/release-keys",
        "serial": "emulator-5554",
        "cpu_governor": "schedutil",
    }


def test_benchmark_model_run_pushes_once_and_sends_argument_lists(fake_adb, files):
    _, calls = fake_adb
    model, binary = files
    slept = []
    result = device.benchmark_model_on_device(
        device.connect("emulator-5554"),
        model,
        binary,
        threads=4,
        warmup=10,
        runs=50,
        cpu_mask="f0",
        repeats=3,
        cooldown_s=7.5,
        sleep=slept.append,
    )
    assert result.latency.mean_ms == pytest.approx(1.2046) and len(result.repeats) == 3
    assert result.device["model"] == "Pixel 7" and result.cpu_mask == "f0"
    assert slept == [7.5, 7.5]  # a cool-down between repeats, not before the first
    made = calls()
    pushes = [c for c in made if "push" in c]
    assert [c[-1] for c in pushes] == [
        "/data/local/tmp/tfkd/benchmark_model",
        "/data/local/tmp/tfkd/student_int8.tflite",
    ]
    runs = [c for c in made if c[:3] == ["-s", "emulator-5554", "shell"] and "--graph=" in c[3]]
    assert len(runs) == 3
    assert runs[0][3] == (
        "taskset f0 /data/local/tmp/tfkd/benchmark_model "
        "--graph=/data/local/tmp/tfkd/student_int8.tflite --num_threads=4 "
        "--warmup_runs=10 --num_runs=50 --min_secs=0 --use_xnnpack=true"
    )
    assert all(c[:2] == ["-s", "emulator-5554"] for c in made if c != ["devices"])


def test_device_shell_words_are_quoted(fake_adb, files, tmp_path):
    _, calls = fake_adb
    odd = tmp_path / "my model;rm -rf x.tflite"
    odd.write_bytes(b"\0")
    device.benchmark_model_on_device(device.connect(), str(odd), files[1], info={})
    command = [c for c in calls() if "--graph=" in " ".join(c)][0][3]
    assert "'--graph=/data/local/tmp/tfkd/my model;rm -rf x.tflite'" in command


def test_app_benchmark_mode_starts_the_activity_and_reads_result_json(fake_adb, files):
    _, calls = fake_adb
    result = device.app_benchmark_on_device(
        device.connect(), files[0], threads=2, runs=4, sleep=lambda s: None
    )
    assert result.runner == "app"
    assert result.latency.runs == 4 and result.latency.p50_ms == pytest.approx(2.5)
    start = [c for c in calls() if "am start" in " ".join(c)][0][3]
    assert "org.tfkd.demo/.BenchmarkActivity" in start and "--ei threads 2" in start


def test_app_that_writes_no_result_times_out_clearly(fake_adb, files):
    configure, _ = fake_adb
    configure(no_result=True)
    waits = []
    with pytest.raises(device.DeviceError, match="wrote no .*result.json within 3 s.*installDebug"):
        device.app_benchmark_on_device(
            device.connect(), files[0], timeout_s=3, poll_s=1, sleep=waits.append, info={}
        )
    assert waits == [1, 1, 1]


def test_no_device_is_a_clear_error(fake_adb):
    configure, _ = fake_adb
    configure(devices={})
    with pytest.raises(device.DeviceError, match="No Android device attached"):
        device.connect()


def test_unauthorized_device_is_a_clear_error(fake_adb):
    configure, _ = fake_adb
    configure(devices={"R58M123": "unauthorized"})
    with pytest.raises(device.DeviceError, match="unauthorized: unlock it and accept"):
        device.connect()


def test_serial_must_be_attached_and_chosen_among_several(fake_adb):
    configure, _ = fake_adb
    configure(devices={"a": "device", "b": "device"})
    with pytest.raises(device.DeviceError, match=r"Several devices attached: \['a', 'b'\]"):
        device.connect()
    with pytest.raises(device.DeviceError, match="'c' is not attached"):
        device.connect("c")
    assert device.connect("b").serial == "b"


def test_failing_push_is_a_clear_error(fake_adb, files):
    configure, _ = fake_adb
    configure(fail_push=True)
    with pytest.raises(device.DeviceError, match="(?s)Could not push.*No space left on device"):
        device.benchmark_model_on_device(device.connect(), files[0], files[1], info={})


def test_missing_adb_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(device.DeviceError, match="adb not found"):
        device.connect()


def _tool(name, *args):
    from tests.helpers import programs

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return programs.run(f"tools/{name}.py", args, cwd=root, env=env)


# The tool's two runs are programs of their own: slow. The phone, the parsing and the refusals
# are tested in process above and below (test_the_phone_is_checked_before_any_training).
@pytest.mark.slow
def test_android_benchmark_cli_prints_device_and_table_and_writes_json(fake_adb, files, tmp_path):
    model, binary = files
    out = tmp_path / "device.json"
    result = _tool(
        "android_benchmark",
        model,
        f"--benchmark_binary={binary}",
        "--threads=4",
        "--repeats=2",
        f"--json={out}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Google Pixel 7 (GS201, arm64-v8a, Android 14, governor schedutil)" in result.stdout
    assert "student_int8.tflite" in result.stdout and "1.190" in result.stdout
    written = json.loads(out.read_text())
    assert written["device"]["soc"] == "GS201"
    assert written["measurements"][0]["latency"]["mean_ms"] == pytest.approx(1.2046)


@pytest.mark.slow
def test_cli_without_a_device_says_so_without_a_traceback(fake_adb, files):
    configure, _ = fake_adb
    configure(devices={})
    result = _tool("android_benchmark", files[0])
    assert result.returncode == 2
    assert "No Android device attached" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "devices, binary, message",
    [
        ({}, None, "--serial=emulator-5554: No Android device attached"),
        ({"emulator-5554": "unauthorized"}, None, "is unauthorized: unlock it"),
        ({"emulator-5554": "device"}, "/nowhere/benchmark_model", "--benchmark_binary="),
    ],
)
def test_the_phone_is_checked_before_any_training(fake_adb, tmp_path, devices, binary, message):
    """The device stage runs last: an unreachable phone or a missing benchmark binary is named
    before the first stage, and nothing is written."""
    from pipelines import scheduler
    from pipelines.config import Config

    configure, _ = fake_adb
    configure(devices=devices)
    out = tmp_path / "run"
    config = Config(out_dir=str(out), serial="emulator-5554", benchmark_binary=binary)
    with pytest.raises(ValueError, match=message):
        scheduler.execute(config)
    assert not out.exists()
