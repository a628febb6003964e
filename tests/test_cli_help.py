"""Every command's --help (exit 0, own flags first, positionals, how to list config fields),
--print_config, and each command-line mistake as one short message with exit 2, before
TensorFlow starts."""

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

COMMANDS = {  # module -> (a flag of its own, a positional it documents or "")
    "pretrain": ("--workdir", ""),
    "eval": ("--output_dir", "<protocol>"),
    "linear_eval": ("--output_dir", ""),
    "finetune": ("--output_dir", ""),
    "transfer": ("--output_dir", ""),
    "robustness": ("--output_dir", ""),
    "backgrounds": ("--output_dir", ""),
    "supervised": ("--output_dir", ""),
    "analysis": ("--encoders", ""),
    "export": ("--base_path", ""),
    "serving_client": ("--server", "<image>"),
    "saliency": ("--stage", ""),
    "import_checkpoint": ("--checkpoint", ""),
}
DEMO = "--config=experiments/configs/demo.py"


def _run(module, *args, timeout=120):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", f"relicv2_tf.cli.{module}", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


@pytest.mark.parametrize("module", sorted(COMMANDS))
def test_help_exits_0_with_the_commands_own_flags_first(module):
    own_flag, positional = COMMANDS[module]
    out = _run(module, "--help")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert own_flag in text and "Try --helpfull" not in text
    assert "--verbosity" not in text.split("absl's logging flags")[0]  # absl's flags not listed
    if "--strategy" in text:  # the shared distribution flags after the command's own
        assert text.index(own_flag) < text.index("--strategy")
    if positional:
        assert "positional arguments" in text and positional in text
    if module not in ("export", "serving_client", "import_checkpoint"):  # no config
        assert "--print_config" in text and "--config.<section>.<field>" in text


def test_print_config_lists_every_field_with_its_value():
    out = _run("pretrain", DEMO, "--config.training.max_steps=7", "--print_config")
    assert out.returncode == 0, out.stderr
    fields = dict((k.strip(), v) for k, v in (line.split(" = ", 1)
                                               for line in out.stdout.splitlines()))
    assert fields["training.max_steps"] == "7" and fields["data.source"] == "'digits'"
    assert "evaluation.online_probe" in fields and "model.depth" in fields


@pytest.mark.parametrize("args,message", [
    ([DEMO, "--config.training.max_stpes=5", "--workdir=W"], "Did you mean training.max_steps?"),
    ([DEMO, "--config.trainig.batch_size=5", "--workdir=W"], "Did you mean training.batch_size?"),
    (["--config=experiments/configs/no_such.py", "--workdir=W"],
     "--config=experiments/configs/no_such.py: no such file"),
    (["--config=experiments/configs/linear_eval_demo.py", "--workdir=W"],
     "is not a pretraining config"),
    ([DEMO, "--workdir=FILE"], "is a file"),
    ([DEMO, "--no_such_flag=1", "--workdir=W"], "Unknown command line flag 'no_such_flag'"),
    ([DEMO, "--config.training.max_steps=abc", "--workdir=W"], "max_steps"),
    ([DEMO], "needs --config=<file> and --workdir=<dir>"),
    ([DEMO, "--workdir=W", "extra"], "unexpected arguments"),
])
def test_pretrain_mistakes_are_one_line_and_exit_2_before_tensorflow(tmp_path, args, message):
    (tmp_path / "FILE").write_text("")
    args = [a.replace("=W", f"={tmp_path / 'run'}").replace("=FILE", f"={tmp_path / 'FILE'}")
            for a in args]
    started = time.time()
    out = _run("pretrain", *args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert message in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) <= 2, out.stderr
    assert "Traceback" not in out.stderr
    assert time.time() - started < 20  # no TensorFlow start-up (seconds) before the check
    assert not (tmp_path / "run").exists()


def test_eval_without_a_protocol_names_them():
    out = _run("eval", "--config=experiments/configs/linear_eval_demo.py", "--output_dir=x")
    assert out.returncode == 2 and "linear | finetune" in out.stderr


def test_eval_config_typo_suggests_the_field():
    out = _run("linear_eval", "--config=experiments/configs/linear_eval_demo.py",
               "--config.encoder_dri=x", "--output_dir=x")
    assert out.returncode == 2 and "Did you mean encoder_dir?" in out.stderr, out.stderr


def test_client_checks_its_arguments_before_importing_tensorflow(tmp_path):
    started = time.time()
    out = _run("serving_client", "--server=localhost:1")
    assert out.returncode == 2 and "needs one or more image files" in out.stderr
    out = _run("serving_client", "--server=localhost:1", str(tmp_path / "missing.jpg"))
    assert out.returncode == 2 and "missing.jpg" in out.stderr
    assert time.time() - started < 10, "relicv2-client started TensorFlow before its checks"


def test_a_lost_worker_is_one_line_and_exit_2(capsys):
    """Every command's error path (`common.exit_on_error`, the default errors) turns a
    multi-worker job's lost worker into one line naming the fix, as it does bad input."""
    from relicv2_tf import distribute
    from relicv2_tf.cli import common

    with pytest.raises(SystemExit) as exit_info:
        with common.exit_on_error("linear-eval"):
            raise distribute.WorkerLostError("the job lost a worker; restart every worker.")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["relicv2-linear-eval: the job lost a worker; restart every worker."]
