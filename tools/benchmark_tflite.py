r"""Benchmarks `.tflite` files on the host with LiteRT (and on an Android device with --serial).

    python tools/benchmark_tflite.py runs/digits/tflite/*.tflite --threads=1,2 --json=latency.json
    python tools/benchmark_tflite.py MODEL --serial=R58M123 --benchmark_binary=./benchmark_model

Prints a table; --json writes every measurement with how it was taken.
"""

import json
import sys

from absl import app, flags

from tfkd.measure import benchmark, device

FLAGS = flags.FLAGS
flags.DEFINE_list("threads", ["1"], "Thread counts to measure.")
flags.DEFINE_integer("warmup", 10, "Untimed runs after the first.")
flags.DEFINE_integer("runs", 50, "Timed runs.")
flags.DEFINE_bool("xnnpack", True, "Use the XNNPACK delegate (as apps do).")
flags.DEFINE_string("json", None, "Write all measurements to this file.")
flags.DEFINE_string("serial", None, "Also measure on this adb device.")
flags.DEFINE_string(
    "benchmark_binary",
    None,
    "Host path of the Android benchmark_model binary; without it the android_demo "
    "app's benchmark mode is used on the device.",
)


def main(argv):
    models = argv[1:]
    if not models:
        raise app.UsageError("Give one or more .tflite files.")
    threads = [int(t) for t in FLAGS.threads]
    results = []
    try:
        for model in models:
            for count in threads:
                results.append(
                    benchmark.measure(
                        model,
                        threads=count,
                        warmup=FLAGS.warmup,
                        runs=FLAGS.runs,
                        xnnpack=FLAGS.xnnpack,
                    )
                )
        if FLAGS.serial:
            phone = device.connect(FLAGS.serial)
            info = device.fingerprint(phone)
            for model in models:
                for count in threads:
                    common = dict(
                        threads=count,
                        warmup=FLAGS.warmup,
                        runs=FLAGS.runs,
                        xnnpack=FLAGS.xnnpack,
                        info=info,
                    )
                    if FLAGS.benchmark_binary:
                        results.append(
                            device.benchmark_model_on_device(
                                phone, model, FLAGS.benchmark_binary, **common
                            )
                        )
                    else:
                        results.append(device.app_benchmark_on_device(phone, model, **common))
    except (device.DeviceError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(benchmark.format_table(results))
    if FLAGS.json:
        with open(FLAGS.json, "w", encoding="utf-8") as f:
            json.dump([r.to_dict() for r in results], f, indent=2)
    return 0


if __name__ == "__main__":
    app.run(main)
