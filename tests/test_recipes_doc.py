"""docs/RECIPES.md documents every key of every paper config: its value and its source.

Parsing only (no model is built): each "## experiments/configs/<module>[:<arg>].py" section holds a
`| key | value | source |` table; the config is imported, `get_config([arg])` flattened to dotted
keys, and every key must have a row whose value (a Python literal in backticks) equals the
config's and whose source starts with a citation or "assumed:", "operational:", "unused:". The
background variants (`*_bg_*.py`) share one `| config | key | value | source |` table listing
exactly the keys they change with respect to their base config.
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

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "RECIPES.md"
CONFIG_DIR = REPO / "experiments" / "configs"

# Configs that must have a section (the paper recipes); any other documented section is checked too.
DOCUMENTED_CONFIGS = (
    "relicv2_r50_imagenet", "byol", "moco_v2", "simclr", "swav",
    "linear_eval_imagenet", "finetune_imagenet_1pct", "finetune_imagenet_10pct", "transfer",
    "saliency_imagenet", "supervised_imagenette",
)
BACKGROUND_VARIANTS = tuple(sorted(p.stem for p in CONFIG_DIR.glob("*_bg_*.py")))

# A source starts with a paper (name + section / table / appendix) or the authors' code ...
CITATIONS = (
    "ReLICv2 ", "BYOL ", "SimCLR ", "MoCo ", "MoCo-v2 ", "SwAV ", "Ryali et al.", "DeepUSPS",
    "google-deepmind/relicv2 ", "deepmind-research/byol", "google-research/simclr ",
    "facebookresearch/moco ", "facebookresearch/swav ",
)
# ... or says why there is none.
CATEGORIES = ("assumed:", "operational:", "unused:")

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


def _source_problem(source: str):
    if not source:
        return "has no source"
    for category in CATEGORIES:
        if source.startswith(category):
            if len(source[len(category):].strip()) < 3:
                return f"source {source!r} needs a reason after '{category}'"
            return None
    if source.startswith(CITATIONS):
        return None
    return (f"source {source[:60]!r}... must start with a paper / code citation "
            f"({', '.join(c.strip() for c in CITATIONS)}) or one of {CATEGORIES}")


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
