"""What every relicv2 command shares: its flags, defined when it starts, and the one error path.

Every command `relicv2-<command>` is a module of this package with the same three parts:
`define_flags()` defines its flags and returns them as a dict of absl FlagHolders;
`main(flag_values, argv)` reads only those and turns them into one library call; `run()`, the
console-script entry point (setup.py), calls `define_flags()` and then `run_app`. Importing a CLI
module therefore defines no flags (tests/test_cli_convention.py checks every module).

Library code raises ValueError / FileNotFoundError with a message that names the fix (errors at
the boundary); a command prints it as one line, `relicv2-<command>: <message>`, on stderr and
exits with status 2 (`--verbosity=1` also logs the traceback). A training loop stopped by a
non-finite step (`optim/guard.py`) exits with status 3, as `relicv2-pretrain` does. Every exit
goes through `fail` / `exit_on_error` / `run_app`: no CLI module calls `sys.exit` itself.

The evaluation commands are one command, `relicv2-eval <protocol> --config=... --output_dir=...`
(`cli/eval.py`); `relicv2-linear-eval`, `relicv2-finetune`, ... are its aliases. Each calls
`relicv2_tf.evaluation.<protocol>.run(config, output_dir, strategy=..., progress=...)`
through `run_protocol`.

`run_app` replaces absl's `app.run` for every command: `--help` prints the command's own flags
(exit 0), `--print_config` the resolved config, and a mistake on the command line (a missing
config file, a misspelt `--config.<key>`, a bad flag value) is one line and exit 2, found before
TensorFlow starts.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import typing

from absl import app, flags, logging
from ml_collections import config_flags

from relicv2_tf import distribute

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
def exit_on_error(command: str,
                  errors: tuple = (ValueError, FileNotFoundError, distribute.WorkerLostError)):
    """Turns `errors` (and `guard.NonFiniteError`) raised inside the block into `fail`; the
    default covers bad input and a multi-worker job that lost a worker (restart every worker)."""
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


def define_progress_flag() -> flags.FlagHolder:
    return flags.DEFINE_bool(
        "progress", None, "Interactive progress bar (--progress) or plain log lines "
        "(--noprogress); default: a bar only when stdout is a terminal.")


def progress_bar(progress_flag: flags.FlagHolder) -> bool:
    """--progress / --noprogress, or (unset) whether stdout is a terminal."""
    if progress_flag.value is not None:
        return bool(progress_flag.value)
    return sys.stdout.isatty()


# TensorFlow's start-up lines that say nothing about the run (written by its C++ libraries
# before its log level applies): dropped from stderr by `quiet_tensorflow_startup`.
STARTUP_NOISE = ("All log messages before absl::InitializeLog()", "oneDNN custom operations",
                 "Could not find cuda drivers", "failed call to cuInit", "cpu_feature_guard",
                 "rebuild TensorFlow with the appropriate compiler flags")


def quiet_tensorflow_startup():
    """Starts TensorFlow with its start-up noise (oneDNN, CPU features, cuInit on a machine
    without a GPU) filtered out of stderr, unless the user set TF_CPP_MIN_LOG_LEVEL; other
    lines written meanwhile are passed on. TensorFlow's Python INFO lines (checkpoint sharding)
    go below absl's threshold unless --verbosity asks for them. Call before TensorFlow starts."""
    import tempfile

    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # loads the device libraries (cuInit)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not any(noise in line for noise in STARTUP_NOISE):
                    sys.stderr.write(line)
    tf.get_logger().setLevel("WARNING")


def reject_arguments(command: str, arguments):
    if arguments:
        fail(command, f"unexpected arguments {list(arguments)}: every option is a --flag.")


def define_protocol_flags(example_config: str) -> dict:
    """--config (locked: a misspelt --config.<key> stops the run), --output_dir, --progress, and
    the tf.distribute flags of `strategy_flags.py` (--strategy, --tpu, --num_cpu_replicas)."""
    importlib.import_module("relicv2_tf.cli.strategy_flags")  # importing it defines its flags
    return {
        "config": config_flags.DEFINE_config_file(
            "config", None, f"Config file, e.g. {example_config}.", lock_config=True),
        "output_dir": flags.DEFINE_string(
            "output_dir", None, "Directory for results (and the checkpoints of the protocols "
            "that train: rerunning resumes)."),
        "progress": define_progress_flag(),
    }


def run_protocol(command: str, protocol: str, flag_values: dict, **kwargs) -> dict:
    """Runs `relicv2_tf.evaluation.<protocol>.run` with the flags of `define_protocol_flags`
    (and `kwargs`), under the strategy the flags ask for, through the one error path."""
    config, output_dir = flag_values["config"].value, flag_values["output_dir"].value
    if config is None or not output_dir:
        fail(command, "needs --config=<file> and --output_dir=<dir>.")
    from relicv2_tf.cli import strategy_flags

    with exit_on_error(command, (ValueError, RuntimeError)):  # e.g. no TPU, no CPU split
        strategy = strategy_flags.strategy_from_flags()  # before any other TensorFlow call
    with exit_on_error(command):
        module = importlib.import_module(f"relicv2_tf.evaluation.{protocol}")
        return module.run(config, output_dir, strategy=strategy,
                          progress=progress_bar(flag_values["progress"]), **kwargs)


