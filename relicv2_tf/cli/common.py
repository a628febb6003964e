"""What every relicv2 command shares: its flags, defined when it starts, and the one error path.

Library code raises ValueError / FileNotFoundError with a message that names the fix (errors at
the boundary); a command prints it as one line, `relicv2-<command>: <message>`, on stderr and
exits with status 2 (`--verbosity=1` also logs the traceback). A training loop stopped by a
non-finite step (`optim/guard.py`) exits with status 3, as `relicv2-pretrain` does. Flags are
defined by a command's entry point, never at import, so importing a CLI module defines none.

The evaluation commands are one command, `relicv2-eval <protocol> --config=... --output_dir=...`
(`cli/eval.py`); `relicv2-linear-eval`, `relicv2-finetune`, ... are its aliases. Each calls
`relicv2_tf.evaluation.<protocol>.run(config, output_dir, strategy=..., progress=...)`.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import typing

from absl import app, flags, logging
from ml_collections import config_flags

EXIT_USAGE = 2
EXIT_NONFINITE = 3

# relicv2-eval's protocols: name (a module of relicv2_tf.evaluation) -> an example config.
PROTOCOLS = {
    "linear": "experiments/configs/linear_eval_imagenet.py",
    "finetune": "experiments/configs/finetune_imagenet_1pct.py",
    "supervised": "experiments/configs/supervised_imagenette.py",
    "transfer": "experiments/configs/transfer.py",
    "robustness": "experiments/configs/robustness.py",
    "backgrounds": "experiments/configs/backgrounds_imagenet9.py",
}


def fail(command: str, message, code: int = EXIT_USAGE) -> typing.NoReturn:
    """The one error exit: `relicv2-<command>: <message>` on stderr, then exit status `code`."""
    print(f"relicv2-{command}: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


@contextlib.contextmanager
def exit_on_error(command: str, errors: tuple = (ValueError, FileNotFoundError)):
    """Turns `errors` (and `guard.NonFiniteError`) raised inside the block into `fail`."""
    try:
        yield
    except errors as error:
        logging.debug("Traceback:", exc_info=True)
        fail(command, error)
    except RuntimeError as error:
        guard = sys.modules.get("relicv2_tf.optim.guard")  # loaded if a training loop raised
        if guard is None or not isinstance(error, guard.NonFiniteError):
            raise
        fail(command, error, EXIT_NONFINITE)


def reject_arguments(command: str, arguments):
    if arguments:
        fail(command, f"unexpected arguments {list(arguments)}: every option is a --flag.")


class ProtocolFlags(typing.NamedTuple):
    config: flags.FlagHolder
    output_dir: flags.FlagHolder
    progress: flags.FlagHolder


def define_protocol_flags(example_config: str) -> ProtocolFlags:
    """--config (locked: a misspelt --config.<key> stops the run), --output_dir, --progress, and
    the tf.distribute flags of `strategy_flags.py` (--strategy, --tpu, --num_cpu_replicas)."""
    importlib.import_module("relicv2_tf.cli.strategy_flags")  # importing it defines its flags
    return ProtocolFlags(
        config_flags.DEFINE_config_file("config", None, f"Config file, e.g. {example_config}.",
                                        lock_config=True),
        flags.DEFINE_string("output_dir", None, "Directory for results (and the checkpoints of "
                            "the protocols that train: rerunning resumes)."),
        flags.DEFINE_bool("progress", True, "Show progress bars."))


def run_protocol(command: str, protocol: str, protocol_flags: ProtocolFlags, **kwargs) -> dict:
    """Runs `relicv2_tf.evaluation.<protocol>.run` with the parsed flags (and `kwargs`), under
    the strategy the flags ask for, through the one error path."""
    config, output_dir = protocol_flags.config.value, protocol_flags.output_dir.value
    if config is None or not output_dir:
        fail(command, "needs --config=<file> and --output_dir=<dir>.")
    from relicv2_tf.cli import strategy_flags

    with exit_on_error(command, (ValueError, RuntimeError)):  # e.g. no TPU, no CPU split
        strategy = strategy_flags.strategy_from_flags()  # before any other TensorFlow call
    with exit_on_error(command):
        module = importlib.import_module(f"relicv2_tf.evaluation.{protocol}")
        return module.run(config, output_dir, strategy=strategy,
                          progress=protocol_flags.progress.value, **kwargs)


def protocol_command(command: str, protocol: str):
    """The entry point of `relicv2-<command>`, the alias of `relicv2-eval <protocol>`."""
    def entry_point():
        protocol_flags = define_protocol_flags(PROTOCOLS[protocol])

        def main(argv):
            reject_arguments(command, argv[1:])
            run_protocol(command, protocol, protocol_flags)
        app.run(main)
    return entry_point
