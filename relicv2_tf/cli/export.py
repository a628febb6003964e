"""relicv2-export: write a trained encoder (and linear head) as a TF Serving SavedModel.

  relicv2-export --workdir=runs/demo --base_path=/tmp/models --model_name=relicv2
  relicv2-export --encoder_dir=runs/demo/encoder --linear_head=runs/linear/linear_head.keras \\
      --base_path=/tmp/models --model_name=relicv2_imagenet --version=3 --overwrite

Writes <base_path>/<model_name>/<version>/ (see relicv2_tf/serving/export.py and docs/SERVING.md).
Flags are defined in `main()`, not at import, so importing this module never clashes with the flags
of other entry points in one process (tests).
"""

from __future__ import annotations

import os

from absl import flags

from relicv2_tf.cli import common

FLAGS = flags.FLAGS
COMMAND = "export"


def define_flags():
    flags.DEFINE_string("encoder_dir", None, "Encoder directory (encoder.weights.h5 + "
                        "model_config.json) written by relicv2-pretrain or relicv2-import.")
    flags.DEFINE_string("workdir", None, "Pretraining workdir; its <workdir>/encoder is exported.")
    flags.DEFINE_string("linear_head", None, "Optional linear_head.keras saved by linear "
                        "evaluation; adds `logits` and `probabilities` outputs.")
    flags.DEFINE_string("base_path", None, "Parent directory of the model directory.")
    flags.DEFINE_string("model_name", "relicv2", "TF Serving model name (a directory).")
    flags.DEFINE_integer("version", None, "Version; default: one more than the largest existing.")
    flags.DEFINE_bool("overwrite", False, "Replace an existing version instead of refusing.")
    flags.DEFINE_integer("image_size", 224, "Centre-crop size of the serving_bytes preprocessing.")
    flags.DEFINE_integer("resize_size", None, "Its shorter-side resize (default image_size * "
                         "256 / 224); use the linear evaluation's value when exporting its head.")


def encoder_directory(encoder_dir: str | None, workdir: str | None) -> str:
    if bool(encoder_dir) == bool(workdir):
        raise ValueError("Pass exactly one of --encoder_dir (an encoder directory) or --workdir "
                         "(a pretraining workdir, whose <workdir>/encoder is used).")
    return encoder_dir or os.path.join(workdir, "encoder")


def load_head(path: str):
    import keras

    if not os.path.isfile(path):
        raise FileNotFoundError(f"--linear_head={path} not found: pass the linear_head.keras that "
                                "linear evaluation wrote in its output directory.")
    return keras.models.load_model(path, compile=False)


def export_from_directories(*, base_path: str, model_name: str, encoder_dir: str | None = None,
                            workdir: str | None = None, linear_head: str | None = None,
                            version: int | None = None, overwrite: bool = False,
                            image_size: int = 224, resize_size: int | None = None) -> str:
    """What the command does, as a function of its flags: returns the written version directory."""
    from relicv2_tf.data import eval_preprocess
    from relicv2_tf.models import encoder_io
    from relicv2_tf.serving import export

    directory = encoder_directory(encoder_dir, workdir)
    encoder = encoder_io.load_encoder(directory)
    head = load_head(linear_head) if linear_head else None
    path = export.export_encoder(encoder, base_path, model_name, version=version,
                                 overwrite=overwrite, head=head, image_size=image_size,
                                 resize_size=resize_size)
    outputs = [export.EMBEDDING] + ([export.LOGITS, export.PROBABILITIES] if head else [])
    print(f"Exported {directory} -> {path}")
    print(f"  {export.SERVING_DEFAULT}: {export.IMAGES_INPUT} float32 [N,H,W,3] in 0-255 "
          f"-> {outputs}")
    resize = resize_size or eval_preprocess.eval_resize_size(image_size)
    print(f"  {export.SERVING_BYTES}: {export.BYTES_INPUT} string [N] JPEG/PNG (resize "
          f"{resize}, crop {image_size}) -> {outputs}")
    print(f"Serve: tensorflow_model_server --port=8500 --rest_api_port=8501 "
          f"--model_name={model_name} "
          f"--model_base_path={os.path.abspath(os.path.join(base_path, model_name))}")
    return path


def main_with_flags(argv):
    common.reject_arguments(COMMAND, argv[1:])
    if not FLAGS.base_path:
        common.fail(COMMAND, "needs --base_path=<parent directory of the model directory>.")
    with common.exit_on_error(COMMAND, (FileNotFoundError, FileExistsError, ValueError)):
        export_from_directories(
            base_path=FLAGS.base_path, model_name=FLAGS.model_name, encoder_dir=FLAGS.encoder_dir,
            workdir=FLAGS.workdir, linear_head=FLAGS.linear_head, version=FLAGS.version,
            overwrite=FLAGS.overwrite, image_size=FLAGS.image_size,
            resize_size=FLAGS.resize_size)


def main():
    define_flags()
    common.run_app(COMMAND, main_with_flags, __doc__)


if __name__ == "__main__":
    main()
