"""docs/RECIPES.md documents every key of every paper config: its value and its source.

Parsing only (no model is built): each "## experiments/configs/<module>[:<arg>].py" section holds a
`| key | value | source |` table; the config is imported, `get_config([arg])` flattened to dotted
keys, and every key must have a row whose value (a Python literal in backticks) equals the
config's and whose source starts with one label: "quoted: <paper> ..." (the value is written
there), "inferred: <from what, and why>", "code: <repository> ..." (the authors' code),
"assumed: <reason>", "operational: <what>" or "unused: <why>". The background variants
(`*_bg_*.py`) share one `| config | key | value | source |` table listing exactly the keys they
change with respect to their base config. The ReLICv2 flagship's pretraining keys whose numbers
the extracted text lost can never be `quoted:`.
"""

from __future__ import annotations

import ast
import functools
import importlib
import math
import re
import sys
import types
from pathlib import Path

import ml_collections
import pytest

from experiments.configs import common as configs_common

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "RECIPES.md"
CONFIG_DIR = REPO / "experiments" / "configs"

DATA_ROOT_PLACEHOLDER = "$RELICV2_DATA_ROOT"  # configs_common.data_root() in a value cell

# Configs that must have a section (the paper recipes); any other documented section is checked too.
DOCUMENTED_CONFIGS = (
    "relicv2_r50_imagenet", "byol", "moco_v2", "simclr", "swav",
    "linear_eval_imagenet", "finetune_imagenet_1pct", "finetune_imagenet_10pct", "transfer",
    "saliency_imagenet", "supervised_imagenette",
)
BACKGROUND_VARIANTS = tuple(sorted(p.stem for p in CONFIG_DIR.glob("*_bg_*.py")))

# A source cell starts with exactly one label. `quoted:` names the paper whose text writes the
# value (then section / table / appendix), `code:` the authors' repository (then file and flag);
# `inferred:` says from what the value is read and why, the others why there is no source.
PAPERS = ("ReLICv2 ", "BYOL ", "SimCLR ", "MoCo ", "MoCo-v2 ", "SwAV ", "Ryali et al.", "DeepUSPS")
REPOSITORIES = ("google-deepmind/relicv2 ", "deepmind-research/byol", "google-research/simclr ",
                "facebookresearch/moco ", "facebookresearch/swav ", "donnydonnyullrich/DeepUSPS ")
LABELS = {"quoted:": PAPERS, "code:": REPOSITORIES, "inferred:": None, "assumed:": None,
          "operational:": None, "unused:": None}

# Pretraining keys of the ReLICv2 flagship whose number the extracted ReLICv2 text lost (or never
# gives): docs/RECIPES.md, "What the ReLICv2 text lost". A value for them is read off a table or
# an ablation (`inferred:`), or taken from elsewhere (`assumed:` / `code:`), never `quoted:`.
FLAGSHIP = "relicv2_r50_imagenet"
RELICV2_LOST_KEYS = (
    "training.num_epochs",                     # B: 'we train our models for [lost] epochs'
    "training.batch_size",                     # B: 'a batch size of [lost]'
    "optimizer.warmup_epochs",                 # B: 'a warm-up period of [lost] epochs'
    "optimizer.base_learning_rate",            # B: none given; D.1 (JFT): lost
    "optimizer.weight_decay",                  # B: LARS details not given
    "optimizer.momentum",
    "optimizer.eeta",
    "optimizer.nesterov",
    "optimizer.exclude_from_weight_decay",
    "optimizer.exclude_from_layer_adaptation",
    "training.base_target_ema",                # D.1: lost; G.3: 'between [lost] and [lost]'
    "training.target_ema_schedule",            # G.3: the update formula was lost
    "loss.temperature",                        # D.1: lost
    "loss.contrast_scale",                     # D.1: lost
    "loss.alpha",                              # D.1: invariance scales lost
    "loss.num_negatives",                      # 2.1: 'a small number of points'
    "data.mask_apply_prob",                    # 2.2: 'with a small probability [lost]'; D.1
    "data.mask_min_fraction",                  # F.2: 'covers at least [lost] of the image'
)

HEADING = re.compile(r"^##\s+experiments/configs/(\w+)\.py(?::(\S+))?\s*$")
CONFIG_TABLE = ["key", "value", "source"]
VARIANT_TABLE = ["config", "key", "value", "source"]
FIX = f"fix {DOC.relative_to(REPO)}"


# ------------------------------------------------------------------------------- parsing
def _parse(text: str):
    """-> (sections {spec: [(line, cells)]}, variant rows [(line, cells)], problems [str])."""
    sections, variant_rows, problems = {}, [], []
    current, header = None, None
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("## "):
            match = HEADING.match(line)
            current = None
            if match:
                current = match.group(1) + (f":{match.group(2)}" if match.group(2) else "")
                if current in sections:
                    problems.append(f"line {number}: a second section for {current!r}; merge them")
                sections.setdefault(current, [])
            header = None
            continue
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = [cell.lower() for cell in cells]
            continue
        if set(line.replace(" ", "")) <= set("|-:"):
            continue  # the separator row
        if header == CONFIG_TABLE and current:
            rows = sections[current]
        elif header == VARIANT_TABLE:
            rows = variant_rows
        else:
            continue  # another table (e.g. the change log)
        if len(cells) != len(header):
            problems.append(f"line {number}: {len(cells)} cells, expected {len(header)} "
                            f"({' | '.join(header)}); a '|' inside a cell splits it")
            continue
        rows.append((number, cells))
    return sections, variant_rows, problems


