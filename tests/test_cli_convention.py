"""Every command module of relicv2_tf/cli/ follows one convention (cli/common.py's docstring):
`define_flags()` returns the command's absl FlagHolders and is called by `run()`, the console
script setup.py names; `main(flag_values, argv)` reads only those (never the global FLAGS);
importing the module defines no flag; no exit of its own (`sys.exit`, `SystemExit`), only
common.py's error path. Each check is also run on a module that breaks it, so it can fail."""

import ast
import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

CLI_DIR = os.path.join(REPO, "relicv2_tf", "cli")
SHARED = ("__init__", "common", "strategy_flags")  # not commands
MODULES = sorted(name[:-3] for name in os.listdir(CLI_DIR)
                 if name.endswith(".py") and name[:-3] not in SHARED)
EXITS = ("sys.exit", "os._exit", "SystemExit", "exit", "quit")


def module_constant(source: str, name: str):
    """The literal value of `name = <literal>` at a module's top level (None: not there)."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    return None


def entry_point_problems(entry_points: dict, commands: dict) -> list[str]:
    """`commands` maps relicv2-<COMMAND> to its module: each must be `<module>:run`."""
    expected = {script: f"relicv2_tf.cli.{module}:run" for script, module in commands.items()}
    return [f"{script}: {entry_points.get(script)} in setup.py, expected {target}"
            for script, target in expected.items() if entry_points.get(script) != target] + [
        f"{script}: {target} has no module in relicv2_tf/cli/"
        for script, target in entry_points.items() if script not in expected]


def _dotted(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def convention_problems(source: str) -> list[str]:
    """What in a CLI module's source breaks the convention (empty: nothing)."""
    tree = ast.parse(source)
    problems = []
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    signatures = {"define_flags": [], "main": ["flag_values", "argv"], "run": []}
    for name, arguments in signatures.items():
        if name not in functions:
            problems.append(f"no module-level {name}()")
        elif [a.arg for a in functions[name].args.args] != arguments:
            problems.append(f"{name}() does not take ({', '.join(arguments)})")
    if "run" in functions and not any(
            isinstance(node, ast.Call) and _dotted(node.func) == "define_flags"
            for node in ast.walk(functions["run"])):
        problems.append("run() does not call define_flags()")
    inside_functions = {id(node) for function in ast.walk(tree)
                        if isinstance(function, (ast.FunctionDef, ast.Lambda))
                        for node in ast.walk(function)}
    for node in ast.walk(tree):
        name = _dotted(node) if isinstance(node, (ast.Name, ast.Attribute)) else ""
        if name in EXITS or name.endswith((".SystemExit", ".sys.exit")):
            if not (name in ("exit", "quit") and not _is_called(tree, node)):
                problems.append(f"line {node.lineno}: {name} (exit through common.fail)")
        if name == "FLAGS" or name.endswith(".FLAGS"):
            problems.append(f"line {node.lineno}: reads the global FLAGS")
        if (isinstance(node, ast.Call) and _dotted(node.func).split(".")[-1].startswith("DEFINE")
                and id(node) not in inside_functions):
            problems.append(f"line {node.lineno}: defines a flag at import")
    return problems


def _is_called(tree, target) -> bool:
    return any(isinstance(node, ast.Call) and node.func is target for node in ast.walk(tree))


def imports_in_a_fresh_process(modules, path=str(REPO)) -> dict:
    """For each module, imported in turn after cli/common.py (and absl's own flags): the flags
    its import defined, whether it has a callable `run`, the flags its `define_flags()` defines
    (but the shared ones of strategy_flags.py) and the names of the FlagHolders it returns
    (under their own names). The flags are removed after each module."""
    script = textwrap.dedent("""
        import importlib, json, sys
        from absl import flags
        import relicv2_tf.cli.common  # absl.app's and absl.logging's flags

        baseline, result = set(flags.FLAGS), {}
        for name in sys.argv[1:]:
            before = set(flags.FLAGS)
            module = importlib.import_module(name)
            at_import = set(flags.FLAGS) - before
            holders = module.define_flags() if callable(getattr(module, "define_flags", 0)) else 0
            shared = flags.FLAGS.flags_by_module_dict().get("relicv2_tf.cli.strategy_flags", [])
            defined = set(flags.FLAGS) - before - at_import - {flag.name for flag in shared}
            result[name] = {
                "at_import": sorted(at_import), "defined": sorted(defined),
                "run": callable(getattr(module, "run", None)),
                "holders": sorted(key for key, holder in holders.items()
                                  if isinstance(holder, flags.FlagHolder)
                                  and holder.name == key) if isinstance(holders, dict) else None}
            for flag in set(flags.FLAGS) - baseline:
                delattr(flags.FLAGS, flag)
        print(json.dumps(result))
        """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([path, str(REPO)]), TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, "-c", script, *modules], capture_output=True,
                         text=True, timeout=300, cwd=REPO, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", MODULES)
