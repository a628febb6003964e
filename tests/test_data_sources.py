"""relicv2_tf.data.sources: every source yields {image, mask?, label, id}; bad input is caught."""

import io
import logging

import numpy as np
import pytest
import tensorflow as tf

from relicv2_tf import config as config_lib
from relicv2_tf.data import image_checks, readers, sources, tfrecord_format


def data_config(**overrides):
    config = config_lib.get_default_config().data
    for key, value in overrides.items():
        config[key] = value
    return config


def encode(array, fmt="PNG", mode=None):
    from PIL import Image
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def rgb(seed, h=20, w=24):
    return np.random.RandomState(seed).randint(0, 256, [h, w, 3]).astype(np.uint8)


def write_folder(root, with_bad=None):
    """Two classes, mixed formats (RGB JPEG, greyscale PNG, CMYK JPEG, RGBA PNG)."""
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    (root / "cat" / "a.jpg").write_bytes(encode(rgb(0), "JPEG"))
    (root / "cat" / "b.png").write_bytes(encode(rgb(1)[..., 0]))  # greyscale
    (root / "dog" / "c.jpeg").write_bytes(encode(rgb(2), "JPEG", mode="CMYK"))
    (root / "dog" / "d.png").write_bytes(encode(rgb(3), mode="RGBA"))
    (root / "dog" / "notes.txt").write_text("not an image, ignored by extension")
    return root


def collect(dataset):
    return list(dataset.as_numpy_iterator())


def test_digits_split_masks_and_labels():
    config = data_config(source="digits")
    train = collect(sources.make_source(config, "train", shuffle_files=False))
    test = collect(sources.make_source(config, "test", shuffle_files=False))
    assert len(train) == sources.num_examples(config, "train") == 1438
    assert len(test) == sources.num_examples(config, "test") == 359
    assert not {e["id"] for e in train} & {e["id"] for e in test}
    example = train[0]
    assert example["image"].shape == (32, 32, 3) and example["image"].dtype == np.uint8
    assert example["mask"].shape == (32, 32, 1) and set(np.unique(example["mask"])) <= {0, 255}
    images = np.stack([e["image"][..., 0] for e in train[:200]]).astype(float)
    masks = np.stack([e["mask"][..., 0] for e in train[:200]]) > 0
    assert images[masks].mean() > 150 > 30 > images[~masks].mean()  # mask = ink
    assert {int(e["label"]) for e in train} == set(range(10))


def test_synthetic_is_deterministic_with_exact_masks():
    config = data_config(source="synthetic", image_size=32, num_examples=12)
    a = collect(sources.make_source(config, shuffle_files=False))
    b = collect(sources.make_source(config, shuffle_files=False))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["image"], y["image"])
    for example in a:
        inside = example["mask"][..., 0] == 255
        assert 0.05 < inside.mean() < 0.5
        colours = example["image"][inside]
        assert np.all(colours == colours[0])  # the object is one flat colour
        assert set(np.unique(example["label"])) <= {0, 1}


def test_shuffle_is_deterministic_under_seed_and_shards_are_disjoint():
    config = data_config(source="digits", num_examples=40)
    order = lambda seed: [e["id"] for e in collect(sources.make_source(config, seed=seed))]  # noqa
    assert order(1) == order(1) and order(1) != order(2)
    shards = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(2, pipeline, 2)
        shards.append({e["id"] for e in collect(sources.make_source(config,
                                                                   input_context=context))})
    assert len(shards[0]) == len(shards[1]) == 20 and not shards[0] & shards[1]


def test_image_folder_formats_labels_and_ids(tmp_path):
    root = write_folder(tmp_path / "data" / "train")
    config = data_config(source="image_folder", data_dir=str(tmp_path / "data"), split="train")
    examples = {e["id"].decode(): e for e in collect(sources.make_source(config))}
    assert sorted(examples) == ["cat/a", "cat/b", "dog/c", "dog/d"]
    assert [int(examples[k]["label"]) for k in sorted(examples)] == [0, 0, 1, 1]
    for example in examples.values():
        assert example["image"].shape == (20, 24, 3) and example["image"].dtype == np.uint8
        assert "mask" not in example
    grey = examples["cat/b"]["image"]
    assert np.all(grey[..., 0] == grey[..., 1])
    np.testing.assert_array_equal(examples["dog/d"]["image"], rgb(3))  # RGBA -> RGB exactly
    assert sources.num_examples(config) == 4
    assert root.exists()


