"""Config files as the command line sees them, without TensorFlow: load, list, check, compare.

Every function here runs before TensorFlow starts (a command checks its arguments in well under a
second): `load_config_file` reads an `experiments/configs/*.py` file, `flatten` lists its fields
as dotted keys (`training.max_steps`), `unknown_override` finds a misspelt `--config.<key>` and
the field it probably meant, `missing_sections` tells a linear-eval config from a pretraining one,
and `config_changes` compares a workdir's saved config with a new one (the resume guard of
`train.pretrain`).
"""

from __future__ import annotations

import difflib
import json
import os
import runpy

# Config fields that change what a run computes (model, data, optimisation) are guarded on
# resume; these only change how the run is watched, saved or fed, so a resumed run may change
# them freely.
RESUME_FREE_KEYS = (
    "training.checkpoint_every_steps", "training.keep_checkpoints", "training.log_every_steps",
    "training.image_summary_every_steps", "training.steps_per_execution",
    "data.tf_data_service_address", "data.shuffle_buffer", "data.cache",
)
RESUME_FREE_PREFIXES = ("evaluation.knn_",)
# Changes a resumed run accepts only when named in `allow_changes` (--allow_config_change): they
# change the run's course from the checkpoint on, which is what the user may want (train longer,
# move the data), but never silently.
RESUME_ALLOWED_WITH_FLAG = (
    "training.max_steps", "training.num_epochs", "training.on_nonfinite",
    "training.max_consecutive_nonfinite", "training.deterministic", "training.jit_compile",
    "data.data_dir", "data.on_bad_image",
)


def load_config_file(spec: str):
    """`get_config(*args)` of a config file `path[:arg,...]` (as ml_collections' config_flags
    calls it); raises FileNotFoundError / ValueError with the file named."""
    path, _, args = spec.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--config={spec}: no such file. Configs are Python files under "
                                "experiments/configs/ (e.g. --config=experiments/configs/demo.py).")
    try:
        namespace = runpy.run_path(path)
    except Exception as error:  # the file itself is broken: say where
        raise ValueError(f"--config={path} could not be loaded: {type(error).__name__}: "
                         f"{error}") from error
    if "get_config" not in namespace:
        raise ValueError(f"--config={path} defines no get_config(); a config file returns its "
                         "ConfigDict from get_config().")
    return namespace["get_config"](*([args] if args else []))


def flatten(config, prefix: str = "") -> dict:
    """{dotted key: value} of every leaf field, in the config's order."""
    items = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if hasattr(value, "items"):
            items.update(flatten(value, name + "."))
        else:
            items[name] = value
    return items


def format_config(config) -> str:
    """One `key = value` line per field (what --print_config prints)."""
    fields = flatten(config)
    width = max((len(k) for k in fields), default=0)
    return "\n".join(f"{key:<{width}} = {value!r}" for key, value in fields.items())


def suggest(key: str, known) -> str:
    """` Did you mean <closest>?` or ``."""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    if not close:  # a misspelt leaf under the right section: compare the last part only
        leaf = key.rsplit(".", 1)[-1]
        by_leaf = {k.rsplit(".", 1)[-1]: k for k in known}
        close = [by_leaf[m] for m in difflib.get_close_matches(leaf, list(by_leaf), n=1)]
    return f" Did you mean {close[0]}?" if close else ""


def override_keys(argv) -> list:
    """The `<key>` of every `--config.<key>=...` / `--config.<key> ...` argument."""
    keys = []
    for arg in argv:
        if arg.startswith("--config."):
            keys.append(arg[len("--config."):].split("=", 1)[0])
    return keys


def unknown_override(config, argv):
    """The first `--config.<key>` of `argv` that is not a field of `config` and the message
    naming the closest field, or None when every override names a field."""
    known = flatten(config)
    sections = {k.rsplit(".", i)[0] for k in known for i in range(1, k.count(".") + 1)}
    for key in override_keys(argv):
        if key not in known and key not in sections:
            return key, (f"--config.{key}: the config has no field {key!r}."
                         f"{suggest(key, known)} (--print_config lists every field.)")
    return None


def missing_sections(config, required) -> list:
    """Top-level keys of `required` that `config` lacks (e.g. a linear-eval config given to
    pretraining has no `training`)."""
    return [key for key in required if key not in config]


def _as_json(value):
    return json.loads(json.dumps(value, default=str))


def config_changes(saved: dict, config) -> dict:
    """{dotted key: (saved value, new value)} of every field that differs between a saved
    config.json (parsed) and `config` (tuples and lists compare equal)."""
    new = _as_json(flatten(config))
    old = flatten(saved)
    keys = list(dict.fromkeys([*old, *new]))
    missing = "<absent>"
    return {k: (old.get(k, missing), new.get(k, missing)) for k in keys
            if _as_json(old.get(k, missing)) != new.get(k, missing)}


def guarded_changes(changes: dict, allow_changes=()) -> tuple:
    """Splits `config_changes` into (refused, allowed): free keys and the ones named in
    `allow_changes` are allowed; everything else that changes the model, data or optimisation
    is refused."""
    refused, allowed = {}, {}
    for key, change in changes.items():
        free = key in RESUME_FREE_KEYS or key.startswith(RESUME_FREE_PREFIXES)
        (allowed if free or key in allow_changes else refused)[key] = change
    return refused, allowed


def resume_guard_message(workdir: str, refused: dict) -> str:
    lines = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in refused.items())
    flaggable = [k for k in refused if k in RESUME_ALLOWED_WITH_FLAG]
    fix = "Start a new run in another --workdir"
    if flaggable and len(flaggable) == len(refused):
        fix += (", or continue this one with the change: "
                f"--allow_config_change={','.join(flaggable)}")
    elif flaggable:
        fix += (f"; only {', '.join(flaggable)} may change on resume "
                "(--allow_config_change=<keys>)")
    return (f"--workdir={workdir} holds a run started with another config ({lines}); resuming it "
            f"would mix two runs. {fix}.")


def check_resume(saved: dict, config, workdir: str, allow_changes=()):
    """Raises ValueError when `config` differs from a workdir's saved config in a key that
    changes the model, data or optimisation and is not named in `allow_changes`. A key the saved
    config lacks (a field added to the code since) counts as its default value."""
    from relicv2_tf import config as config_lib

    defaults = flatten(config_lib.get_default_config())
    changes = config_changes(saved, config)
    for key, (old, new) in list(changes.items()):
        if old == "<absent>" and (key not in defaults or _as_json(defaults[key]) == new):
            del changes[key]
    unknown = [k for k in allow_changes if k not in RESUME_ALLOWED_WITH_FLAG]
    if unknown:
        raise ValueError(f"--allow_config_change={','.join(unknown)}: only "
                         f"{', '.join(RESUME_ALLOWED_WITH_FLAG)} may change on resume.")
    refused, _ = guarded_changes(changes, allow_changes)
    if refused:
        raise ValueError(resume_guard_message(workdir, refused))
