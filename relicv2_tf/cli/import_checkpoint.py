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
import time

from absl import flags

from relicv2_tf.cli import common

COMMAND = "import"
FORMATS = ("haiku", "swav")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "Released checkpoint: a Haiku .pkl (ReLICv2, BYOL `pretrain_*.pkl`) or, "
    "with --format=swav, a SwAV `.pth.tar`.")
_FORMAT = flags.DEFINE_enum(
    "format", "haiku", list(FORMATS),
    "haiku: ReLICv2 / BYOL Haiku pickle; swav: facebookresearch/swav PyTorch checkpoint "
    "(ResNet-50 and the RN50-w2/w4/w5 files).")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Encoder directory to write (encoder.weights.h5 + model_config.json).")
_EXPORT_BASE_PATH = flags.DEFINE_string(
    "export_base_path", None,
    "Also export a SavedModel to <export_base_path>/<model_name>/<version>.")
_MODEL_NAME = flags.DEFINE_string("model_name", "relicv2_encoder", "TF Serving model name.")
_VERSION = flags.DEFINE_integer(
    "version", None, "TF Serving version directory; default: one more than the largest existing.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing export version.")
_TRUST_PICKLE = flags.DEFINE_bool(
    "trust_pickle", False,
    "Unpickle the checkpoint although its checksum is not given. Pickles can run code: pass this "
    "only for a file you downloaded yourself from the authors' link.")
_EXPECTED_SHA256 = flags.DEFINE_string(
    "expected_sha256", None,
    "sha256 of the file from a trusted source; a match makes it safe to open.")
_DEPTH = flags.DEFINE_enum("depth", None, ["18", "34", "50", "101", "152", "200"],
                           "Force the ResNet depth instead of inferring it from the shapes.")
_WIDTH = flags.DEFINE_float("width", None, "Force the width multiplier (1, 2, 4, 5).")


def run(checkpoint: str, output_dir: str | None = None, export_base_path: str | None = None,
        model_name: str = "relicv2_encoder", version: int | None = None, overwrite: bool = False,
        trust_pickle: bool = False, expected_sha256: str | None = None, depth: int | None = None,
        width_multiplier: float | None = None, progress: bool = False,
        checkpoint_format: str = "haiku") -> dict:
    """Converts `checkpoint` (`checkpoint_format` in FORMATS), writes the requested outputs,
    returns a JSON-able summary."""
    from relicv2_tf.models import encoder_io

    if checkpoint_format not in FORMATS:
        raise ValueError(f"unknown checkpoint format {checkpoint_format!r}; use one of {FORMATS}.")
    if not output_dir and not export_base_path:
        raise ValueError("nothing to write: pass --output_dir and/or --export_base_path.")
    export_encoder = None
    if export_base_path:  # fail before the slow conversion if export is unavailable
        try:
            from relicv2_tf.serving.export import export_encoder
        except ImportError as e:
            raise ValueError("--export_base_path needs relicv2_tf.serving.export, which is not "
                             f"available ({e}); write --output_dir and export later.") from e
    start = time.time()
    if checkpoint_format == "swav":
        from relicv2_tf.models import convert_swav

        encoder, model_config, report = convert_swav.convert_swav_checkpoint(
            checkpoint, trust_pickle=trust_pickle, expected_sha256=expected_sha256, depth=depth,
            width_multiplier=width_multiplier)
    else:
        from relicv2_tf.models import convert

        encoder, model_config, report = convert.convert_checkpoint(
            checkpoint, trust_pickle=trust_pickle, expected_sha256=expected_sha256, depth=depth,
            width_multiplier=width_multiplier, progress=progress)
    summary = {"checkpoint": checkpoint, "format": checkpoint_format, "model_config": model_config,
               "report": report.to_dict()}
    if output_dir:
        summary["output_dir"] = encoder_io.save_encoder(encoder, model_config, output_dir)
    if export_base_path:
        summary["export_path"] = export_encoder(encoder, export_base_path, model_name,
                                                version=version, overwrite=overwrite)
    summary["seconds"] = round(time.time() - start, 1)
    return summary


def _main(argv):
    common.reject_arguments(COMMAND, argv[1:])
    if not _CHECKPOINT.value:
        common.fail(COMMAND, "--checkpoint is required (the downloaded .pkl or .pth.tar file).")
    with common.exit_on_error(COMMAND, (ValueError, FileNotFoundError, FileExistsError)):
        summary = run(
            _CHECKPOINT.value, output_dir=_OUTPUT_DIR.value,
            export_base_path=_EXPORT_BASE_PATH.value, model_name=_MODEL_NAME.value,
            version=_VERSION.value, overwrite=_OVERWRITE.value, trust_pickle=_TRUST_PICKLE.value,
            expected_sha256=_EXPECTED_SHA256.value,
            depth=int(_DEPTH.value) if _DEPTH.value else None, width_multiplier=_WIDTH.value,
            progress=True, checkpoint_format=_FORMAT.value)
    print(json.dumps(summary))


def main():
    common.run_app(COMMAND, _main, __doc__)


if __name__ == "__main__":
    main()
