"""The install layout: what the core install covers, how optional packages are imported, the one torch pin.

* ``import gfnet_env`` imports no optional package (Stable-Baselines3, matplotlib, TensorBoard, tqdm);
* with every optional package made unimportable (as on a core-only install), ``gym.make``, ``make_vec``,
  ``rollout`` and a baseline agent work, and whatever needs an extra says which one;
* every module-level import of an optional package in the library is guarded, and the optional packages the
  library names (:data:`feature_nets.extras.EXTRAS`) are those of pyproject.toml's extras;
* torch and torchvision are pinned in one file, ``requirements/torch.txt``, which both pyproject.toml and the
  Makefile read.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from feature_nets.extras import EXTRAS
from helpers import needs_fashion_mnist

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("feature_nets", "gfnet_env", "agents", "gfnet_cli")
OPTIONAL = ("stable_baselines3", "sb3_contrib", "matplotlib", "tensorboard", "tqdm", "torchrl", "tensordict")
#: Makes the optional packages unimportable in a subprocess, as if they were not installed (``None`` in
#: ``sys.modules`` makes ``import`` raise ModuleNotFoundError and ``importlib.util.find_spec`` return None).
HIDE_OPTIONAL = f"import sys\nfor _m in {OPTIONAL!r}:\n    sys.modules[_m] = None\n"


def _run(code: str, timeout: int = 300) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"subprocess failed:\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_gfnet_env_imports_no_optional_package():
    # torch may import tqdm itself when it is installed (torch.hub does): only what gfnet_env adds counts
    out = _run("""
        import json, sys
        import gymnasium, numpy, PIL, timm, torch, torchvision
        before = set(sys.modules)
        import gfnet_env
        added = set(sys.modules) - before
        print(json.dumps(sorted(m for m in added if m.split(".")[0] in %r)))
    """ % (OPTIONAL,))
    assert out == [], f"import gfnet_env imported optional packages: {out}"


def test_import_gfnet_env_without_stable_baselines3():
    # the bar, literally
    out = _run("""
        import json, sys
        import gfnet_env
        print(json.dumps("stable_baselines3" in sys.modules))
    """)
    assert out is False


@needs_fashion_mnist
def test_core_install_runs_the_env_and_says_which_extra_is_missing():
    out = _run(HIDE_OPTIONAL + textwrap.dedent("""
        import json
        import gymnasium as gym
        import numpy as np
        import gfnet_env, agents
        from feature_nets.extras import MissingExtraError
        from gfnet_env.tasks import WEIGHTS_DIR

        env = gym.make("GFNet-ClutteredFashionMNIST-v0")
        env.reset(seed=0)
        env.step(env.action_space.sample())
        env.close()
        venv = gym.make_vec("GFNet-ClutteredFashionMNIST-v0", num_envs=2, vectorization_mode="vector_entry_point")
        venv.reset(seed=0)
        venv.step(venv.action_space.sample())
        venv.close()
        with gfnet_env.make_core("GFNet-ClutteredFashionMNIST-v0", num_envs=2) as core:
            result = gfnet_env.rollout(core, agents.make("center"), [0, 1])
        messages = {}
        for what, call in (("sb3_vec_env", lambda: gfnet_env.make_sb3_vec_env("GFNet-ClutteredFashionMNIST-v0")),
                           ("sb3_agent", lambda: agents.load_agent("sb3-ppo", WEIGHTS_DIR / "sb3_ppo_cluttered_fmnist.zip")),
                           ("plots", lambda: __import__("agents.benchmark.plots").benchmark.plots._figure())):
            try:
                call()
                messages[what] = None
            except MissingExtraError as e:
                messages[what] = str(e)
        from gfnet_cli.main import main
        import contextlib, io
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            status = main(["benchmark", "--env", "GFNet-ClutteredFashionMNIST-v0", "--agents", "random",
                           "--out", "unused-out"])
        print(json.dumps({"episodes": int(result.probs.shape[1]), "messages": messages, "status": status,
                          "stderr": err.getvalue(), "loaded": [m for m in %r if sys.modules.get(m) is not None]}))
    """ % (OPTIONAL,)))
    assert out["episodes"] == 2 and out["loaded"] == []
    for what, extra in (("sb3_vec_env", "sb3"), ("sb3_agent", "sb3"), ("plots", "benchmark")):
        assert out["messages"][what] is not None and f"pip install 'gfnet-gym[{extra}]'" in out["messages"][what]
    assert out["status"] == 2
    assert out["stderr"].startswith("gfnet benchmark: ") and "gfnet-gym[benchmark]" in out["stderr"]
    assert len(out["stderr"].strip().splitlines()) == 1


def _unguarded_optional_imports(path: Path) -> list[str]:
    """Module-level imports of an optional package outside a ``try`` (a function-level import is lazy)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []

    def visit(body, guarded: bool) -> None:
        for node in body:
            if isinstance(node, ast.Try):
                visit(node.body, True)
                continue
            if isinstance(node, (ast.If,)):
                visit(node.body, guarded)
                visit(node.orelse, guarded)
                continue
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in EXTRAS or name.startswith("torch.utils.tensorboard"):
                    if not guarded:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")

    visit(tree.body, False)
    return found


