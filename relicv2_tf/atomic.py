"""Files written whole or not at all: each is written under a temporary name in its own directory
and then renamed over its destination (atomic on one local file system), so a reader, or the
rerun of a killed job, finds the previous file or the new one, never a part of one.

Checkpoints have their own mechanism (tf.train.CheckpointManager, relicv2_tf/checkpointing.py),
as have served versions (relicv2_tf/serving/export.py) and mask shards on any file system
(relicv2_tf/saliency/generate.py: tf.io.gfile)."""

import contextlib
import json
import os


@contextlib.contextmanager
def temporary_path(path: str):
    """Yields a name next to `path` that keeps its extension (Keras picks a format from it); on
    success the file written there replaces `path`, on an exception it is removed."""
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, "tmp-" + name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: str, text: str):
    with temporary_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def write_bytes(path: str, data: bytes):
    with temporary_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_json(path: str, value, **dumps_kwargs):
    write_text(path, json.dumps(value, **dumps_kwargs))
