"""The Imagenette benchmark protocol: every cell is a valid config on the same budget, and the
runner's table aggregates seeds correctly (experiments/imagenette64.py)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from experiments import imagenette64 as runner
from experiments.configs import common as configs_common
from experiments.configs import imagenette64
from relicv2_tf import config as config_lib

SPECS = [cell for cell, _ in runner.CELLS if cell != "supervised"]


@pytest.fixture
def generated_imagenette(tmp_path, monkeypatch):
    """A data root whose imagenette/ holds a few generated images per split and class (the
    real folder's layout), so the cells validate on a clone without ../shared."""
    for split in ("train", "val"):
        for name in ("n01440764", "n02102040"):
            folder = tmp_path / "imagenette" / split / name
            folder.mkdir(parents=True)
            for i in range(2):
                pixels = np.full((40, 48, 3), 60 * i + 40, np.uint8)
                Image.fromarray(pixels).save(folder / f"{name}_{i}.JPEG")
    monkeypatch.setenv(configs_common.DATA_ROOT_ENV, str(tmp_path))
    return tmp_path / "imagenette"


@pytest.mark.parametrize("spec", SPECS)
def test_every_cell_is_a_valid_config_on_the_shared_budget(spec, generated_imagenette):
    config = imagenette64.get_config(spec)
    assert config.data.data_dir == str(generated_imagenette)  # read at get_config time
    config_lib.validate(config)
    for key, value in imagenette64.SHARED.items():
        section, name = key.split(".")
        assert config[section][name] == value, (spec, key)
    method = spec.split(",")[0]
    assert config.method == method and config.data.augmentation == method  # its own table
    assert bool(config.data.mask_dir) == runner.uses_masks(spec)
    assert (config.data.mask_apply_prob > 0) == (method == "relicv2" and runner.uses_masks(spec))
    if spec == "relicv2,placebo":
        assert config.data.mask_dir == imagenette64.PLACEBO_MASK_DIR
    if spec == "relicv2,2views":
        assert (config.data.num_large_views, config.data.num_small_views) == (2, 0)
    from relicv2_tf.evaluation import knn_report
    knn_data = knn_report.labelled_data_config(config)  # the monitor reads Imagenette
    assert (knn_data.source, knn_data.data_dir) == ("image_folder", str(generated_imagenette))


@pytest.mark.shared_data("imagenette")
def test_the_real_imagenette_matches_the_protocol_constants(data_root):
    """TRAIN_EXAMPLES (the budget's steps per epoch) is the real train split's size, and the
    cells validate on the real folder too."""
    train = data_root / "imagenette" / "train"
    count = sum(1 for path in train.glob("*/*") if path.is_file())
    assert count == imagenette64.TRAIN_EXAMPLES
    config_lib.validate(imagenette64.get_config("relicv2"))


def test_swav_cell_uses_its_queue_and_the_authors_collapse_workaround():
    """SwAV's small-batch recipe: the queue starts inside the run; epsilon 0.03 (swav README,
    'loss stuck at ln(nmb_prototypes)'), 3,000 prototypes as in the paper (docs/RECIPES.md)."""
    config = imagenette64.get_config("swav")
    assert 0 < config.loss.queue_start_epochs < config.training.num_epochs
    assert config.loss.epsilon == 0.03 and config.loss.num_prototypes == 3000


def test_supervised_cell_has_the_same_budget():
    config = imagenette64.get_config("supervised")
    assert config.supervised.num_epochs == imagenette64.EPOCHS
    assert config.supervised.batch_size == imagenette64.BATCH_SIZE
    assert config.supervised.image_size == imagenette64.SHARED["data.image_size"]
    assert config.model.width_multiplier == imagenette64.SHARED["model.width_multiplier"]


def test_bad_specs_are_refused():
    with pytest.raises(ValueError, match="not one of"):
        imagenette64.get_config("dino")
    with pytest.raises(ValueError, match="nomask"):
        imagenette64.get_config("byol,nomask")
    with pytest.raises(ValueError, match="bg_rm or bg_random"):
        imagenette64.get_config("byol,bg_swaps")


def test_table_gives_mean_and_spread_over_the_seeds_done(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "ROOT", str(tmp_path))
    monkeypatch.setattr(runner, "RECORDS_DIR", str(tmp_path / "records"))
    for seed, (knn, linear) in enumerate([(0.40, 0.50), (0.44, 0.54)]):
        directory = tmp_path / "byol" / f"seed{seed}"
        for name, payload in [
                ("knn_eval.json", {"pretrained_top1": knn}),
                ("linear/linear_eval.json", {"metrics": {"top1": linear}}),
                ("backgrounds/backgrounds.json", {"metrics": {
                    "original": 0.5, "only_fg": 0.4, "mixed_same": 0.45, "mixed_rand": 0.35,
                    "bg_gap": 0.10}}),
                ("wall_seconds.json", {"train": 600.0 * (seed + 1)})]:
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            (directory / name).write_text(json.dumps(payload))
        assert runner.cell_results("byol", seed) is None  # no record yet
        record = runner.finish_record("byol", seed)
        assert record["knn"] == knn and record["seed"] == seed and record["knn_curve"] == []
        assert runner.cell_results("byol", seed) == json.loads(json.dumps(record))
    assert runner.finish_record("relicv2", 0) is None  # nothing written: no record
    assert sorted(p.name for p in (tmp_path / "records").iterdir()) == [
        "byol_seed0.json", "byol_seed1.json"]
    rows = {row.split("|")[1].strip(): row for row in runner.table_rows()}
    cells = [c.strip() for c in rows["byol"].split("|")[1:-1]]
    assert cells[1] == "2 / 3"
    assert cells[2] == "42.0 ± 2.8" and cells[3] == "52.0 ± 2.8"  # sample std of 40, 44
    assert cells[7] == "10.0 ± 0.0" and cells[10] == "15 ± 7"  # BG-Gap; minutes: 10 and 20
    assert cells[8] == cells[9] == "-"  # no grey variants in these records
    assert "0 / 5" in rows["relicv2"]


def fake_runner(tmp_path, monkeypatch, cells, saliency_fails=False):
    """The runner with its jobs replaced by recorders: returns the list of calls it makes.
    The fake saliency stage writes the mask folder's done.json, or fails half-way (mask files,
    no done.json)."""
    calls = []
    monkeypatch.setattr(runner, "RECORDS_DIR", str(tmp_path / "records"))
    monkeypatch.setattr(runner.imagenette64, "MASK_DIR", str(tmp_path / "masks"))
    for name in ("train", "evaluate", "finish_record"):
        monkeypatch.setattr(runner, name, lambda c, s, name=name: calls.append((name, c, s)))

    def saliency(source):
        calls.append(("saliency", *source))
        (tmp_path / "masks").mkdir()
        if saliency_fails:
            raise RuntimeError("dev-set measurement failed")
        (tmp_path / "masks" / "done.json").write_text("{}")

    monkeypatch.setattr(runner, "saliency", saliency)
    monkeypatch.setattr(runner, "write_table", lambda: None)
    monkeypatch.setattr(runner, "CELLS", cells)
    (tmp_path / "records").mkdir()
    return calls


def test_runner_skips_recorded_runs_and_remakes_masks_from_the_bootstrap(tmp_path, monkeypatch):
    """A fresh session (no runs/, records committed) trains only what has no record; without
    masks, the bootstrap trains again (its encoder feeds the saliency network) but is not
    re-evaluated."""
    calls = fake_runner(tmp_path, monkeypatch, [("byol", 1), ("moco_v2", 1), ("relicv2", 1)])
    for done in ("byol_seed0.json", "moco_v2_seed0.json"):
        (tmp_path / "records" / done).write_text("{}")
    runner.run_all(deadline=float("inf"), workers=1)
    assert calls == [("train", "byol", 0), ("saliency", "byol", 0), ("train", "relicv2", 0),
                     ("evaluate", "relicv2", 0), ("finish_record", "relicv2", 0)]
    calls.clear()  # masks of this session exist now
    runner.run_all(deadline=float("inf"), workers=1)
    assert ("train", "byol", 0) not in calls and ("saliency", "byol", 0) not in calls


def test_failed_masks_start_no_mask_run_and_no_evaluation(tmp_path, monkeypatch):
    """Mask files of a saliency stage that failed half-way are not used: without its done.json
    no run that needs masks starts and nothing is evaluated (runs without masks still train)."""
    calls = fake_runner(tmp_path, monkeypatch, [("byol", 1), ("relicv2", 1), ("simclr", 1)],
                        saliency_fails=True)
    runner.run_all(deadline=float("inf"), workers=1)
    assert calls == [("train", "byol", 0), ("saliency", "byol", 0), ("train", "simclr", 0)]


def test_jobs_import_this_checkout(tmp_path):
    """Scripts the runner starts (benchmarks/saliency_quality.py) import the package of the
    checkout the runner belongs to, installed or not."""
    import subprocess
    import sys

    env = runner._env()
    assert env["PYTHONPATH"].split(os.pathsep)[0] == runner.REPO
    out = subprocess.run([sys.executable, "-c", "import relicv2_tf; print(relicv2_tf.__file__)"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == os.path.join(runner.REPO, "relicv2_tf", "__init__.py")


def test_the_headline_runs_first_seed_by_seed_then_the_placebo():
    order = runner.work_items(runner.BOOTSTRAP)
    assert order[0] == runner.BOOTSTRAP and len(order) == len(set(order))
    assert sorted(order) == sorted((c, s) for c, n in runner.CELLS for s in range(n))
    headline = order[1:11]
    assert headline == [(cell, s) for s in range(5) for cell in ("relicv2,nomask", "relicv2")]
    assert order[11:16] == [("relicv2,placebo", s) for s in range(5)]
    planned = {cell for group in runner.PRIORITY for cell in group}
    first = [i for i, (cell, _) in enumerate(order) if cell in planned]
    assert first == list(range(1, 1 + len(first)))  # before the other cells' missing seeds


def test_placebo_masks_are_centred_boxes_of_each_masks_area(tmp_path):
    from PIL import Image

    for name, (top, height) in {"a/x": (0, 10), "b/y": (5, 20)}.items():
        mask = np.zeros((40, 60), np.uint8)
        mask[top:top + height, 3:30] = 255  # off-centre objects
        (tmp_path / "masks" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(tmp_path / "masks" / f"{name}.png")
    runner.placebo_masks(str(tmp_path / "masks"), str(tmp_path / "placebo"))
    for name, height in {"a/x": 10, "b/y": 20}.items():
        box = np.asarray(Image.open(tmp_path / "placebo" / f"{name}.png"))
        area = height * 27 / (40 * 60)
        assert set(np.unique(box)) == {0, 255}
        assert abs((box > 0).mean() - area) < 0.02  # the same area, up to rounding the sides
        rows, cols = np.nonzero(box)
        assert abs((rows.min() + rows.max()) / 2 - 19.5) <= 1  # centred
        assert abs((cols.min() + cols.max()) / 2 - 29.5) <= 1
    done = json.loads((tmp_path / "placebo" / "done.json").read_text())
    assert done["count"] == 2 and done["id"] != done["from"]


def test_knn_curve_reads_the_monitor_from_tensorboard(tmp_path, monkeypatch):
    """The learning curve comes from the `epoch_knn_top1` summaries Keras writes (one per
    checkpoint interval, NaN where the monitor did not run)."""
    import tensorflow as tf

    monkeypatch.setattr(runner, "ROOT", str(tmp_path))
    writer = tf.summary.create_file_writer(
        os.path.join(runner.run_dir("byol", 0), "tensorboard", "train"))
    with writer.as_default():
        for step, value in enumerate([float("nan"), float("nan"), 0.25, float("nan"), 0.5]):
            tf.summary.scalar("epoch_knn_top1", value, step=step)
    writer.close()
    epochs = [(s + 1) * 73 * 128 / 9469 for s in (2, 4)]  # steps x batch / train images
    assert runner.knn_curve("byol", 0) == [(epochs[0], 0.25), (epochs[1], 0.5)]
    # the end-of-run kNN closes the curve at the last step (step 1,109 = 15 x 9,469 // 128)
    assert runner.knn_curve("byol", 0, 0.6) == [(epochs[0], 0.25), (epochs[1], 0.5), (15.0, 0.6)]
    assert runner.knn_curve("swav", 0, 0.6) == []  # no monitor (the supervised baseline)


def test_train_time_sums_the_segments_tensorboard_logged(tmp_path, monkeypatch):
    """A run resumed once has two event files; its training time is the sum of both spans
    (the runner's clock misses a segment the runner itself was stopped in)."""
    import time

    import tensorflow as tf

    monkeypatch.setattr(runner, "ROOT", str(tmp_path))
    directory = os.path.join(runner.run_dir("byol", 0), "tensorboard", "train")
    for segment in range(2):
        writer = tf.summary.create_file_writer(directory, filename_suffix=f".{segment}")
        with writer.as_default():
            time.sleep(1.0)
            tf.summary.scalar("epoch_loss", 1.0, step=segment)
        writer.close()
    seconds = runner.train_seconds_logged("byol", 0)
    assert 2.0 <= seconds < 10.0, seconds
    assert runner.train_seconds_logged("simclr", 0) == 0.0


def test_records_of_the_first_format_are_upgraded():
    """Records written before the curve format: x was the checkpoint interval (73 steps) and
    the end-of-run kNN was not on the curve."""
    old = {"knn": 0.37, "knn_curve": [[3.0, 0.30], [15.0, 0.366]]}
    new = runner.upgrade_curve(old)
    assert new["knn_curve"] == [(219 * 128 / 9469, 0.30), (1095 * 128 / 9469, 0.366),
                                (15.0, 0.37)]
    assert runner.upgrade_curve(new) == new and new["knn"] == 0.37
    assert runner.upgrade_curve({"knn": 0.7, "knn_curve": []})["knn_curve"] == []


def test_comparisons_pair_only_seeds_both_cells_have(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "RECORDS_DIR", str(tmp_path))
    metrics = dict(original=0.3, only_fg=0.1, mixed_same=0.3, mixed_rand=0.1, masks="m1")
    for cell, seed, knn, gap in [("byol", 0, 0.30, 0.20), ("byol", 1, 0.32, 0.22),
                                 ("byol,bg_rm", 0, 0.31, 0.18), ("byol,bg_rm", 2, 0.40, 0.1),
                                 ("relicv2", 0, 0.36, 0.2)]:
        path = runner.record_path(cell, seed)
        with open(path, "w") as f:
            json.dump(dict(metrics, knn=knn, linear=knn, bg_gap=gap), f)
    table = runner.comparison_table()
    rows = {tuple(c.strip() for c in row.split("|")[1:3]): [c.strip() for c in
                                                          row.split("|")[3:-1]]
            for row in table.splitlines() if row.startswith("| byol")}
    # BG_RM: only seed 0 is paired (seed 1 lacks BG_RM, seed 2 lacks BYOL): +1.0 kNN, -2.0 gap.
    assert rows[("byol,bg_rm - byol", "kNN")][:2] == ["1", "+1.0"]
    assert rows[("byol,bg_rm - byol", "BG-Gap")][:2] == ["1", "-2.0"]
    assert "No paired seeds yet: " in table and "relicv2 - relicv2,nomask" in table
    with open(runner.record_path("byol", 0), "w") as f:  # evaluated on another mask set
        json.dump(dict(metrics, knn=0.3, linear=0.3, bg_gap=0.2, masks="m2"), f)
    with pytest.raises(ValueError, match="different mask sets"):
        runner.comparison_table()
