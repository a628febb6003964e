"""A published checkpoint -> encoder directory (+ TF Serving SavedModel): what `relicv2-import`
does.

Two formats: "haiku", the ReLICv2 / BYOL Haiku pickles (`models/convert.py`), and "swav", the
SwAV PyTorch `torch.save` files read without PyTorch (`models/convert_swav.py`). The encoder
directory (`models/encoder_io.py`) is what every relicv2_tf tool loads; the optional export writes
`<export_base_path>/<model_name>/<version>/` (`serving/export.py`). Both checkpoint kinds are
pickles, opened only with `trust_pickle` or a matching `expected_sha256`
(docs/PUBLISHED_ENCODERS.md).
"""

from __future__ import annotations

import time

from relicv2_tf.models import convert, convert_swav, encoder_io
from relicv2_tf.serving import export

FORMATS = ("haiku", "swav")


def import_encoder(checkpoint: str, output_dir: str | None = None,
                   export_base_path: str | None = None, model_name: str = "relicv2_encoder",
                   version: int | None = None, overwrite: bool = False,
                   trust_pickle: bool = False, expected_sha256: str | None = None,
                   depth: int | None = None, width_multiplier: float | None = None,
                   progress: bool = False, checkpoint_format: str = "haiku") -> dict:
    """Converts `checkpoint` (`checkpoint_format` in FORMATS), writes the encoder directory
    `output_dir` and/or the SavedModel under `export_base_path`, returns a JSON-able summary
    (checkpoint, format, model_config, report, output_dir / export_path, seconds)."""
    if checkpoint_format not in FORMATS:
        raise ValueError(f"unknown checkpoint format {checkpoint_format!r}; use one of {FORMATS}.")
    if not output_dir and not export_base_path:
        raise ValueError("nothing to write: pass --output_dir and/or --export_base_path.")
    start = time.time()
    if checkpoint_format == "swav":
        encoder, model_config, report = convert_swav.convert_swav_checkpoint(
            checkpoint, trust_pickle=trust_pickle, expected_sha256=expected_sha256, depth=depth,
            width_multiplier=width_multiplier)
    else:
        encoder, model_config, report = convert.convert_checkpoint(
            checkpoint, trust_pickle=trust_pickle, expected_sha256=expected_sha256, depth=depth,
            width_multiplier=width_multiplier, progress=progress)
    summary = {"checkpoint": checkpoint, "format": checkpoint_format, "model_config": model_config,
               "report": report.to_dict()}
    if output_dir:
        summary["output_dir"] = encoder_io.save_encoder(encoder, model_config, output_dir)
    if export_base_path:
        summary["export_path"] = export.export_encoder(encoder, export_base_path, model_name,
                                                       version=version, overwrite=overwrite)
    summary["seconds"] = round(time.time() - start, 1)
    return summary
