"""Frozen encoder (and optional linear head) -> SavedModel in TF Serving's layout.

Layout: `<base_path>/<model_name>/<version>/{saved_model.pb, variables/}`, with integer versions;
TF Serving loads the largest one by default. A version is written into a temporary directory inside
`<base_path>/<model_name>/` whose name starts with `.tmp-` (TF Serving's file-system source only
considers children whose names parse as integers, so it never sees a half-written export) and is
then renamed to its version number. Temporary names carry the host and process id: an export first
deletes what exports killed on this host left behind (`remove_stale_temporaries`).

Signatures (built with `keras.export.ExportArchive`; the model runs with `training=False`, so batch
norm uses its moving statistics and every example's output is independent of the rest of the batch):

  serving_default: images float32 [N, H, W, 3], RGB in [0, 255], any N, H, W
      -> embedding float32 [N, C] (+ logits [N, K], probabilities [N, K] when a head is exported).
      No resizing or cropping happens: the pixels sent are the pixels encoded (the ResNet ends in
      a global average pool, so any size works). For embeddings equal to the evaluation protocol,
      send the centre crop of `image_size` (what `serving_bytes` computes) or use `serving_bytes`.
  serving_bytes: image_bytes string [N], encoded JPEG or PNG files
      -> the same outputs, after the evaluation preprocessing inside the graph
         (`data.eval_preprocess.preprocess_for_eval`: bicubic resize of the shorter side to
         `resize_size` (default `image_size * 256 / 224`), centre crop `image_size`, ImageNet
         normalisation).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import uuid

import keras
import tensorflow as tf

from relicv2_tf.data import eval_preprocess, normalize
from relicv2_tf.data.image_checks import JPEG_MAGIC, PNG_MAGIC
from relicv2_tf.models import encoder_io

SERVING_DEFAULT = "serving_default"
SERVING_BYTES = "serving_bytes"
IMAGES_INPUT = "images"
BYTES_INPUT = "image_bytes"
EMBEDDING = "embedding"
LOGITS = "logits"
PROBABILITIES = "probabilities"
TMP_PREFIX = ".tmp-"  # never an integer, so TF Serving skips it
# .tmp-{export|replaced}-<version>-<host>-<pid>-<8 hex digits>
_TMP_NAME = re.compile(r"\.tmp-(export|replaced)-(\d+)-(.+)-(\d+)-[0-9a-f]{8}")
# Leading bytes of the encoded formats `serving_bytes` accepts.
IMAGE_MAGIC = {"JPEG": JPEG_MAGIC, "PNG": PNG_MAGIC}
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


def existing_versions(model_dir: str) -> dict[int, str]:
    """{version: directory name} of the integer-named subdirectories (what TF Serving loads)."""
    if not os.path.isdir(model_dir):
        return {}
    return {int(name): name for name in os.listdir(model_dir)
            if name.isascii() and name.isdigit() and os.path.isdir(os.path.join(model_dir, name))}


def _temporary_name(kind: str, version: int) -> str:
    return (f"{TMP_PREFIX}{kind}-{version}-{socket.gethostname()}-{os.getpid()}-"
            f"{uuid.uuid4().hex[:8]}")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(model_dir: str) -> list[str]:
    """Cleans up after exports killed on this host (SIGKILL, power loss: no `except` ran).

    A `.tmp-export-*` directory of a dead process is deleted. A `.tmp-replaced-<version>-*` of a
    dead process is the old version an overwrite had moved aside: renamed back to `<version>` if
    that is missing (the kill fell between the two renames), else deleted. Directories of live
    processes or other hosts are left alone. Returns the names removed or restored."""
    if not os.path.isdir(model_dir):
        return []
    handled = []
    for name in sorted(os.listdir(model_dir)):
        match = _TMP_NAME.fullmatch(name)
        if (not match or match.group(3) != socket.gethostname()
                or _process_alive(int(match.group(4)))):
            continue
        path, version = os.path.join(model_dir, name), match.group(2)
        if match.group(1) == "replaced" and version not in os.listdir(model_dir):
            os.rename(path, os.path.join(model_dir, version))
        else:
            shutil.rmtree(path, ignore_errors=True)
        handled.append(name)
    return handled


def next_version(model_dir: str) -> int:
    """One more than the largest existing version; 1 for a new model."""
    return max(existing_versions(model_dir), default=0) + 1


# ------------------------------------------------------------------------------ graph functions


def images_to_model_inputs(images):
    """float [N, H, W, 3] in [0, 255] -> the normalised images the encoder consumes."""
    return normalize.normalize_images(tf.cast(images, tf.float32) / 255.0)


def check_input_shape(tensor, shape):
    """Runtime shape check: a SavedModel signature does not check the rank of what it is fed.

    `EnsureShape` stays in the graph and fails with "Shape of tensor <name> [..] is not compatible
    with expected shape [..]" instead of an obscure error deep inside the network.
    """
    return tf.ensure_shape(tensor, shape)


def is_supported_image(image_bytes):
    """Scalar bool: do the encoded bytes start like a JPEG or a PNG file?"""
    checks = [tf.strings.substr(image_bytes, 0, len(magic)) == magic
              for magic in IMAGE_MAGIC.values()]
    return tf.reduce_any(tf.stack(checks))


def decode_image(image_bytes):
    """Encoded JPEG/PNG bytes (scalar string) -> uint8 [H, W, 3], with a clear error otherwise."""
    check = tf.debugging.Assert(
        is_supported_image(image_bytes),
        [f"{SERVING_BYTES}: an input of `{BYTES_INPUT}` is not a JPEG or PNG file. Send the "
         "encoded file bytes (REST: {\"b64\": base64 of the file}); send decoded pixels to "
         f"`{SERVING_DEFAULT}` instead. First bytes received:",
         tf.strings.substr(image_bytes, 0, 8)])
    with tf.control_dependencies([check]):
        return tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)


def preprocess_image_bytes(image_bytes, image_size: int, resize_size: int | None = None):
    """string [N] of encoded images -> normalised float32 [N, image_size, image_size, 3]."""
    resize_size = resize_size or eval_preprocess.eval_resize_size(image_size)

    def preprocess_one(encoded):
        return eval_preprocess.preprocess_for_eval(decode_image(encoded), image_size, resize_size)

    return tf.map_fn(preprocess_one, image_bytes,
                     fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32))


def _check_head(encoder: keras.Model, head: keras.Model) -> None:
    feature_dim = encoder.output_shape[-1]
    head_input_dim = head.input_shape[-1]
    if len(head.output_shape) != 2 or head_input_dim != feature_dim:
        raise ValueError(
            f"The head maps {head.input_shape} -> {head.output_shape}, but the encoder gives "
            f"[N, {feature_dim}] features; pass the `linear_head.keras` that linear evaluation "
            "saved for this same encoder.")


def build_export_archive(encoder: keras.Model, head: keras.Model | None = None,
                         image_size: int = 224,
                         resize_size: int | None = None) -> keras.export.ExportArchive:
    """The two serving endpoints over `encoder` (and `head`), inference mode throughout."""

    def outputs(model_inputs):
        embedding = encoder(model_inputs, training=False)
        result = {EMBEDDING: embedding}
        if head is not None:
            logits = head(embedding, training=False)
            result[LOGITS] = logits
            result[PROBABILITIES] = tf.nn.softmax(logits, axis=-1)
        return result

    def serve_images(images):
        images = check_input_shape(images, [None, None, None, 3])
        return outputs(images_to_model_inputs(images))

    def serve_bytes(image_bytes):
        image_bytes = check_input_shape(image_bytes, [None])
        return outputs(preprocess_image_bytes(image_bytes, image_size, resize_size))

    archive = keras.export.ExportArchive()
    archive.track(encoder)
    if head is not None:
        archive.track(head)
    # `serving_default` first: ExportArchive aliases the first endpoint as TF Serving's default.
    archive.add_endpoint(SERVING_DEFAULT, serve_images, input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.float32, name=IMAGES_INPUT)])
    archive.add_endpoint(SERVING_BYTES, serve_bytes, input_signature=[
        tf.TensorSpec([None], tf.string, name=BYTES_INPUT)])
    return archive


# ------------------------------------------------------------------------------ file system


def write_archive(archive: keras.export.ExportArchive, directory: str) -> None:
    archive.write_out(directory, verbose=False)


def _validate(base_path, model_name, version, image_size, resize_size):
    if not base_path:
        raise ValueError("base_path is empty: pass the parent of TF Serving's --model_base_path "
                         "(the SavedModel goes to <base_path>/<model_name>/<version>).")
    if not isinstance(model_name, str) or not _MODEL_NAME.fullmatch(model_name):
        raise ValueError(f"model_name={model_name!r}: use letters, digits, '_', '-', '.' (it is a "
                         "directory and part of the REST URL /v1/models/<model_name>).")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                or version < 0):
        raise ValueError(f"version={version!r}: TF Serving versions are non-negative integers; "
                         "pass None to take the next one.")
    if not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size={image_size!r} must be a positive integer (paper: 224).")
    if resize_size is not None and (not isinstance(resize_size, int) or resize_size < image_size):
        raise ValueError(f"resize_size={resize_size!r} must be an integer >= image_size="
                         f"{image_size} (the centre crop is taken from the resized image).")


def _refuse_existing(model_dir: str, version: int) -> None:
    existing = existing_versions(model_dir)
    if version in existing:
        path = os.path.join(model_dir, existing[version])
        raise FileExistsError(
            f"{path} already exists: version {version} of this model is already exported. Pass "
            "overwrite=True (--overwrite) to replace it, or another version (default: the next "
            "one).")


def export_encoder(encoder: keras.Model, base_path: str, model_name: str,
                   version: int | None = None, overwrite: bool = False,
                   head: keras.Model | None = None, *, image_size: int = 224,
                   resize_size: int | None = None) -> str:
    """Writes `<base_path>/<model_name>/<version>/` (see module docstring) and returns its path.

    Args:
      encoder: normalised images [N, H, W, 3] -> features [N, C] (e.g. `encoder_io.load_encoder`).
      base_path: parent of the model directory (`--model_base_path=<base_path>/<model_name>`).
      model_name: the TF Serving model name.
      version: integer version; None = one more than the largest existing version.
      overwrite: replace an existing version instead of refusing.
      head: optional Keras model features [N, C] -> logits [N, K] (linear evaluation's head).
      image_size: centre-crop size of the `serving_bytes` preprocessing.
      resize_size: its shorter-side resize; None = `image_size * 256 / 224` (256 for 224). Match
        the linear evaluation's `resize_size` when exporting its head.
    """
    _validate(base_path, model_name, version, image_size, resize_size)
    if head is not None:
        _check_head(encoder, head)
    model_dir = os.path.join(base_path, model_name)
    os.makedirs(model_dir, exist_ok=True)
    remove_stale_temporaries(model_dir)
    if version is None:
        version = next_version(model_dir)
    if not overwrite:
        _refuse_existing(model_dir, version)  # before the slow part

    archive = build_export_archive(encoder, head, image_size, resize_size)
    tmp_dir = os.path.join(model_dir, _temporary_name("export", version))
    old_dir = old_name = None
    try:
        write_archive(archive, tmp_dir)
        existing = existing_versions(model_dir)
        if version in existing:
            if not overwrite:
                _refuse_existing(model_dir, version)  # another export took it meanwhile
            # Move the old version aside (invisible to TF Serving) and delete it after the swap.
            old_name = existing[version]
            old_dir = os.path.join(model_dir, _temporary_name("replaced", version))
            os.rename(os.path.join(model_dir, old_name), old_dir)
        final_dir = os.path.join(model_dir, str(version))
        os.rename(tmp_dir, final_dir)  # atomic on one file system
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if old_dir is not None and not os.path.exists(os.path.join(model_dir, str(version))):
            os.rename(old_dir, os.path.join(model_dir, old_name))  # put the old version back
        raise
    if old_dir is not None:
        shutil.rmtree(old_dir, ignore_errors=True)
    return final_dir


def load_head(path: str) -> keras.Model:
    """The `linear_head.keras` written by linear evaluation (uncompiled: it only predicts)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--linear_head={path} not found: pass the linear_head.keras that "
                                "linear evaluation wrote in its output directory.")
    return keras.models.load_model(path, compile=False)


def export_encoder_directory(encoder_dir: str, base_path: str, model_name: str, *,
                             linear_head: str | None = None, version: int | None = None,
                             overwrite: bool = False, image_size: int = 224,
                             resize_size: int | None = None) -> str:
    """`export_encoder` of the encoder saved in `encoder_dir` (`models/encoder_io.py`) and of the
    head saved at `linear_head` (optional): what `relicv2-export` does. Returns the version
    directory written."""
    encoder = encoder_io.load_encoder(encoder_dir)
    head = load_head(linear_head) if linear_head else None
    return export_encoder(encoder, base_path, model_name, version=version, overwrite=overwrite,
                          head=head, image_size=image_size, resize_size=resize_size)
