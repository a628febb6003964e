"""The rule of tests/conftest.py for the real data under ../shared/data: a test that reads it is
marked `shared_data` and skipped where it is absent (a user's clone); every other test sees a
data root that does not exist, so it cannot come to depend on ../shared unnoticed."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.configs import common as configs_common
from experiments.configs import imagenette64, linear_eval_imagenette, saliency_imagenette
from tests import conftest
from tests.conftest import REPO

TESTS = REPO / "tests"
# Modules that compute a path under the data root only to compare it with a config's value.
READS_NO_DATA = ("test_recipes_doc.py",)


def _code_strings(tree):
    """String constants of a module that are not docstrings."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    return [node for node in ast.walk(tree) if isinstance(node, ast.Constant)
            and isinstance(node.value, str) and id(node) not in docstrings]


def test_no_test_module_spells_the_shared_location():
    """Only conftest.py knows where the real data are (through configs.common.data_root); a test
    that built the path itself would bypass the marker and the hiding."""
    offenders = []
    for path in sorted(TESTS.glob("*.py")):
        if path.name in ("conftest.py", Path(__file__).name):  # the rule's own two files
            continue
        tree = ast.parse(path.read_text())
        for node in _code_strings(tree):
            if re.search(r"(^|[/\\])shared([/\\]|$)", node.value):
                offenders.append(f"{path.name}:{node.lineno}: {node.value!r}")
        for node in ast.walk(tree):
            if path.name in READS_NO_DATA:
                break
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in (
                    "data_root", "data_path"):
                offenders.append(f"{path.name}:{node.lineno}: calls {node.func.attr}() "
                                 "(use the data_root fixture and the shared_data marker)")
    assert not offenders, offenders


def test_unmarked_tests_see_no_real_data():
    """This test is not marked: the data root and every config path built from it are hidden,
    in CI too, where ../shared exists."""
    root = configs_common.data_root()
    assert root == conftest.HIDDEN_DATA_ROOT and not os.path.exists(root)
    for path in (imagenette64.get_config("relicv2").data.data_dir,
                 linear_eval_imagenette.get_config().data.data_dir,
                 saliency_imagenette.get_config().data.data_dir):
        assert path.startswith(root) and not os.path.exists(path)


def test_data_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(configs_common.DATA_ROOT_ENV, str(tmp_path))
    assert configs_common.data_path("imagenette", "val") == str(tmp_path / "imagenette" / "val")
    monkeypatch.delenv(configs_common.DATA_ROOT_ENV)
    assert Path(configs_common.data_root()).resolve() == (REPO.parent / "shared" / "data").resolve()


class _Item:
    def __init__(self, nodeid, fixturenames, marked):
        self.nodeid, self.fixturenames, self._marked = nodeid, fixturenames, marked

    def get_closest_marker(self, name):
        return object() if self._marked and name == "shared_data" else None


def test_taking_the_data_root_without_the_marker_stops_the_collection():
    conftest.pytest_collection_modifyitems(None, [_Item("t.py::ok", ("data_root",), True),
                                                  _Item("t.py::plain", ("tmp_path",), False)])
    with pytest.raises(pytest.UsageError, match=r"t.py::bad .*add the marker"):
        conftest.pytest_collection_modifyitems(None, [_Item("t.py::bad", ("data_root",), False)])


def test_every_marked_test_skips_on_a_clone_without_the_data(tmp_path):
    """What a user's clone runs: every `shared_data` test collected and run with an empty data
    root is skipped with the reason; none fails or errors."""
    env = {**os.environ, configs_common.DATA_ROOT_ENV: str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-m", "shared_data", "-p", "no:cacheprovider",
         str(TESTS)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    skipped = int(re.search(r"(\d+) skipped", summary).group(1))
    assert skipped >= 7 and "passed" not in summary and "failed" not in summary, summary
    assert "needs the real data" in result.stdout and "RELICV2_DATA_ROOT" in result.stdout