def _load_doc():
    if not DOC.exists():
        return {}, [], [f"{DOC} does not exist"]
    return _parse(DOC.read_text(encoding="utf-8"))


SECTIONS, VARIANT_ROWS, PARSE_PROBLEMS = _load_doc()


def _unquote(cell: str, what: str, number: int):
    """`text` -> text; a cell not in backticks is reported."""
    if len(cell) >= 2 and cell[0] == "`" and cell[-1] == "`":
        return cell[1:-1], None
    return None, f"line {number}: the {what} cell {cell!r} must be in backticks"


def _literal(cell: str, number: int):
    text, problem = _unquote(cell, "value", number)
    if problem:
        return None, problem
    try:
        return ast.literal_eval(text), None
    except (ValueError, SyntaxError):
        return None, (f"line {number}: value {cell} is not a Python literal (write it as repr "
                      "prints it: 0.2, 'relicv2', (0.08, 1.0), True)")


def _label(source: str):
    return next((label for label in LABELS if source.startswith(label)), None)


def _source_problem(source: str):
    if not source:
        return "has no source"
    label = _label(source)
    if label is None:
        return (f"source {source[:60]!r}... must start with one of {tuple(LABELS)} "
                "('quoted: <paper, section>', 'inferred: <from what>', 'code: <repository, file, "
                "flag>', 'assumed: <reason>', 'operational: <what>', 'unused: <why>')")
    detail = source[len(label):].strip()
    if len(detail) < 3:
        return f"source {source!r} needs a reason or citation after '{label}'"
    names = LABELS[label]
    if names and not detail.startswith(names):
        return (f"source {source[:60]!r}... : after '{label}' name the "
                f"{'paper' if label == 'quoted:' else 'repository'} first (one of "
                f"{', '.join(n.strip() for n in names)})")
    return None


def _same(documented, actual) -> bool:
    """Equality of a documented literal and a config value: floats to 1e-12, lists == tuples,
    bools only equal bools."""
    if isinstance(documented, bool) or isinstance(actual, bool):
        return type(documented) is bool and type(actual) is bool and documented == actual
    if isinstance(documented, (int, float)) and isinstance(actual, (int, float)):
        return documented == actual or math.isclose(documented, actual, rel_tol=1e-12,
                                                    abs_tol=1e-12)
    if isinstance(documented, (list, tuple)) and isinstance(actual, (list, tuple)):
        return len(documented) == len(actual) and all(
            _same(d, a) for d, a in zip(documented, actual))
    return type(documented) is type(actual) and documented == actual


# ------------------------------------------------------------------------------- configs
def _flatten(config, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, (ml_collections.ConfigDict, dict)):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


# `experiments/configs/background_augmentations.py` imports one constant (BG_SWAPS_METHODS) from
# this module, which imports TensorFlow: ~10 s of CPU on the shared test machine, more than the
# rest of this file. Unless it is loaded already, the configs are read with a TensorFlow-free
# stand-in holding the module's literal constants, parsed from its source; everything imported
# meanwhile is dropped again, so later imports in the session get the real modules.
_BACKGROUND_MODULE = "relicv2_tf.data.background"


