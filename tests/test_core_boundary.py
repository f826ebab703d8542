"""The core installs and runs without the ML stack (DESIGN.md, Boundaries).

Every module under hpcq/ is imported, found by walking the package, so a new module is
checked without being listed here. None is producer-side in the sense of importing an
ML framework at import time (bridges.cli_train imports torch and bridges inside its command
handlers only); the one left out is `hpcq.__main__`, whose import runs the CLI.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import hpcq

# The ML stack, and the optional extras of telemetry and reports (mqtt, prometheus,
# plots): the core imports them only inside the functions that need them. Not `rich`
# (the watch extra): structlog imports it by itself when it is installed; the tests
# below check that hpcq neither imports it at the top of a module nor needs it.
FORBIDDEN = (
    "torch", "transformers", "trl", "vllm", "aiomqtt", "paho", "prometheus_client",
    "matplotlib", "bridges",
)  # fmt: skip
OPTIONAL = ("aiomqtt", "paho", "prometheus_client", "rich", "matplotlib")
NOT_IMPORTED = {"hpcq.__main__": "importing it runs the `hpcq` command"}

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


def test_core_imports_no_ml_framework() -> None:
    argv = [sys.executable, "-c", _PROBE, ",".join(NOT_IMPORTED), ",".join(FORBIDDEN)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"a module of the core failed to import:\n{out.stderr[-3000:]}"
    report = json.loads(out.stdout.strip().splitlines()[-1])
    # A walk that missed modules would pass vacuously: every file must have been imported.
    files = {f"hpcq.{p.stem}" for p in Path(hpcq.__file__).parent.glob("*.py")}
    assert files - {"hpcq.__init__"} - set(NOT_IMPORTED) <= set(report["found"])
    assert report["bad"] == [], f"the core imported {report['bad']}"


def test_core_imports_without_the_optional_extras() -> None:
    """Every module of the core imports with the extras' packages made unimportable."""
    argv = [sys.executable, "-c", _PROBE, ",".join(NOT_IMPORTED), ",".join(FORBIDDEN)]
    out = subprocess.run([*argv, *OPTIONAL], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"the core needs an optional extra:\n{out.stderr[-3000:]}"


def test_no_module_level_import_of_an_optional_extra() -> None:
    """Lazy imports only: inside functions, or under TYPE_CHECKING."""
    bad = []
    for path in sorted(Path(hpcq.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            bad += [f"{path.name}: {n}" for n in names if n.split(".")[0] in OPTIONAL]
    assert bad == []


def test_kernels_is_not_an_importable_package() -> None:
    from hpcq.eval.problems import default_kernels_dir

    assert not (default_kernels_dir() / "__init__.py").exists()
