"""relicv2-client: send image files to a TF Serving endpoint; print embeddings or top-k classes.

  relicv2-client --server=localhost:8500 --protocol=grpc --model_name=relicv2 img1.jpg img2.png
  relicv2-client --server=localhost:8501 --protocol=rest --model_name=relicv2 --top_k=5 \\
      --class_names=classes.txt img1.jpg

Prints one JSON line per image: {"image", "embedding"} or, when the model has a head,
{"image", "top_k": [{"class", "name", "probability"}, ...]} (all outputs with --all_outputs).
gRPC needs `pip install -r requirements-serving.txt`; REST needs nothing extra.
Flags are defined in `main()`, so importing this module defines none.
"""

from __future__ import annotations

import json

from absl import flags

from relicv2_tf.cli import common

FLAGS = flags.FLAGS
COMMAND = "client"


def define_flags():
    flags.DEFINE_string("server", "localhost:8500", "TF Serving host:port (gRPC 8500, REST 8501).")
    flags.DEFINE_enum("protocol", "grpc", ["grpc", "rest"], "Transport.")
    flags.DEFINE_string("model_name", "relicv2", "TF Serving model name.")
    flags.DEFINE_integer("version", None, "Model version; default: the latest the server serves.")
    flags.DEFINE_enum("signature", "serving_bytes", ["serving_bytes", "serving_default"],
                      "serving_bytes sends the files; serving_default sends pixels cropped here.")
    flags.DEFINE_integer("image_size", 224, "Crop size for --signature=serving_default.")
    flags.DEFINE_integer("resize_size", None, "Its shorter-side resize (default image_size * "
                         "256 / 224), as given to relicv2-export.")
    flags.DEFINE_enum("rest_format", "instances", ["instances", "inputs"],
                      "REST request format: row (instances) or columnar (inputs).")
    flags.DEFINE_integer("top_k", 5, "Classes to print when the model returns probabilities.")
    flags.DEFINE_string("class_names", None, "Optional text file, one class name per line.")
    flags.DEFINE_bool("all_outputs", False, "Print every output (embedding too) as JSON lists.")
    flags.DEFINE_float("timeout", 30.0, "Request timeout in seconds.")


def format_results(paths, outputs: dict, top_k: int, class_names=None, all_outputs=False):
    """One JSON-serialisable dict per image."""
    from relicv2_tf.serving import client
    from relicv2_tf.serving import export

    rows = [{"image": path} for path in paths]
    probabilities = outputs.get(export.PROBABILITIES)
    if probabilities is not None:
        for row, classes in zip(rows, client.top_k(probabilities, top_k, class_names)):
            row["top_k"] = classes
    if probabilities is None or all_outputs:
        for name, values in outputs.items():
            for row, value in zip(rows, values):
                row[name] = value.tolist()
    return rows


def predict_files(paths, *, server: str, protocol: str, model_name: str, version=None,
                  signature: str = "serving_bytes", image_size: int = 224,
                  resize_size: int | None = None, rest_format: str = "instances",
                  timeout: float = 30.0) -> dict:
    """Reads the image files, calls the server, returns {output name: array [N, ...]}."""
    from relicv2_tf.serving import client

    inputs = client.image_inputs(client.read_image_files(paths), signature, image_size,
                                 resize_size)
    if protocol == "grpc":
        return client.predict_grpc(server, model_name, signature, inputs, version, timeout)
    if protocol == "rest":
        return client.predict_rest(server, model_name, signature, inputs, version, rest_format,
                                   timeout)
    raise ValueError(f"protocol={protocol!r}: use 'grpc' or 'rest'.")


def check_paths(paths):
    """The image files exist (checked before TensorFlow starts)."""
    import os

    if not paths:
        raise ValueError("needs one or more image files after the flags, e.g. "
                         "relicv2-client --server=localhost:8500 cat.jpg (--help for more).")
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"no such image file(s): {', '.join(missing)}.")


def main_with_flags(argv):
    paths = argv[1:]
    with common.exit_on_error(COMMAND):
        check_paths(paths)
    common.quiet_tensorflow_startup()
    from relicv2_tf.serving import client

    with common.exit_on_error(COMMAND, (FileNotFoundError, ValueError, ImportError, RuntimeError)):
        class_names = client.load_class_names(FLAGS.class_names) if FLAGS.class_names else None
        outputs = predict_files(
            paths, server=FLAGS.server, protocol=FLAGS.protocol, model_name=FLAGS.model_name,
            version=FLAGS.version, signature=FLAGS.signature, image_size=FLAGS.image_size,
            resize_size=FLAGS.resize_size, rest_format=FLAGS.rest_format, timeout=FLAGS.timeout)
        rows = format_results(paths, outputs, FLAGS.top_k, class_names, FLAGS.all_outputs)
    for row in rows:
        print(json.dumps(row))


def main():
    define_flags()
    common.run_app(COMMAND, main_with_flags, __doc__, start_tensorflow=False,
                   positional="<image> ...  JPEG / PNG files to send (one JSON line each)")


if __name__ == "__main__":
    main()
