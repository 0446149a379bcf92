r"""Measures the `.tflite` files of a finished run again (host, and a phone with --serial) and
rewrites its report.

    python -m pipelines.benchmark --flagfile=runs/digits/flags.txt --threads=1,2,4
    python -m pipelines.benchmark --flagfile=runs/digits/flags.txt --serial=R58M123 \
        --benchmark_binary=/path/to/android_aarch64_benchmark_model
"""

import dataclasses
import sys

from absl import app

from pipelines import distill
from tfkd import device


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        config = distill._config_from_flags()
        stages = ("benchmark", "device", "report") if config.serial else ("benchmark", "report")
        config = dataclasses.replace(config, stages=stages)
        config.validate()
        distill.run(config)
    except (ValueError, OSError, device.DeviceError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(distill.format_summary({}, config))
    return 0


if __name__ == "__main__":
    app.run(main)
