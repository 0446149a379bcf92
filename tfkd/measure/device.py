"""On-device latency over adb, measured like the host benchmark and reported in the same stats.

Two runners on the phone:
- the official TFLite/LiteRT `benchmark_model` binary for Android (its path on the host is given
  by the user; it is pushed once), whose text output is parsed;
- the android_demo app's benchmark mode
  (`am start -n <pkg>/.BenchmarkActivity --es model … --ei threads … --ei runs …`), which writes
  `result.json` (every timed run in milliseconds) to the app's external files directory.

Every subprocess call takes an argument list (never a host shell string), and every argument
of a device shell command is quoted for the device shell.
"""

import dataclasses
import json
import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence

from tfkd.measure.benchmark import LatencyStats

REMOTE_DIR = "/data/local/tmp/tfkd"
APP_PACKAGE = "org.tfkd.demo"
GETPROP_KEYS = {
    "manufacturer": "ro.product.manufacturer",
    "model": "ro.product.model",
    "soc_manufacturer": "ro.soc.manufacturer",
    "soc": "ro.soc.model",
    "board": "ro.board.platform",
    "abi": "ro.product.cpu.abi",
    "android": "ro.build.version.release",
    "sdk": "ro.build.version.sdk",
    "build": "ro.build.fingerprint",
}


class DeviceError(RuntimeError):
    """Something about the device or adb prevents a measurement; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Adb:
    """Runs adb for one device. `adb` is the executable (PATH lookup or a path)."""

    serial: str
    adb: str = "adb"
    timeout_s: float = 600.0

    def run(self, *args: str) -> str:
        return _run_adb(self.adb, ["-s", self.serial, *args], self.timeout_s)

    def shell(self, *command: str) -> str:
        """Runs `command` on the device; each word is quoted for the device's shell."""
        return self.run("shell", " ".join(shlex.quote(word) for word in command))


