"""relicv2-client: send image files to a TF Serving endpoint; print embeddings or top-k classes.

  relicv2-client --server=localhost:8500 --protocol=grpc --model_name=relicv2 img1.jpg img2.png
  relicv2-client --server=localhost:8501 --protocol=rest --model_name=relicv2 --top_k=5 \\
      --class_names=classes.txt img1.jpg

Prints one JSON line per image: {"image", "embedding"} or, when the model has a head,
{"image", "top_k": [{"class", "name", "probability"}, ...]} (all outputs with --all_outputs).
gRPC needs `pip install -r requirements-serving.txt`; REST needs nothing extra.
"""

from __future__ import annotations

import json
import os

from absl import flags

from relicv2_tf.cli import common

COMMAND = "client"


def define_flags():
    return {
        "server": flags.DEFINE_string("server", "localhost:8500",
                                      "TF Serving host:port (gRPC 8500, REST 8501)."),
        "protocol": flags.DEFINE_enum("protocol", "grpc", ["grpc", "rest"], "Transport."),
        "model_name": flags.DEFINE_string("model_name", "relicv2", "TF Serving model name."),
        "version": flags.DEFINE_integer("version", None, "Model version; default: the latest "
                                        "the server serves."),
        "signature": flags.DEFINE_enum(
            "signature", "serving_bytes", ["serving_bytes", "serving_default"],
            "serving_bytes sends the files; serving_default sends pixels cropped here."),
        "image_size": flags.DEFINE_integer("image_size", 224,
                                           "Crop size for --signature=serving_default."),
        "resize_size": flags.DEFINE_integer("resize_size", None, "Its shorter-side resize "
                                            "(default image_size * 256 / 224), as given to "
                                            "relicv2-export."),
        "rest_format": flags.DEFINE_enum(
            "rest_format", "instances", ["instances", "inputs"],
            "REST request format: row (instances) or columnar (inputs)."),
        "top_k": flags.DEFINE_integer("top_k", 5, "Classes to print when the model returns "
                                      "probabilities."),
        "class_names": flags.DEFINE_string("class_names", None,
                                           "Optional text file, one class name per line."),
        "all_outputs": flags.DEFINE_bool("all_outputs", False,
                                         "Print every output (embedding too) as JSON lists."),
        "timeout": flags.DEFINE_float("timeout", 30.0, "Request timeout in seconds."),
    }


def check_paths(paths):
    """The image files exist (checked before TensorFlow starts)."""
    if not paths:
        raise ValueError("needs one or more image files after the flags, e.g. "
                         "relicv2-client --server=localhost:8500 cat.jpg (--help for more).")
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"no such image file(s): {', '.join(missing)}.")


def main(flag_values, argv):
    paths = argv[1:]
    with common.exit_on_error(COMMAND):
        check_paths(paths)
    common.quiet_tensorflow_startup()
    from relicv2_tf.serving import client

    value = {name: holder.value for name, holder in flag_values.items()}
    with common.exit_on_error(COMMAND, (FileNotFoundError, ValueError, ImportError, RuntimeError)):
        class_names = (client.load_class_names(value["class_names"]) if value["class_names"]
                       else None)
        outputs = client.predict_files(
            paths, server=value["server"], protocol=value["protocol"],
            model_name=value["model_name"], version=value["version"],
            signature=value["signature"], image_size=value["image_size"],
            resize_size=value["resize_size"], rest_format=value["rest_format"],
            timeout=value["timeout"])
        rows = client.format_results(paths, outputs, value["top_k"], class_names,
                                     value["all_outputs"])
    for row in rows:
        print(json.dumps(row))


def run():
    flag_values = define_flags()
    common.run_app(COMMAND, lambda argv: main(flag_values, argv), __doc__, start_tensorflow=False,
                   positional="<image> ...  JPEG / PNG files to send (one JSON line each)")


if __name__ == "__main__":
    run()