# ---------------------------------------------------------------------------- help and parsing
HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "-helpshort", "-?")


def _own_flags():
    """The flags of this command (not absl's logging / help flags): its own first, then the
    shared tf.distribute flags."""
    own, shared = [], []
    for module, module_flags in flags.FLAGS.flags_by_module_dict().items():
        if not module.startswith("absl."):
            target = shared if module.endswith("strategy_flags") else own
            target += [f for f in module_flags if f not in own + shared]
    return own + shared


def _flag_line(flag) -> str:
    enum_values = getattr(flag.parser, "enum_values", None)
    if flag.boolean:
        name = f"--[no]{flag.name}"
    elif flag.name == "config":
        name = "--config=<file.py>"
    else:
        kind = flag.parser.flag_type()
        kind = "|".join(enum_values) if enum_values else "a,b,..." if "list" in kind else kind
        name = f"--{flag.name}=<{kind}>"
    help_text = " ".join((flag.help or "").split())
    if enum_values and help_text.startswith("<"):  # absl prefixes the choices
        help_text = help_text.split(": ", 1)[-1]
    if flag.default is None or flag.name == "config":
        default = ""
    elif isinstance(flag.default, bool):
        default = f" (default: {str(flag.default).lower()})"
    else:
        default = f" (default: {flag.default!r})" if flag.default in ("", []) else (
            f" (default: {flag.default})")
    return f"  {name}\n      {help_text}{default}"


def command_help(command: str, doc: str, positional: str = "", config_example: str = "") -> str:
    lines = [(doc or f"relicv2-{command}").strip(), "", "flags:"]
    lines += [_flag_line(f) for f in _own_flags()]
    if positional:
        lines += ["", "positional arguments:", f"  {positional}"]
    if config_example:
        lines += ["", "config fields: every field of the config file is a flag, "
                  "--config.<section>.<field>=<value>; list them with their values:",
                  f"  relicv2-{command} --config={config_example} --print_config"]
    lines += ["", "absl's logging flags (--verbosity, --logtostderr, ...): --helpfull"]
    return "\n".join(lines)


def _check_config_arguments(command: str, argv, config_flag: str = "config"):
    """Before absl parses: the config file exists and loads, and every --config.<key> names a
    field (ml_collections would raise a long traceback for either)."""
    from relicv2_tf import config_tools

    specs = [a.split("=", 1)[1] if "=" in a else b for a, b in zip(argv, [*argv[1:], ""])
             if a.startswith(f"--{config_flag}=") or a == f"--{config_flag}"]
    if not specs:
        return
    try:
        config = config_tools.load_config_file(specs[-1])
    except (FileNotFoundError, ValueError) as error:
        fail(command, error)
    unknown = config_tools.unknown_override(config, argv)
    if unknown:
        fail(command, unknown[1])


def _print_and_exit(text: str) -> typing.NoReturn:
    """Prints `text` and exits 0, also when the reader stops early (`| head`)."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)


def run_app(command: str, main, doc: str, *, positional: str = "", config_example: str = "",
            start_tensorflow: bool = True):
    """absl's `app.run(main)` with the command line checked the way a user needs: --help (own
    flags first, exit 0), --print_config (the resolved config, exit 0) and every mistake as one
    line, exit 2 (`fail`). `config_example` is shown in the help of commands that take a config.
    `start_tensorflow`: start TensorFlow quietly before `main` (False: `main` calls
    `quiet_tensorflow_startup` itself, after what must precede TensorFlow)."""
    argv = list(sys.argv)
    if any(a in HELP_FLAGS for a in argv[1:]):
        _print_and_exit(command_help(command, doc, positional, config_example))
    print_config = "--print_config" in argv[1:]
    if print_config:
        argv.remove("--print_config")
    if "config" in flags.FLAGS:
        _check_config_arguments(command, argv)

    def parse(args):
        try:
            return flags.FLAGS(args)
        except flags.Error as error:
            fail(command, f"{str(error).splitlines()[0]} (relicv2-{command} --help lists the "
                 "flags).")
        except Exception as error:  # noqa: BLE001  e.g. a config value of the wrong type
            message = [line for line in str(error).splitlines() if line.strip()]
            fail(command, f"{type(error).__name__}: {message[-1] if message else error}")

    def main_with_print_config(args):
        if print_config:
            config = flags.FLAGS["config"].value if "config" in flags.FLAGS else None
            if config is None:
                fail(command, "--print_config needs --config=<file>.")
            from relicv2_tf import config_tools

            _print_and_exit(config_tools.format_config(config))
        if not any(a.startswith(("--verbosity", "-v=", "--v=")) for a in argv[1:]):
            logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines (checkpointing)
        if start_tensorflow:
            quiet_tensorflow_startup()
        return main(args)

    app.run(main_with_print_config, argv=argv, flags_parser=parse)
