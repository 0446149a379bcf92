r"""On-device latency of `.tflite` files over adb, with the device's fingerprint.

    python tools/android_benchmark.py MODEL.tflite --serial=R58M123 \
        --benchmark_binary=/path/to/android_aarch64_benchmark_model --threads=4 --cpu_mask=f0 \
        --repeats=3 --cooldown=30 --json=device.json

Without --benchmark_binary the android_demo app's benchmark mode runs the model (install the app
first). --cpu_mask pins benchmark_model to cores with taskset (e.g. f0 = big cores on many SoCs);
--repeats with --cooldown reduces thermal effects: the repeat with the median mean is reported.
"""

import json
import sys

from absl import app, flags

from tfkd.measure import benchmark, device

FLAGS = flags.FLAGS
flags.DEFINE_string("serial", None, "adb serial; may be omitted when one device is attached.")
flags.DEFINE_string("adb", "adb", "adb executable.")
flags.DEFINE_string("benchmark_binary", None, "Host path of Android benchmark_model.")
flags.DEFINE_integer("threads", 1, "Threads.")
flags.DEFINE_integer("warmup", 10, "Warm-up runs.")
flags.DEFINE_integer("runs", 50, "Timed runs.")
flags.DEFINE_bool("xnnpack", True, "Use XNNPACK.")
flags.DEFINE_string("cpu_mask", None, "taskset mask (benchmark_model only).")
flags.DEFINE_integer("repeats", 1, "Repeats of the whole measurement.")
flags.DEFINE_float("cooldown", 0.0, "Seconds to wait between repeats.")
flags.DEFINE_string("json", None, "Write the measurements and device fingerprint here.")


def main(argv):
    models = argv[1:]
    if not models:
        raise app.UsageError("Give one or more .tflite files.")
    try:
        phone = device.connect(FLAGS.serial, adb=FLAGS.adb)
        info = device.fingerprint(phone)
        results = []
        for model in models:
            common = dict(
                threads=FLAGS.threads,
                warmup=FLAGS.warmup,
                runs=FLAGS.runs,
                xnnpack=FLAGS.xnnpack,
                repeats=FLAGS.repeats,
                cooldown_s=FLAGS.cooldown,
                info=info,
            )
            if FLAGS.benchmark_binary:
                results.append(
                    device.benchmark_model_on_device(
                        phone, model, FLAGS.benchmark_binary, cpu_mask=FLAGS.cpu_mask, **common
                    )
                )
            else:
                results.append(device.app_benchmark_on_device(phone, model, **common))
    except (device.DeviceError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"Device: {info['manufacturer']} {info['model']} ({info['soc']}, {info['abi']}, "
        f"Android {info['android']}, governor {info['cpu_governor']})"
    )
    print(benchmark.format_table(results))
    if FLAGS.json:
        with open(FLAGS.json, "w", encoding="utf-8") as f:
            json.dump({"device": info, "measurements": [r.to_dict() for r in results]}, f, indent=2)
    return 0


if __name__ == "__main__":
    app.run(main)
