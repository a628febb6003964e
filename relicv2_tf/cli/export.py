"""relicv2-export: write a trained encoder (and linear head) as a TF Serving SavedModel.

  relicv2-export --workdir=runs/demo --base_path=/tmp/models --model_name=relicv2
  relicv2-export --encoder_dir=runs/demo/encoder --linear_head=runs/linear/linear_head.keras \\
      --base_path=/tmp/models --model_name=relicv2_imagenet --version=3 --overwrite

Writes <base_path>/<model_name>/<version>/ (see relicv2_tf/serving/export.py and docs/SERVING.md).
"""

from __future__ import annotations

import os

from absl import flags

from relicv2_tf.cli import common

COMMAND = "export"


def define_flags():
    return {
        "encoder_dir": flags.DEFINE_string(
            "encoder_dir", None, "Encoder directory (encoder.weights.h5 + model_config.json) "
            "written by relicv2-pretrain or relicv2-import."),
        "workdir": flags.DEFINE_string(
            "workdir", None, "Pretraining workdir; its <workdir>/encoder is exported."),
        "linear_head": flags.DEFINE_string(
            "linear_head", None, "Optional linear_head.keras saved by linear evaluation; adds "
            "`logits` and `probabilities` outputs."),
        "base_path": flags.DEFINE_string("base_path", None,
                                         "Parent directory of the model directory."),
        "model_name": flags.DEFINE_string("model_name", "relicv2",
                                          "TF Serving model name (a directory)."),
        "version": flags.DEFINE_integer("version", None, "Version; default: one more than the "
                                        "largest existing."),
        "overwrite": flags.DEFINE_bool("overwrite", False,
                                       "Replace an existing version instead of refusing."),
        "image_size": flags.DEFINE_integer("image_size", 224, "Centre-crop size of the "
                                           "serving_bytes preprocessing."),
        "resize_size": flags.DEFINE_integer(
            "resize_size", None, "Its shorter-side resize (default image_size * 256 / 224); use "
            "the linear evaluation's value when exporting its head."),
    }


def encoder_directory(encoder_dir: str | None, workdir: str | None) -> str:
    """--encoder_dir, or --workdir's <workdir>/encoder: exactly one of them."""
    if bool(encoder_dir) == bool(workdir):
        raise ValueError("Pass exactly one of --encoder_dir (an encoder directory) or --workdir "
                         "(a pretraining workdir, whose <workdir>/encoder is used).")
    return encoder_dir or os.path.join(workdir, "encoder")


def main(flag_values, argv):
    common.reject_arguments(COMMAND, argv[1:])
    value = {name: holder.value for name, holder in flag_values.items()}
    if not value["base_path"]:
        common.fail(COMMAND, "needs --base_path=<parent directory of the model directory>.")
    from relicv2_tf.data import eval_preprocess
    from relicv2_tf.serving import export

    with common.exit_on_error(COMMAND, (FileNotFoundError, FileExistsError, ValueError)):
        directory = encoder_directory(value["encoder_dir"], value["workdir"])
        path = export.export_encoder_directory(
            directory, value["base_path"], value["model_name"], linear_head=value["linear_head"],
            version=value["version"], overwrite=value["overwrite"],
            image_size=value["image_size"], resize_size=value["resize_size"])
    outputs = [export.EMBEDDING] + (
        [export.LOGITS, export.PROBABILITIES] if value["linear_head"] else [])
    resize = value["resize_size"] or eval_preprocess.eval_resize_size(value["image_size"])
    model_dir = os.path.abspath(os.path.join(value["base_path"], value["model_name"]))
    print(f"Exported {directory} -> {path}")
    print(f"  {export.SERVING_DEFAULT}: {export.IMAGES_INPUT} float32 [N,H,W,3] in 0-255 "
          f"-> {outputs}")
    print(f"  {export.SERVING_BYTES}: {export.BYTES_INPUT} string [N] JPEG/PNG (resize "
          f"{resize}, crop {value['image_size']}) -> {outputs}")
    print(f"Serve: tensorflow_model_server --port=8500 --rest_api_port=8501 "
          f"--model_name={value['model_name']} --model_base_path={model_dir}")


def run():
    flag_values = define_flags()
    common.run_app(COMMAND, lambda argv: main(flag_values, argv), __doc__)


if __name__ == "__main__":
    run()
