r"""Lists the ops, tensor types and quantization of `.tflite` files, and which ops stay float.

    python tools/tflite_inspect.py runs/digits/tflite/student_int8.tflite [--json=out.json]
    python tools/tflite_inspect.py --require_integer MODEL   # exit 1 if any op computes in float
"""

import json
import sys

from absl import app, flags

from tfkd import tflite_info

FLAGS = flags.FLAGS
flags.DEFINE_string("json", None, "Also write the description of every model to this file.")
flags.DEFINE_bool("require_integer", False, "Exit with status 1 if a model has float compute.")


def main(argv):
    paths = argv[1:]
    if not paths:
        raise app.UsageError("Give one or more .tflite files.")
    described = {}
    for path in paths:
        try:
            info = tflite_info.describe(path)
        except (ValueError, FileNotFoundError) as error:
            print(f"{path}: {error}", file=sys.stderr)
            return 2
        described[path] = info.to_dict()
        print(f"== {path}\n{info.table()}\n")
    if FLAGS.json:
        with open(FLAGS.json, "w", encoding="utf-8") as f:
            json.dump(described, f, indent=2)
    if FLAGS.require_integer and not all(d["integer_only"] for d in described.values()):
        return 1
    return 0


if __name__ == "__main__":
    app.run(main)
