"""relicv2-import: a published checkpoint -> Keras encoder (+ SavedModel).

    relicv2-import --checkpoint=relicv2_r50x1.pkl --trust_pickle --output_dir=encoders/relicv2_r50x1
    relicv2-import --checkpoint=pretrain_res200x2.pkl --trust_pickle \\
        --output_dir=encoders/byol_r200x2 \\
        --export_base_path=/models --model_name=byol_r200x2 [--version=1]
    relicv2-import --format=swav --checkpoint=swav_RN50w2_400ep_pretrain.pth.tar --trust_pickle \\
        --output_dir=encoders/swav_r50x2

--format=haiku (default) reads the ReLICv2 / BYOL Haiku pickles (models/convert.py);
--format=swav the SwAV PyTorch `torch.save` files, without PyTorch (models/convert_swav.py; the
encoder gets PyTorch's padding, `"padding": "torch"` in model_config.json).
Depth and width are read from the parameter shapes (--depth/--width force them). The encoder
directory (`encoder.weights.h5` + `model_config.json`) is what every relicv2_tf tool loads, e.g.
`relicv2-linear-eval --config.encoder_dir=...`; `--export_base_path` also writes
`<base>/<model_name>/<version>/` for TF Serving. The file is a pickle, i.e. a program: it is read
with a restricted unpickler, and only with --trust_pickle or a matching --expected_sha256
(docs/PUBLISHED_ENCODERS.md). Prints a JSON summary on its last line.
"""

from __future__ import annotations

import json

from absl import flags

from relicv2_tf.cli import common

COMMAND = "import"
FORMATS = ("haiku", "swav")  # relicv2_tf.import_encoder.FORMATS, known before TensorFlow starts


def define_flags():
    return {
        "checkpoint": flags.DEFINE_string(
            "checkpoint", None, "Released checkpoint: a Haiku .pkl (ReLICv2, BYOL "
            "`pretrain_*.pkl`) or, with --format=swav, a SwAV `.pth.tar`."),
        "format": flags.DEFINE_enum(
            "format", "haiku", list(FORMATS),
            "haiku: ReLICv2 / BYOL Haiku pickle; swav: facebookresearch/swav PyTorch checkpoint "
            "(ResNet-50 and the RN50-w2/w4/w5 files)."),
        "output_dir": flags.DEFINE_string(
            "output_dir", None,
            "Encoder directory to write (encoder.weights.h5 + model_config.json)."),
        "export_base_path": flags.DEFINE_string(
            "export_base_path", None,
            "Also export a SavedModel to <export_base_path>/<model_name>/<version>."),
        "model_name": flags.DEFINE_string("model_name", "relicv2_encoder",
                                          "TF Serving model name."),
        "version": flags.DEFINE_integer(
            "version", None,
            "TF Serving version directory; default: one more than the largest existing."),
        "overwrite": flags.DEFINE_bool("overwrite", False, "Replace an existing export version."),
        "trust_pickle": flags.DEFINE_bool(
            "trust_pickle", False,
            "Unpickle the checkpoint although its checksum is not given. Pickles can run code: "
            "pass this only for a file you downloaded yourself from the authors' link."),
        "expected_sha256": flags.DEFINE_string(
            "expected_sha256", None,
            "sha256 of the file from a trusted source; a match makes it safe to open."),
        "depth": flags.DEFINE_enum(
            "depth", None, ["18", "34", "50", "101", "152", "200"],
            "Force the ResNet depth instead of inferring it from the shapes."),
        "width": flags.DEFINE_float("width", None, "Force the width multiplier (1, 2, 4, 5)."),
    }


def main(flag_values, argv):
    common.reject_arguments(COMMAND, argv[1:])
    value = {name: holder.value for name, holder in flag_values.items()}
    if not value["checkpoint"]:
        common.fail(COMMAND, "--checkpoint is required (the downloaded .pkl or .pth.tar file).")
    from relicv2_tf import import_encoder

    with common.exit_on_error(COMMAND, (ValueError, FileNotFoundError, FileExistsError)):
        summary = import_encoder.import_encoder(
            value["checkpoint"], output_dir=value["output_dir"],
            export_base_path=value["export_base_path"], model_name=value["model_name"],
            version=value["version"], overwrite=value["overwrite"],
            trust_pickle=value["trust_pickle"], expected_sha256=value["expected_sha256"],
            depth=int(value["depth"]) if value["depth"] else None,
            width_multiplier=value["width"], progress=True, checkpoint_format=value["format"])
    print(json.dumps(summary))


def run():
    flag_values = define_flags()
    common.run_app(COMMAND, lambda argv: main(flag_values, argv), __doc__)


if __name__ == "__main__":
    run()
