"""relicv2_tf/atomic.py: a file is replaced whole or left as it was."""

import json
import os

import pytest

from relicv2_tf import atomic


def test_a_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "result.json"
    path.write_text("old")
    atomic.write_json(str(path), {"top1": 0.5}, indent=2)
    assert json.loads(path.read_text()) == {"top1": 0.5}
    atomic.write_bytes(str(tmp_path / "mask.png"), b"\x89PNG")
    assert (tmp_path / "mask.png").read_bytes() == b"\x89PNG"
    assert sorted(os.listdir(tmp_path)) == ["mask.png", "result.json"]


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "head.keras"
    path.write_text("previous")
    with pytest.raises(RuntimeError):
        with atomic.temporary_path(str(path)) as tmp:
            assert tmp == str(tmp_path / "tmp-head.keras")  # the extension Keras reads
            with open(tmp, "w") as f:
                f.write("half of the new")
            raise RuntimeError("killed mid-save")
    assert path.read_text() == "previous"
    assert os.listdir(tmp_path) == ["head.keras"]
    with pytest.raises(TypeError):  # not serialisable: nothing is written
        atomic.write_json(str(tmp_path / "new.json"), {"x": object()})
    assert os.listdir(tmp_path) == ["head.keras"]