@pytest.mark.parametrize("bad_bytes,reason", [
    (lambda: encode(rgb(5), "JPEG")[:300], "truncated JPEG"),
    (lambda: encode(rgb(5))[:-20], "truncated PNG"),
    (lambda: b"", "empty file"),
    (lambda: b"hello, I am not an image", "not a JPEG"),
])
def test_image_folder_bad_files_error_or_skip(tmp_path, caplog, bad_bytes, reason):
    write_folder(tmp_path)
    bad = tmp_path / "cat" / "broken.jpg"
    bad.write_bytes(bad_bytes())
    config = data_config(source="image_folder", data_dir=str(tmp_path))
    with pytest.raises(readers.BadInputError) as error:
        sources.make_source(config)
    message = str(error.value)
    assert str(bad) in message and reason in message and "on_bad_image=skip" in message
    config.on_bad_image = "skip"
    with caplog.at_level(logging.WARNING):
        examples = collect(sources.make_source(config))
    assert len(examples) == 4 and "Skipping 1 bad" in caplog.text


def test_image_folder_masks_missing_and_wrong_size(tmp_path):
    write_folder(tmp_path / "images")
    mask_dir = tmp_path / "masks"
    for example_id in ("cat/a", "cat/b", "dog/c", "dog/d"):
        (mask_dir / example_id).parent.mkdir(parents=True, exist_ok=True)
        mask = np.zeros([20, 24], np.uint8)
        mask[5:15, 6:18] = 255
        (mask_dir / f"{example_id}.png").write_bytes(encode(mask))
    config = data_config(source="image_folder", data_dir=str(tmp_path / "images"),
                         mask_dir=str(mask_dir))
    examples = collect(sources.make_source(config))
    assert all(e["mask"].shape == (20, 24, 1) for e in examples)
    assert all(e["mask"][10, 10, 0] == 255 and e["mask"][0, 0, 0] == 0 for e in examples)
    (mask_dir / "dog" / "c.png").unlink()
    (mask_dir / "cat" / "b.png").write_bytes(encode(np.zeros([10, 24], np.uint8)))
    with pytest.raises(readers.BadInputError) as error:
        sources.make_source(config)
    message = str(error.value)
    assert "missing mask for id 'dog/c'" in message
    assert "mask size (10, 24) != image size (20, 24) for id 'cat/b'" in message
    config.on_bad_image = "skip"
    assert sorted(e["id"].decode() for e in collect(sources.make_source(config))) == [
        "cat/a", "dog/d"]


def test_image_size_from_headers():
    assert image_checks.image_size_from_bytes(encode(rgb(0, 17, 29), "JPEG")) == (17, 29)
    assert image_checks.image_size_from_bytes(encode(rgb(0, 17, 29))) == (17, 29)


def write_tfrecords(directory, examples, num_shards=2):
    paths = []
    for shard in range(num_shards):
        path = directory / f"data-{shard:05d}-of-{num_shards:05d}.tfrecord"
        with tf.io.TFRecordWriter(str(path)) as writer:
            for example in examples[shard::num_shards]:
                writer.write(tfrecord_format.encode_example(**example))
        paths.append(path)
    return str(directory / "data-*.tfrecord")


def tfrecord_examples(n=6, with_masks=True):
    out = []
    for i in range(n):
        mask = np.zeros([20, 24, 1], np.uint8)
        mask[4:12] = 255
        out.append({"image": encode(rgb(i), "JPEG" if i % 2 else "PNG"), "example_id": f"ex{i}",
                    "label": i % 3,
                    "mask": tfrecord_format.encode_mask_png(mask) if with_masks else b""})
    return out


