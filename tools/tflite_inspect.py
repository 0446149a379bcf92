r"""Lists the ops, tensor types and quantization of `.tflite` files, which ops stay float, and
the TFLite metadata inside each (or that it has none).

    python tools/tflite_inspect.py runs/digits/tflite/student_int8.tflite [--json=out.json]
    python tools/tflite_inspect.py --require_integer MODEL   # exit 1 if any op computes in float
"""

import json
import sys

from absl import app, flags

from tfkd.export import metadata, tflite_info

FLAGS = flags.FLAGS
flags.DEFINE_string("json", None, "Also write the description of every model to this file.")
flags.DEFINE_bool("require_integer", False, "Exit with status 1 if a model has float compute.")


def _metadata_text(meta) -> str:
    if meta is None:
        return "metadata: none (MediaPipe Tasks and Android Studio cannot use this file as is)"
    lines = [
        f"metadata: {meta['name']} v{meta['version']} (parser >= "
        f"{meta['min_parser_version']}): {meta['description']}"
    ]
    for kind in ("inputs", "outputs"):
        for tensor in meta[kind]:
            norm = tensor["normalization"]
            extra = f"; normalization mean={norm['mean']} std={norm['std']}" if norm else ""
            lines.append(f"  {kind[:-1]} {tensor['name']}: {tensor['description']}{extra}")
    for name, text in meta["associated_files"].items():
        lines.append(f"  file {name}: {len(text.splitlines())} lines")
    return "\n".join(lines)


def main(argv):
    paths = argv[1:]
    if not paths:
        raise app.UsageError("Give one or more .tflite files.")
    described = {}
    for path in paths:
        try:
            info = tflite_info.describe(path)
            with open(path, "rb") as f:
                meta = metadata.read(f.read())
        except (ValueError, FileNotFoundError) as error:
            print(f"{path}: {error}", file=sys.stderr)
            return 2
        described[path] = {**info.to_dict(), "metadata": meta}
        print(f"== {path}\n{info.table()}\n{_metadata_text(meta)}\n")
    if FLAGS.json:
        with open(FLAGS.json, "w", encoding="utf-8") as f:
            json.dump(described, f, indent=2)
    if FLAGS.require_integer and not all(d["integer_only"] for d in described.values()):
        return 1
    return 0


if __name__ == "__main__":
    app.run(main)
