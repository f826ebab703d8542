"""The core installs and runs without the ML stack (DESIGN.md, Boundaries), at run time.

Which imports the core may write is a rule import-linter checks (`make lint`, the
contracts in pyproject.toml; tests/test_import_contracts.py proves they catch a
violation). This file proves what a CPU node sees: every module under hpcq/, found by
walking the package (subpackages included, so a new module is checked without being
listed here), imports with none of those packages loaded, and with the optional extras
made unimportable. The one left out is `hpcq.__main__`, whose import runs the CLI.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import hpcq

ROOT = Path(hpcq.__file__).parent
PYPROJECT = ROOT.parent / "pyproject.toml"
# Imported inside the functions that need them only (the extras mqtt, prometheus, watch,
# plots). Not forbidden outright at run time: `rich` is imported by structlog itself when
# it is installed; the tests below check that hpcq neither imports it at the top of a
# module nor needs it.
OPTIONAL = ("aiomqtt", "paho", "prometheus_client", "rich", "matplotlib")
NOT_IMPORTED = {"hpcq.__main__": "importing it runs the `hpcq` command"}


def forbidden() -> tuple[str, ...]:
    """What the core never imports: the forbidden contract's modules (pyproject.toml),
    and the extras that must not be loaded by importing a module."""
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    [contract] = [c for c in config["contracts"] if c["type"] == "forbidden"]
    assert contract["source_modules"] == ["hpcq"]
    return (*contract["forbidden_modules"], "prometheus_client", "matplotlib")


def core_modules() -> set[str]:
    """Every module under hpcq/, by its file (the walk below must have found them all)."""
    names = set()
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


_PROBE = """
import json, pkgutil, sys
for name in sys.argv[3:]:
    sys.modules[name] = None  # as if not installed: importing it raises ImportError
import hpcq
skip = set(sys.argv[1].split(","))
found = [m.name for m in pkgutil.walk_packages(hpcq.__path__, "hpcq.") if m.name not in skip]
for name in found:
    __import__(name)  # an ImportError fails the probe, and the test with it
print(json.dumps({"found": found, "bad": [m for m in sys.argv[2].split(",") if m in sys.modules]}))
"""


def probe(*unimportable: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", _PROBE, ",".join(NOT_IMPORTED), ",".join(forbidden())]
    return subprocess.run([*argv, *unimportable], capture_output=True, text=True, timeout=120)


def test_core_imports_no_ml_framework() -> None:
    out = probe()
    assert out.returncode == 0, f"a module of the core failed to import:\n{out.stderr[-3000:]}"
    report = json.loads(out.stdout.strip().splitlines()[-1])
    # A walk that missed modules would pass vacuously: every file must have been imported.
    assert core_modules() - {"hpcq"} - set(NOT_IMPORTED) <= set(report["found"])
    assert {"hpcq.pipeline.consumer", "hpcq.eval.csource.model"} <= set(report["found"])
    assert report["bad"] == [], f"the core imported {report['bad']}"


def test_core_imports_without_the_optional_extras() -> None:
    """Every module of the core imports with the extras' packages made unimportable."""
    out = probe(*OPTIONAL)
    assert out.returncode == 0, f"the core needs an optional extra:\n{out.stderr[-3000:]}"


def test_no_module_level_import_of_an_optional_extra() -> None:
    """Lazy imports only: inside functions, or under TYPE_CHECKING."""
    bad = []
    paths = sorted(ROOT.rglob("*.py"))
    assert ROOT / "pipeline" / "watch.py" in paths  # subpackages are walked too
    for path in paths:
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            where = path.relative_to(ROOT)
            bad += [f"{where}: {n}" for n in names if n.split(".")[0] in OPTIONAL]
    assert bad == []


def test_kernels_is_not_an_importable_package() -> None:
    from hpcq.eval.problems import default_kernels_dir

    assert not (default_kernels_dir() / "__init__.py").exists()