def test_tfrecord_with_and_without_masks(tmp_path):
    pattern = write_tfrecords(tmp_path, tfrecord_examples())
    config = data_config(source="tfrecord", data_dir=pattern)
    examples = collect(sources.make_source(config, seed=1))
    assert sorted(e["id"].decode() for e in examples) == [f"ex{i}" for i in range(6)]
    assert sources.num_examples(config) == 6
    for example in examples:
        assert example["image"].shape == (20, 24, 3) and example["mask"].shape == (20, 24, 1)
        assert int(example["label"]) == int(example["id"].decode()[2:]) % 3
        assert example["mask"][5, 0, 0] == 255 and example["mask"][15, 0, 0] == 0
    # Sharded between two input pipelines: disjoint halves.
    halves = [{e["id"] for e in collect(sources.make_source(
        config, input_context=tf.distribute.InputContext(2, p, 2)))} for p in range(2)]
    assert len(halves[0] | halves[1]) == 6 and not halves[0] & halves[1]
    plain = tmp_path / "plain"
    plain.mkdir()
    config = data_config(source="tfrecord", data_dir=write_tfrecords(plain, tfrecord_examples(
        with_masks=False)))
    assert all("mask" not in e for e in collect(sources.make_source(config)))


@pytest.mark.parametrize("corrupt,reason", [
    (lambda ex: ex.update(mask=b""), "missing mask"),
    (lambda ex: ex.update(image=ex["image"][:100]), "truncated"),
    (lambda ex: ex.update(mask=tfrecord_format.encode_mask_png(np.zeros([7, 7], np.uint8))),
     "mask size"),
])
def test_tfrecord_bad_examples_error_names_id_or_skip(tmp_path, corrupt, reason):
    examples = tfrecord_examples()
    corrupt(examples[3])
    config = data_config(source="tfrecord", data_dir=write_tfrecords(tmp_path, examples, 1))
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        collect(sources.make_source(config, shuffle_files=False))
    assert "ex3" in str(error.value) and reason in str(error.value)
    assert "on_bad_image=skip" in str(error.value)
    config.on_bad_image = "skip"
    ids = [e["id"].decode() for e in collect(sources.make_source(config, shuffle_files=False))]
    assert ids == ["ex0", "ex1", "ex2", "ex4", "ex5"]


def test_tfds_source_never_downloads_and_names_the_fix(tmp_path):
    """An unprepared TFDS dataset is an error naming `tfds build`, not a download attempt (which
    for imagenet2012 cannot work and fails deep inside TFDS)."""
    pytest.importorskip("tensorflow_datasets")
    config = data_config(source="tfds", tfds_name="mnist", split="train", num_examples=6,
                         data_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"no prepared split 'train'.*tfds build mnist"):
        sources.make_source(config, "train", seed=0)
    assert not any(tmp_path.rglob("*.tfrecord*"))  # nothing was downloaded or built


def test_tfds_source_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    config = data_config(source="tfds", tfds_name="mnist", split="train", num_examples=6)
    with tfds.testing.mock_data(num_examples=10):
        examples = collect(sources.make_source(config, seed=0))
    assert len(examples) == 6
    for example in examples:
        assert example["image"].shape == (28, 28, 3) and example["image"].dtype == np.uint8
        assert 0 <= int(example["label"]) < 10 and example["id"]


def test_unknown_source_and_bad_settings_fail_with_fix():
    with pytest.raises(ValueError, match="data.source"):
        sources.make_source(data_config(source="nope"))
    with pytest.raises(ValueError, match="on_bad_image"):
        sources.make_source(data_config(on_bad_image="ignore"))
    with pytest.raises(ValueError, match="data_dir"):
        sources.make_source(data_config(source="image_folder", data_dir="/does/not/exist"))
    with pytest.raises(ValueError, match="no TFRecord files"):
        sources.make_source(data_config(source="tfrecord", data_dir="/does/not/*.tfrecord"))


@pytest.mark.shared_data("imagenette")
def test_imagenette_folder(data_root):
    root = data_root / "imagenette"
    config = data_config(source="image_folder", data_dir=str(root), split="val", num_examples=20)
    examples = collect(sources.make_source(config))
    assert len(examples) == 20
    assert {int(e["label"]) for e in examples} <= set(range(10))
    assert len({int(e["label"]) for e in examples}) >= 5  # the subset spans the classes
    assert all(e["image"].ndim == 3 and e["image"].shape[-1] == 3 for e in examples)