def _run_adb(adb: str, args: Sequence[str], timeout_s: float = 600.0) -> str:
    try:
        result = subprocess.run(
            [adb, *args], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except FileNotFoundError as error:
        raise DeviceError(
            f"adb not found ('{adb}'). Install Android platform-tools and put adb on PATH, or "
            "pass its path."
        ) from error
    except subprocess.TimeoutExpired as error:
        raise DeviceError(f"adb {' '.join(args)} did not finish in {timeout_s:.0f} s.") from error
    if result.returncode != 0:
        raise DeviceError(
            f"adb {' '.join(args)} failed (exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()}"
        )
    return result.stdout


def attached_devices(adb: str = "adb") -> dict[str, str]:
    """`{serial: state}` from `adb devices` (state: device, unauthorized, offline, ...)."""
    devices = {}
    for line in _run_adb(adb, ["devices"], 60).splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2:
            devices[parts[0]] = parts[1]
    return devices


def connect(serial: str | None = None, adb: str = "adb") -> Adb:
    """The device to measure on; `DeviceError` explains why none can be used."""
    devices = attached_devices(adb)
    if not devices:
        raise DeviceError(
            "No Android device attached (`adb devices` lists none). Connect a phone with USB "
            "debugging on, or start an emulator, then retry."
        )
    if serial is None:
        if len(devices) > 1:
            raise DeviceError(
                f"Several devices attached: {sorted(devices)}. Choose one by its serial."
            )
        serial = next(iter(devices))
    if serial not in devices:
        raise DeviceError(f"Device '{serial}' is not attached. Attached: {sorted(devices)}.")
    state = devices[serial]
    if state == "unauthorized":
        raise DeviceError(
            f"Device '{serial}' is unauthorized: unlock it and accept the 'Allow USB debugging' "
            "prompt (revoke authorizations in Developer options if no prompt shows)."
        )
    if state != "device":
        raise DeviceError(f"Device '{serial}' is {state}; reconnect it (`adb reconnect`).")
    return Adb(serial, adb)


def parse_getprop(text: str) -> dict[str, str]:
    """Parses `adb shell getprop` lines such as `[ro.product.model]: [Pixel 7]`."""
    return dict(re.findall(r"^\[([^\]]+)\]: \[(.*)\]\s*$", text, re.M))


def fingerprint(device: Adb) -> dict:
    """Model, SoC, ABI, Android version and CPU governor (None where unreadable)."""
    props = parse_getprop(device.shell("getprop"))
    result = {name: props.get(key) or None for name, key in GETPROP_KEYS.items()}
    result["serial"] = device.serial
    try:
        governor = device.shell("cat", "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
        result["cpu_governor"] = governor.strip() or None
    except DeviceError:
        result["cpu_governor"] = None
    return result


def push(device: Adb, local: str, remote: str) -> None:
    if not os.path.isfile(local):
        raise FileNotFoundError(f"Nothing to push: {local} does not exist.")
    try:
        device.run("push", local, remote)
    except DeviceError as error:
        raise DeviceError(
            f"Could not push {local} to {device.serial}:{remote}. Check free "
            f"space and that {os.path.dirname(remote)} is writable. ({error})"
        ) from error


_STATS_LINE = re.compile(
    r"count=(\d+) first=\S+ curr=\S+ min=(\S+) max=(\S+) avg=(\S+) std=(\S+)"
    r"(?: p5=\S+ median=(\S+) p95=\S+)?"
)
_TIMINGS_LINE = re.compile(
    r"Inference timings in us: Init: (\S+), First inference: (\S+), "
    r"Warmup \(avg\): (\S+), Inference \(avg\): (\S+)"
)
_MEMORY_LINE = re.compile(
    r"(?:Memory footprint delta from the start of the tool|"
    r"Peak memory footprint) \(MB\): init=(\S+) overall=(\S+)"
)


def parse_benchmark_model(text: str) -> dict:
    """Stats of the timed runs of a `benchmark_model` log (the last `count=` line), in ms.

    `benchmark_model` prints p5/median/p95, not p90/p99: those stay None.
    """
    stats = _STATS_LINE.findall(text)
    timings = _TIMINGS_LINE.search(text)
    if not stats or not timings:
        raise DeviceError(
            "benchmark_model printed no timing summary; its output ends with:\n"
            + "\n".join(text.strip().splitlines()[-5:])
        )
    count, low, high, avg, std, median = stats[-1]
    memory = _MEMORY_LINE.search(text)
    return {
        "latency": LatencyStats(
            runs=int(count),
            mean_ms=float(avg) / 1e3,
            std_ms=float(std) / 1e3,
            min_ms=float(low) / 1e3,
            p50_ms=float(median) / 1e3 if median else None,
            p90_ms=None,
            p99_ms=None,
            max_ms=float(high) / 1e3,
        ),
        "init_ms": float(timings.group(1)) / 1e3,
        "first_run_ms": float(timings.group(2)) / 1e3,
        "memory_overall_mb": float(memory.group(2)) if memory else None,
    }


@dataclasses.dataclass(frozen=True)
class DeviceMeasurement:
    model: str
    size_bytes: int
    runner: str
    threads: int
    xnnpack: bool
    warmup: int
    cpu_mask: str | None
    repeats: list[dict]
    latency: LatencyStats
    device: dict
    where: str = "device"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _repeated(
    measure_once: Callable[[], dict],
    repeats: int,
    cooldown_s: float,
    sleep: Callable[[float], None],
) -> list[dict]:
    """`repeats` measurements with a cool-down between them (not before the first)."""
    results = []
    for repeat in range(repeats):
        if repeat and cooldown_s:
            sleep(cooldown_s)
        results.append(measure_once())
    return results


def _measurement(
    device: Adb,
    model: str,
    runner: str,
    results: list[dict],
    info,
    *,
    threads,
    xnnpack,
    warmup,
    cpu_mask=None,
) -> DeviceMeasurement:
    # The repeat with the median mean latency: robust to one thermally throttled repeat.
    median = sorted(results, key=lambda r: r["latency"].mean_ms)[len(results) // 2]["latency"]
    return DeviceMeasurement(
        model=os.path.abspath(model),
        size_bytes=os.path.getsize(model),
        runner=runner,
        threads=threads,
        xnnpack=xnnpack,
        warmup=warmup,
        cpu_mask=cpu_mask,
        repeats=[{**r, "latency": r["latency"].to_dict()} for r in results],
        latency=median,
        device=info if info is not None else fingerprint(device),
    )


def benchmark_model_on_device(
    device: Adb,
    model: str,
    binary: str,
    *,
    threads: int = 1,
    warmup: int = 10,
    runs: int = 50,
    xnnpack: bool = True,
    cpu_mask: str | None = None,
    repeats: int = 1,
    cooldown_s: float = 0.0,
    sleep: Callable[[float], None] = time.sleep,
    info: dict | None = None,
) -> DeviceMeasurement:
    """Pushes `binary` and `model`, runs `benchmark_model` `repeats` times with a cool-down.

    Args:
        cpu_mask: hex mask for `taskset` (e.g. "f0" for the big cores of many SoCs).
    """
    remote_binary = f"{REMOTE_DIR}/benchmark_model"
    remote_model = f"{REMOTE_DIR}/{os.path.basename(model)}"
    device.shell("mkdir", "-p", REMOTE_DIR)
    push(device, binary, remote_binary)
    device.shell("chmod", "755", remote_binary)
    push(device, model, remote_model)
    command = [] if cpu_mask is None else ["taskset", cpu_mask]
    command += [
        remote_binary,
        f"--graph={remote_model}",
        f"--num_threads={threads}",
        f"--warmup_runs={warmup}",
        f"--num_runs={runs}",
        "--min_secs=0",
        f"--use_xnnpack={'true' if xnnpack else 'false'}",
    ]
    results = _repeated(
        lambda: parse_benchmark_model(device.shell(*command)), repeats, cooldown_s, sleep
    )
    return _measurement(
        device,
        model,
        "benchmark_model",
        results,
        info,
        threads=threads,
        xnnpack=xnnpack,
        warmup=warmup,
        cpu_mask=cpu_mask,
    )


def parse_app_result(text: str) -> dict:
    """Reads the android_demo app's `result.json`: `{"latency_ms": [...], "init_ms", ...}`."""
    try:
        result = json.loads(text)
        samples = result["latency_ms"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise DeviceError(
            f"The app's result.json is not what tfkd expects ({error}): {text[:200]!r}"
        ) from error
    return {
        "latency": LatencyStats.from_samples(samples),
        "init_ms": result.get("init_ms"),
        "first_run_ms": result.get("first_run_ms"),
        "memory_overall_mb": None,
    }


def app_benchmark_on_device(
    device: Adb,
    model: str,
    *,
    threads: int = 1,
    warmup: int = 10,
    runs: int = 50,
    xnnpack: bool = True,
    repeats: int = 1,
    cooldown_s: float = 0.0,
    package: str = APP_PACKAGE,
    poll_s: float = 1.0,
    timeout_s: float = 300.0,
    sleep: Callable[[float], None] = time.sleep,
    info: dict | None = None,
) -> DeviceMeasurement:
    """Runs the android_demo app's BenchmarkActivity and pulls its `result.json`."""
    app_dir = f"/sdcard/Android/data/{package}/files"
    remote_model = f"{app_dir}/{os.path.basename(model)}"
    result_path = f"{app_dir}/result.json"
    device.shell("mkdir", "-p", app_dir)
    push(device, model, remote_model)

    def measure_once() -> dict:
        device.shell("rm", "-f", result_path)
        device.shell(
            "am",
            "start",
            "-W",
            "-n",
            f"{package}/.BenchmarkActivity",
            "--es",
            "model",
            remote_model,
            "--ei",
            "threads",
            str(threads),
            "--ei",
            "warmup",
            str(warmup),
            "--ei",
            "runs",
            str(runs),
            "--ez",
            "xnnpack",
            "true" if xnnpack else "false",
        )
        waited = 0.0
        while "result.json" not in device.shell("ls", app_dir).split():
            if waited >= timeout_s:
                raise DeviceError(
                    f"The app wrote no {result_path} within {timeout_s:.0f} s. Is "
                    f"{package} installed (./gradlew installDebug)?"
                )
            sleep(poll_s)
            waited += poll_s
        return parse_app_result(device.shell("cat", result_path))

    results = _repeated(measure_once, repeats, cooldown_s, sleep)
    return _measurement(
        device, model, "app", results, info, threads=threads, xnnpack=xnnpack, warmup=warmup
    )