def _background_constants():
    stand_in = types.ModuleType(_BACKGROUND_MODULE)
    tree = ast.parse((REPO / "relicv2_tf" / "data" / "background.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id.isupper()):
            try:
                setattr(stand_in, node.targets[0].id, ast.literal_eval(node.value))
            except (ValueError, TypeError, SyntaxError):
                pass  # not a literal: a config importing it falls back to the real module
    return stand_in


def _get_config(module: str, arg: str):
    config_module = importlib.import_module(f"experiments.configs.{module}")
    return config_module.get_config(arg) if arg else config_module.get_config()


@functools.lru_cache(maxsize=None)
def _config(spec: str) -> dict:
    """Flattened `get_config([arg])` of experiments/configs/<module>[:<arg>]."""
    module, _, arg = spec.partition(":")
    if _BACKGROUND_MODULE in sys.modules:
        return _flatten(_get_config(module, arg))
    loaded = set(sys.modules)
    sys.modules[_BACKGROUND_MODULE] = _background_constants()
    try:
        return _flatten(_get_config(module, arg))
    except ImportError:
        pass  # a name the stand-in lacks: read the config with the real module below
    finally:
        for name in set(sys.modules) - loaded:
            if name.startswith("experiments"):
                del sys.modules[name]
        del sys.modules[_BACKGROUND_MODULE]
    return _flatten(_get_config(module, arg))


def _check_rows(rows, actual: dict, where: str, what: str) -> list[str]:
    """Problems of (line, key cell, value cell, source cell) rows against `actual`."""
    problems, seen = [], {}
    for number, key_cell, value_cell, source in rows:
        key, problem = _unquote(key_cell, "key", number)
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        if key in seen:
            problems.append(f"{where}: line {number}: `{key}` is documented twice (also line "
                            f"{seen[key]}); keep one row")
            continue
        seen[key] = number
        if key not in actual:
            problems.append(f"{where}: line {number}: `{key}` is not {what}; remove the row "
                            "or rename it")
            continue
        value, problem = _literal(value_cell, number)
        if isinstance(value, str) and value.startswith(DATA_ROOT_PLACEHOLDER):
            # A path under the real-data root (experiments/configs/common.py): where it is
            # depends on the machine, so the row names the root, not the path.
            value = configs_common.data_root() + value[len(DATA_ROOT_PLACEHOLDER):]
        if problem:
            problems.append(f"{where}: {problem}")
        elif not _same(value, actual[key]):
            problems.append(f"{where}: line {number}: `{key}` is documented as {value!r} but "
                            f"the config gives {actual[key]!r}; update the row (and its source)")
        problem = _source_problem(source)
        if problem:
            problems.append(f"{where}: line {number}: `{key}` {problem}")
    for key in sorted(set(actual) - set(seen)):
        problems.append(f"{where}: `{key}` = {actual[key]!r} has no row; add "
                        f"| `{key}` | `{actual[key]!r}` | <source> |")
    return problems


def _fail(problems):
    if problems:
        pytest.fail(f"{len(problems)} problem(s); {FIX}:\n  " + "\n  ".join(problems),
                    pytrace=False)


# ------------------------------------------------------------------------------- tests
def test_doc_parses_and_names_existing_configs():
    problems = list(PARSE_PROBLEMS)
    for spec in SECTIONS:
        if not (CONFIG_DIR / f"{spec.partition(':')[0]}.py").exists():
            problems.append(f"section '## experiments/configs/{spec}.py' names no config file; "
                            "rename or remove it")
    for number, cells in VARIANT_ROWS:
        name, problem = _unquote(cells[0], "config", number)
        if problem or name not in BACKGROUND_VARIANTS:
            problems.append(f"line {number}: background-variant row for {cells[0]}, which is not "
                            f"one of {BACKGROUND_VARIANTS}")
    _fail(problems)


@pytest.mark.parametrize("spec", sorted(set(DOCUMENTED_CONFIGS) | set(SECTIONS)))
def test_config_section_documents_every_key(spec):
    where = f"section '## experiments/configs/{spec}.py'"
    if spec not in SECTIONS:
        _fail([f"{where} is missing: add it with a | key | value | source | row for every key "
               f"of get_config()"])
    rows = [(number, *cells) for number, cells in SECTIONS[spec]]
    _fail(_check_rows(rows, _config(spec), where, f"a key of {spec}.get_config()"))


@pytest.mark.parametrize("variant", BACKGROUND_VARIANTS)
def test_background_variant_documents_what_it_changes(variant):
    base = variant.rsplit("_bg_", 1)[0]
    where = f"background-variant table, config `{variant}`"
    problems = []
    if base not in SECTIONS:
        problems.append(f"{where}: its base config has no section '## experiments/configs/"
                        f"{base}.py' (the variant inherits the base's documentation)")
    base_values, values = _config(base), _config(variant)
    for key in sorted(set(values) ^ set(base_values)):
        problems.append(f"{where}: `{key}` exists in only one of {variant} / {base}; the "
                        "variants table documents changed values only, so document the key in "
                        "both")
    changed = {k: v for k, v in values.items() if k in base_values and not _same(v, base_values[k])}
    rows = [(number, key, value, source) for number, (name, key, value, source) in VARIANT_ROWS
            if name == f"`{variant}`"]
    problems += _check_rows(rows, changed, where, f"a value {variant} changes from {base}")
    _fail(problems)


def test_lost_relicv2_numbers_are_never_quoted():
    """The ReLICv2 text lost these numbers: no row can say the paper writes them."""
    where = f"section '## experiments/configs/{FLAGSHIP}.py'"
    if FLAGSHIP not in SECTIONS:
        _fail([f"{where} is missing"])
    sources = {}
    for number, cells in SECTIONS[FLAGSHIP]:
        key, problem = _unquote(cells[0], "key", number)
        if not problem:
            sources[key] = (number, cells[2])
    config = _config(FLAGSHIP)
    problems = []
    for key in RELICV2_LOST_KEYS:
        if key not in config:
            problems.append(f"`{key}` is no longer a key of {FLAGSHIP}.get_config(); update "
                            "RELICV2_LOST_KEYS in tests/test_recipes_doc.py")
        elif key not in sources:
            problems.append(f"{where}: `{key}` has no row")
        elif _label(sources[key][1]) == "quoted:":
            number, source = sources[key]
            problems.append(f"{where}: line {number}: `{key}` is labelled 'quoted:', but the "
                            "ReLICv2 text lost this number (see 'What the ReLICv2 text lost'); "
                            f"label it 'inferred: <from what>' or 'assumed: <reason>': {source!r}")
    _fail(problems)