def _jpeg_without(data, marker):
    """The JPEG without its segments of type `marker` (0xDB quantisation, 0xC0 frame header)."""
    out, offset = bytearray(data[:2]), 2
    while data[offset + 1] != 0xDA:
        length = int.from_bytes(data[offset + 2:offset + 4], "big")
        if data[offset + 1] != marker:
            out += data[offset:offset + 2 + length]
        offset += 2 + length
    return bytes(out + data[offset:])


@pytest.mark.parametrize("make,reason", [
    (lambda: _jpeg_without(encode(rgb(1), "JPEG"), 0xDB), "no quantisation table"),
    (lambda: _jpeg_without(encode(rgb(1), "JPEG"), 0xC0), "no frame header"),
    (lambda: encode(rgb(1), "JPEG")[:4] + b"\xff\xff" + encode(rgb(1), "JPEG")[6:],
     "corrupt JPEG header (segment at byte 2"),
    (lambda: (lambda png: png[:60] + bytes(8) + png[68:])(encode(rgb(2))), "fails its CRC"),
    (lambda: b"\x89PNG\r\n\x1a\n", "truncated PNG"),
    (lambda: encode(rgb(3), "TIFF"), "not a JPEG/PNG/GIF/BMP/WebP"),
])
def test_file_check_reads_the_structure_not_only_the_ends(tmp_path, make, reason):
    path = tmp_path / "x.jpg"
    path.write_bytes(make())
    found, size = image_checks.check_image_file(str(path))
    assert reason in found and size is None
    path.write_bytes(encode(rgb(4, 17, 29), "JPEG"))
    assert image_checks.check_image_file(str(path)) == ("", (17, 29))
    path.write_bytes(encode(rgb(4, 17, 29), "WEBP"))  # a valid image under a .jpg name
    assert image_checks.check_image_file(str(path))[0] == ""


def test_decoder_failures_name_the_input_or_are_logged_skips(tmp_path, capfd):
    # A JPEG without frame header passes the in-graph byte checks; only the decoder rejects it.
    examples = tfrecord_examples(with_masks=False)
    examples[2]["image"] = _jpeg_without(encode(rgb(2), "JPEG"), 0xC0)
    config = data_config(source="tfrecord", data_dir=write_tfrecords(tmp_path, examples, 1))
    with pytest.raises(tf.errors.InvalidArgumentError, match="cannot decode the TFRecord "
                       "example .*ex2.*on_bad_image=skip"):
        collect(sources.make_source(config, shuffle_files=False))
    config.on_bad_image = "skip"
    ids = [e["id"].decode() for e in collect(sources.make_source(config, shuffle_files=False))]
    assert ids == ["ex0", "ex1", "ex3", "ex4", "ex5"]
    assert "skipping bad example" in capfd.readouterr().err  # stderr: visible at any log level


def test_tfrecord_records_skipped_by_the_checks_do_not_shift_positions(tmp_path):
    examples = tfrecord_examples(n=12)
    examples[3]["image"] = examples[3]["image"][:50]  # truncated
    examples[7]["mask"] = tfrecord_format.encode_mask_png(np.zeros([7, 7], np.uint8))  # wrong size
    examples[8]["image"] = _jpeg_without(encode(rgb(8), "JPEG"), 0xC0)  # header unreadable
    config = data_config(source="tfrecord", data_dir=write_tfrecords(tmp_path, examples, 3),
                         on_bad_image="skip", shuffle_buffer=4)
    stream = [e["id"] for e in sources.example_stream(config, seed=1).take(27)
              .as_numpy_iterator()]
    assert set(stream) == {f"ex{i}".encode() for i in range(12) if i not in (3, 7, 8)}
    resumed = [e["id"] for e in sources.example_stream(config, seed=1, start_position=11)
               .take(16).as_numpy_iterator()]
    assert resumed == stream[11:]


def test_empty_tfrecord_stream_is_refused(tmp_path):
    examples = tfrecord_examples(n=2)
    for example in examples:
        example["image"] = b"not an image"
    config = data_config(source="tfrecord", data_dir=write_tfrecords(tmp_path, examples, 1),
                         on_bad_image="skip")
    with pytest.raises(readers.BadInputError, match="no valid example"):
        sources.example_stream(config, seed=0)
