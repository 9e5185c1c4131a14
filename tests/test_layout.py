"""The tree tells the architecture, and the import rules keep it so.

- ``pipeline/`` (what the Lambdas and every part share) never imports ``jobs/`` (the worker code).
- ``compute/`` starts jobs by their job definition's command and never names the ``jobs`` package.
- Nothing heavy (OpenCV, Pillow, numpy, PDF engines, pytesseract) nor any job code is reachable
  from the dispatcher's or the tracker's Lambda entry points, counting imports made inside
  functions: a lazy import in a handler still lands in the Lambda's cold start.

The rules are checked statically over every import statement (and ``importlib.import_module``
call with a literal name), so a rarely taken branch cannot hide a violation, and at run time in a
fresh interpreter. The checker is itself tested on a small package made to break each rule.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

HEAVY = ("cv2", "PIL", "numpy", "pypdfium2", "pdfplumber", "pdfminer", "pytesseract", "pillow_heif")
OURS = ("pipeline", "compute", "jobs")
ENTRY_POINTS = ("pipeline.dispatcher", "pipeline.tracker", "pipeline.aws_lambda")
_MODULE_NAME = re.compile(r"^jobs(\.\w+)*$")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(path: Path, package: str) -> set[str]:
    """Every module a file imports, anywhere in it (module level or inside functions).

    Imports under ``if TYPE_CHECKING:`` never run and are left out; ``importlib.import_module``
    with a literal argument counts as an import.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)  # "from pkg import submodule"
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names.add(node.args[0].value)
    return names