def test_source_follows_the_convention(module):
    with open(os.path.join(CLI_DIR, f"{module}.py")) as f:
        assert convention_problems(f.read()) == []


def test_every_command_is_module_run_in_setup_py():
    commands = {}
    for module in MODULES:
        with open(os.path.join(CLI_DIR, f"{module}.py")) as f:
            command = module_constant(f.read(), "COMMAND")
        assert command, f"relicv2_tf/cli/{module}.py has no COMMAND = '<command>'"
        commands[f"relicv2-{command}"] = module
    with open(os.path.join(REPO, "setup.py")) as f:
        entry_points = module_constant(f.read(), "ENTRY_POINTS")
    assert entry_point_problems(entry_points, commands) == []


def test_import_defines_no_flag_and_define_flags_returns_every_flag():
    result = imports_in_a_fresh_process([f"relicv2_tf.cli.{m}" for m in MODULES])
    for module, found in result.items():
        assert found["at_import"] == [], module
        assert found["run"], module
        assert found["defined"], module
        assert found["defined"] == found["holders"], module


BROKEN = '''
import sys
from absl import flags

FLAGS = flags.FLAGS
_NAME = flags.DEFINE_string("name", None, "Defined at import.")


def main(argv):
    if not FLAGS.name:
        sys.exit(2)
    raise SystemExit(0)


def _main():
    exit(1)
'''


def test_the_checks_fail_on_a_module_that_breaks_the_convention(tmp_path):
    problems = "\n".join(convention_problems(BROKEN))
    for expected in ("no module-level define_flags()", "main() does not take (flag_values, argv)",
                     "no module-level run()", "line 6: defines a flag at import",
                     "line 11: sys.exit", "line 12: SystemExit", "line 16: exit",
                     "line 5: reads the global FLAGS", "line 10: reads the global FLAGS"):
        assert expected in problems, problems
    assert "does not call define_flags" in "\n".join(convention_problems(
        "def define_flags():\n    return {}\n\ndef main(flag_values, argv):\n    pass\n\n"
        "def run():\n    main({}, [])\n"))
    (tmp_path / "broken_cli.py").write_text(BROKEN + textwrap.dedent('''
        def define_flags():  # "other" is returned under another name: main cannot find it
            return {"name": _NAME, "renamed": flags.DEFINE_bool("other", False, "Misnamed.")}
        '''))
    found = imports_in_a_fresh_process(["broken_cli"], path=str(tmp_path))["broken_cli"]
    assert found == {"at_import": ["name"], "defined": ["other"], "run": False, "holders": ["name"]}
    setup_source = 'ENTRY_POINTS = {"relicv2-export": "relicv2_tf.cli.export:main",\n' \
        '                "relicv2-gone": "relicv2_tf.cli.gone:run"}\n'
    assert entry_point_problems(module_constant(setup_source, "ENTRY_POINTS"),
                                {"relicv2-export": "export", "relicv2-client": "serving_client"}
                                ) == ["relicv2-export: relicv2_tf.cli.export:main in setup.py, "
                                      "expected relicv2_tf.cli.export:run",
                                      "relicv2-client: None in setup.py, expected "
                                      "relicv2_tf.cli.serving_client:run",
                                      "relicv2-gone: relicv2_tf.cli.gone:run has no module in "
                                      "relicv2_tf/cli/"]
