"""Issue 23, case 2: ``--import MODULE`` adds the working directory for that import only.

``gfnet benchmark --import mymod`` put the working directory first on ``sys.path`` for the whole run, so a stray
``matplotlib.py`` there ran when the plots were drawn (and the benchmark died at the end, losing its results).
Now the directory is appended (installed modules win, also inside the user's module) and removed right after.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import agents
from agents import registry

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[2]
STRAY = "colorsys"  # a standard-library module the test process has not needed


@pytest.fixture
def cwd_with_strays(tmp_path, monkeypatch):
    """A working directory holding the user's module and a stray ``colorsys.py`` that writes a trace when run;
    sys.path as under the console script (without the working directory)."""
    trace = tmp_path / "TRACE"
    (tmp_path / f"{STRAY}.py").write_text(f"open({str(trace)!r}, 'a').write('stray ran\\n')\n")
    (tmp_path / "user_mod_cwd.py").write_text(textwrap.dedent(f"""
        import {STRAY}  # the user's module needs the real one
        import agents
        from agents.baselines import CenterAgent

        agents.register("cwd-import-agent", CenterAgent)
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, STRAY, raising=False)
    names = set(registry._REGISTRY)
    yield tmp_path, trace
    for name in set(registry._REGISTRY) - names:
        registry.unregister(name)
    sys.modules.pop("user_mod_cwd", None)


def test_import_adds_the_working_directory_for_that_import_only(cwd_with_strays):
    from gfnet_cli.commands._common import import_user_modules

    folder, trace = cwd_with_strays
    (module,) = import_user_modules(["user_mod_cwd"])
    assert module.__name__ == "user_mod_cwd" and "cwd-import-agent" in agents.available()
    assert str(folder) not in sys.path and "" not in sys.path and os.curdir not in sys.path
    assert not trace.exists(), "the stray module in the working directory ran during the import"
    assert sys.modules[STRAY].__file__ != str(folder / f"{STRAY}.py")
    # later imports of the run (the plots import matplotlib at the end) never see the working directory
    sys.modules.pop(STRAY)
    __import__(STRAY)
    assert not trace.exists(), "the stray module in the working directory ran after the import"


def test_a_missing_module_still_names_the_working_directory(cwd_with_strays):
    from gfnet_cli.commands._common import import_user_modules

    folder, _ = cwd_with_strays
    with pytest.raises(ValueError, match="no module named 'no_such_user_mod'.*working directory"):
        import_user_modules(["no_such_user_mod"])
    assert str(folder) not in sys.path


def test_stray_matplotlib_is_not_run_by_the_console_script(tmp_path):
    """End to end: a stray ``matplotlib.py`` next to the user's module; a run that imports matplotlib after the
    ``--import`` (as the benchmark's plots do) gets the installed one."""
    trace = tmp_path / "TRACE"
    (tmp_path / "matplotlib.py").write_text(f"open({str(trace)!r}, 'w').write('stray ran')\n"
                                            "raise ImportError('stray matplotlib')\n")
    (tmp_path / "user_mod_e2e.py").write_text("X = 1\n")
    # as the `gfnet` console script runs: sys.path[0] is the script's folder, not the working directory
    script = textwrap.dedent(f"""
        import sys
        sys.path[:] = [p for p in sys.path if p not in ('', {str(tmp_path)!r})]
        sys.path[:0] = [{str(ROOT)!r}]
        from gfnet_cli.commands._common import import_user_modules
        import_user_modules(['user_mod_e2e'])
        import matplotlib
        print(matplotlib.__file__)
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not trace.exists() and str(tmp_path) not in done.stdout