def module_file(root: Path, module: str) -> Path | None:
    """The source file of one of our modules under ``root``, or None (third party, or a name)."""
    parts = module.split(".")
    for candidate in (root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


def reachable(root: Path, entries: tuple[str, ...], ours: tuple[str, ...] = OURS) -> dict[str, str]:
    """Every module reachable by imports from ``entries``: {module: the module that imports it}."""
    seen: dict[str, str] = {e: "" for e in entries}
    todo = list(entries)
    while todo:
        current = todo.pop()
        path = module_file(root, current)
        if path is None:
            continue
        package = current if path.name == "__init__.py" else current.rpartition(".")[0]
        for name in imported_names(path, package):
            parts = name.split(".")
            # importing a.b.c runs a/__init__ and a/b/__init__ too
            for i in range(1, len(parts) + 1):
                sub = ".".join(parts[:i])
                if sub in seen:
                    continue
                if parts[0] in ours and module_file(root, sub) is None:
                    continue  # "from pipeline.x import name": a name, not a module
                seen[sub] = current
                if parts[0] in ours:
                    todo.append(sub)
    return seen


def chain(seen: dict[str, str], module: str) -> str:
    path = [module]
    while seen.get(path[-1]):
        path.append(seen[path[-1]])
    return " <- ".join(path)


def violations(root: Path, entries: tuple[str, ...] = ENTRY_POINTS, ours: tuple[str, ...] = OURS) -> list[str]:
    """Heavy libraries or job code reachable from the Lambda entry points, with the import chain."""
    seen = reachable(root, entries, ours)
    forbidden = (*HEAVY, "jobs")
    return sorted(chain(seen, m) for m in seen if m.split(".")[0] in forbidden)


def package_imports(root: Path, package: str, target: str) -> list[str]:
    """Files of ``package`` that import ``target`` (or a submodule of it)."""
    bad = []
    for path in sorted((root / package).rglob("*.py")):
        pkg = ".".join(path.relative_to(root).parts[:-1])  # a/b.py and a/__init__.py are both in a
        names = imported_names(path, pkg)
        if any(n == target or n.startswith(target + ".") for n in names):
            bad.append(str(path.relative_to(root)))
    return bad


def names_module(root: Path, package: str, pattern: re.Pattern[str] = _MODULE_NAME) -> list[str]:
    """Files of ``package`` holding a string that is a module name of ``jobs`` ("jobs", "jobs.x")."""
    bad = []
    for path in sorted((root / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # A dict key ("jobs" in a DescribeJobs answer) is data, not a module name.
        keys = {id(n.slice) for n in ast.walk(tree) if isinstance(n, ast.Subscript)}
        keys |= {id(n.args[0]) for n in ast.walk(tree) if isinstance(n, ast.Call) and n.args
                 and isinstance(n.func, ast.Attribute) and n.func.attr == "get"}
        for node in ast.walk(tree):
            if id(node) in keys:
                continue
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and pattern.match(node.value):
                bad.append(f"{path.relative_to(root)}:{node.lineno}")
    return bad


# ---------------------------------------------------------------------------------------------
# The rules, on this repository
# ---------------------------------------------------------------------------------------------

def test_the_tree_has_one_package_per_job_definition():
    import json

    commands = {p.stem: json.loads(p.read_text())["containerProperties"]["command"]
                for p in (REPO / "job_definitions").glob("*.json")}
    # The one-off schema migration `medintake deploy` runs is the only definition outside jobs/.
    assert commands.pop("migrate") == ["python", "-m", "pipeline.database", "upgrade"]
    kinds = {c[3] for c in commands.values() if c[:3] == ["python", "-m", "jobs"]}
    assert kinds == set(commands) == {"extract", "entities", "convert", "process", "pages"}
    # process (the array shape, docs/scale.md) runs the three stages in sequence, and pages (a long
    # document's page ranges) is the extract stage over one range: no package of their own.
    kinds -= {"process", "pages"}
    for kind in kinds:
        assert (REPO / "jobs" / kind / "job.py").is_file(), kind
    from jobs.runner import KINDS, SEQUENCE

    assert set(KINDS) == kinds == set(SEQUENCE)


def test_pipeline_never_imports_jobs():
    assert package_imports(REPO, "pipeline", "jobs") == []


def test_compute_starts_jobs_by_command_only():
    assert package_imports(REPO, "compute", "jobs") == []
    assert names_module(REPO, "compute") == []


def test_nothing_heavy_on_the_dispatcher_or_tracker_path():
    assert violations(REPO) == []
    seen = reachable(REPO, ENTRY_POINTS)
    assert "pipeline.dispatcher" in seen and "pipeline.store" in seen  # the walk really follows imports


def test_nothing_heavy_is_loaded_by_the_lambda_handlers_at_run_time():
    """A fresh interpreter imports the Lambda modules and the local runtime; no heavy module loads."""
    code = (
        "import sys, pipeline.aws_lambda, pipeline.dispatcher, pipeline.tracker, pipeline.events, "
        "pipeline.store, pipeline.notify, pipeline.database, compute.local, compute.runtime, compute.batch\n"
        f"heavy = {list(HEAVY) + ['jobs']!r}\n"
        "print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# The checker catches what it is meant to
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def broken_tree(tmp_path: Path) -> Path:
    """A small tree that breaks every rule, each in a way easy to miss."""
    files = {
        "pipeline/__init__.py": "",
        "pipeline/dispatcher.py": "from pipeline import helpers\n",
        "pipeline/tracker.py": "def handler():\n    from pipeline.manifest import write\n",
        "pipeline/aws_lambda.py": "",
        "pipeline/helpers.py": "import os\n\ndef thumb():\n    import importlib\n"
                               "    return importlib.import_module('numpy')\n",
        "pipeline/manifest.py": "from .pages import count\n",
        "pipeline/pages.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import cv2\n"
                             "def count():\n    from jobs.extract import text\n",
        "compute/__init__.py": "",
        "compute/warm.py": "PRELOAD = ['jobs.__main__']\n",
        "jobs/__init__.py": "",
        "jobs/extract/__init__.py": "",
        "jobs/extract/text.py": "import cv2\n",
    }
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_checker_finds_heavy_and_job_imports_however_deep(broken_tree):
    found = violations(broken_tree)
    assert "numpy <- pipeline.helpers <- pipeline.dispatcher" in found  # import_module in a function
    assert any(v.startswith("jobs <- pipeline.pages <- pipeline.manifest <- pipeline.tracker") for v in found)
    assert any(v.startswith("cv2 <- jobs.extract.text") for v in found)  # through the job code
    assert not any(v.startswith("cv2 <- pipeline.pages") for v in found)  # TYPE_CHECKING never runs


def test_checker_finds_pipeline_importing_jobs_and_compute_naming_it(broken_tree):
    assert package_imports(broken_tree, "pipeline", "jobs") == ["pipeline/pages.py"]
    assert names_module(broken_tree, "compute") == ["compute/warm.py:1"]