def test_optional_packages_are_imported_lazily_or_guarded():
    found = [hit for pkg in PACKAGES for f in sorted((ROOT / pkg).rglob("*.py")) for hit in
             _unguarded_optional_imports(f)]
    assert not found, "module-level imports of optional packages (import them where used, or guard them):\n" + \
        "\n".join(found)


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[ ;]", r.strip(), maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_extras_match_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for module, (dist, extra) in EXTRAS.items():
        assert dist in _requirement_names(extras[extra]), f"{dist} ({module}) is not in the {extra!r} extra"
    assert "dependencies" in project["dynamic"]
    # test = all = every extra
    assert any("gfnet-gym[all]" in r for r in extras["test"])
    for extra in ("sb3", "benchmark", "train"):
        assert extra in re.search(r"\[(.*)\]", extras["all"][0]).group(1)


def test_torch_is_pinned_in_one_file():
    pin = (ROOT / "requirements" / "torch.txt").read_text()
    lines = [ln.strip() for ln in pin.splitlines() if ln.strip() and not ln.startswith("#")]
    assert _requirement_names(lines) == {"torch", "torchvision"} and all("==" in ln for ln in lines)
    pyproject = (ROOT / "pyproject.toml").read_text()
    dynamic = tomllib.loads(pyproject)["tool"]["setuptools"]["dynamic"]["dependencies"]["file"]
    assert "requirements/torch.txt" in dynamic
    makefile = (ROOT / "Makefile").read_text()
    assert "requirements/torch.txt" in makefile
    for name, text in (("pyproject.toml", pyproject), ("Makefile", makefile), ("README.md",
                                                                                (ROOT / "README.md").read_text())):
        assert not re.search(r"torch(vision)?\s*(==|>=)", text), f"{name} states a torch version of its own"
    core = (ROOT / "requirements" / "core.txt").read_text().splitlines()
    assert not {"torch", "torchvision"} & _requirement_names([ln for ln in core if ln and not ln.startswith("#")])


@pytest.mark.parametrize("module", ["stable_baselines3", "matplotlib", "tensorboard", "tqdm"])
def test_extras_message_names_the_extra(module):
    from feature_nets.extras import MissingExtraError, require

    saved = sys.modules.get(module, "absent")
    sys.modules[module] = None
    try:
        with pytest.raises(MissingExtraError, match=re.escape(f"gfnet-gym[{EXTRAS[module][1]}]")):
            require(module, what="test")
    finally:
        if saved == "absent":
            del sys.modules[module]
        else:
            sys.modules[module] = saved
