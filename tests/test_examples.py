"""Every ``examples/*.py`` runs as printed, on its tiny settings, and prints what its docstring says it prints.

The examples are found by a glob, so a new one is checked without touching this file. The convention each follows:
a ``--tiny`` option (settings that run in seconds to a minute on a CPU; real settings by default), and a module
docstring that says what it prints as a line ending in "... starting with:" followed by bullets, each opening with
the literal prefix of a printed line (``* ``verdict:`` — ...``; several prefixes on one bullet line are each
checked). An example whose imports are missing fails with the missing module named (the test extra installs them:
``pip install -e ".[test]"``), never skips.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
#: The line that opens the list of printed prefixes, and a bullet of it (its first line).
PRINTS_HEADER = re.compile(r"\bprints\b.*\b(?:starting|beginning) with:\s*$")
BULLET = re.compile(r"^\s*[*-]\s+(.*)$")
LITERAL = re.compile(r"``([^`]+)``")


def stated_prefixes(doc: str) -> list[str]:
    """The prefixes a docstring says the example's printed lines start with (see the module docstring)."""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if PRINTS_HEADER.search(line):
            break
    else:
        return []
    prefixes: list[str] = []
    for line in lines[i + 1:]:
        if not line.strip():
            if prefixes:
                break
            continue
        bullet = BULLET.match(line)
        if bullet:
            prefixes += LITERAL.findall(bullet.group(1))
        elif not line.startswith((" ", "\t")):
            break
    return prefixes


def top_level_imports(tree: ast.Module) -> list[str]:
    """Top-level packages the script imports at module level."""
    names = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names += [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module.split(".")[0])
    return sorted(set(names) - {"__future__"})


def test_examples_are_there():
    names = {p.name for p in EXAMPLES}
    assert {"custom_agent.py", "cleanrl_ppo.py", "sb3_quickstart.py", "your_own_images.py"} <= names


def test_stated_prefixes_reads_the_bullets():
    doc = "Intro, which prints nothing here.\n\nIt prints lines starting with:\n\n* ``a:`` — one\n  more text\n" \
          "* ``b`` — two, then ``c:`` — three\n\nRun it.\n* ``not-this`` — another list\n"
    assert stated_prefixes(doc) == ["a:", "b", "c:"]
    assert stated_prefixes("Says nothing about its output.") == []


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs_tiny_and_prints_what_its_docstring_says(script: Path, tmp_path):
    tree = ast.parse(script.read_text(), filename=str(script))
    doc = ast.get_docstring(tree) or ""
    prefixes = stated_prefixes(doc)
    assert prefixes, (f"{script.name}: its docstring must say what it prints: a line ending in 'lines starting "
                      "with:' and bullets '* ``PREFIX`` — meaning'")
    assert "--tiny" in doc, f"{script.name}: its docstring must say how to run it on tiny settings (--tiny)"
    missing = [m for m in top_level_imports(tree) if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail(f"{script.name} needs {', '.join(missing)}, which is not installed: pip install -e '.[test]' "
                    "(the test extra installs every example's dependencies)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(script), "--tiny"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"{script.name} --tiny failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    printed = [line.strip() for line in proc.stdout.splitlines()]
    for prefix in prefixes:
        assert any(line.startswith(prefix) for line in printed), (
            f"{script.name} says it prints a line starting with {prefix!r}; its output has none:\n"
            + proc.stdout[-3000:])
