"""Custom agents from the command line: ``--import MODULE``, the ``gfnet.agents`` entry-point group, and named
variants ``BASE:LABEL`` benchmarked side by side (issue 13, item 4)."""

from __future__ import annotations

import importlib.metadata
import json
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import needs_fashion_mnist

import agents
from agents import registry
from gfnet_cli import main as cli
from agents.base import Agent, RunContext
from agents.benchmark.run import resolve_runs
from agents.trained import write_agent_json

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path("tests") / "fixtures" / "user_agent_module.py"   # relative to ROOT, as a user would type it
DOTTED = "tests.fixtures.user_agent_module"
FMNIST_ENV = "GFNet-ClutteredFashionMNIST-v0"
#: A benchmark small enough for a few seconds on two cores.
SMALL = ["--episodes", "16", "--seeds", "1", "--fit-episodes", "16", "--batch-size", "16", "--device", "cpu"]


@pytest.fixture(autouse=True)
def isolated(monkeypatch):
    """Each test starts from the built-in registry: sys.path restored, the names the tests register removed, and
    the user modules forgotten, so that the next ``--import`` runs (and registers) them again."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(ROOT)
    names_before = set(registry._REGISTRY)
    modules_before = set(sys.modules)
    yield
    for name in set(registry._REGISTRY) - names_before:
        registry.unregister(name)
    for module in set(sys.modules) - modules_before:
        if module.startswith("gfnet_user_") or module in (DOTTED, "ep_agents", "user_mod_ok", "user_mod_broken"):
            del sys.modules[module]


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse errors
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- --import ---------------------------------------------------------------------------------------------

@needs_fashion_mnist
@pytest.mark.parametrize("module", [str(FIXTURE), DOTTED], ids=["path", "dotted"])
def test_benchmark_imports_a_user_agent(module, tmp_path, capsys):
    assert "my-agent" not in agents.available()
    out = tmp_path / "bench"
    code, stdout, stderr = run_cli(["benchmark", "--env", FMNIST_ENV, "--import", module, "--agents", "random,my-agent",
                                    "--out", str(out)] + SMALL, capsys)
    assert code == 0, stdout + stderr
    res = json.loads((out / "results.json").read_text())
    assert set(res["agents"]) == {"random", "my-agent"}
    assert res["agents"]["my-agent"]["n_runs"] == 1 and res["episodes"] == 16
    # a user agent's source names its code (not "baseline")
    source = res["agents"]["my-agent"]["source"]
    assert source.startswith("user code ") and "user_agent_module" in source and source.endswith(":MyAgent")
    assert "| my-agent |" in stdout


@needs_fashion_mnist
def test_show_imports_a_user_agent(tmp_path, capsys):
    out = tmp_path / "x.png"
    code, stdout, stderr = run_cli(["show", "--env", FMNIST_ENV, "--import", str(FIXTURE), "--agent", "my-agent",
                                    "--n", "2", "--out", str(out), "--device", "cpu"], capsys)
    assert code == 0, stdout + stderr
    assert out.stat().st_size > 0


def test_train_agent_imports_before_the_lookup(tmp_path, capsys):
    # the fixture's agent does not learn: the refusal proves it was registered (not "unknown agent")
    code, stdout, stderr = run_cli(["train-agent", "--import", DOTTED, "--agent", "my-agent", "--env", FMNIST_ENV,
                                    "--steps", "10", "--out", str(tmp_path / "never")], capsys)
    assert code == 2 and "'my-agent' does not learn" in stdout + stderr
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("module", ["no_such_user_module_xyz", "no_such_pkg_xyz.agents", "missing/agents.py",
                                    "my-agents"])
def test_unknown_module_is_one_line_naming_it(module, tmp_path, capsys):
    code, _, stderr = run_cli(["benchmark", "--env", FMNIST_ENV, "--import", module, "--agents", "random",
                              "--out", str(tmp_path / "never")], capsys)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gfnet benchmark: --import ")
    assert module in lines[0]
    assert not (tmp_path / "never").exists()


def test_a_bug_in_the_user_module_keeps_its_traceback(tmp_path):
    (tmp_path / "user_mod_broken.py").write_text("import no_such_dependency_xyz  # the user's own missing import\n")
    (tmp_path / "boom.py").write_text("raise RuntimeError('bug in the user code')\n")
    sys.path.insert(0, str(tmp_path))
    argv = ["benchmark", "--env", FMNIST_ENV, "--agents", "random", "--out", str(tmp_path / "never")]
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        cli.main(argv + ["--import", "user_mod_broken"])
    with pytest.raises(RuntimeError, match="bug in the user code"):
        cli.main(argv + ["--import", str(tmp_path / "boom.py")])
    assert not any(m.startswith("gfnet_user_boom") for m in sys.modules)  # a fixed file is read again


def test_import_from_the_working_directory(tmp_path, monkeypatch):
    from gfnet_cli.commands._common import import_user_modules

    (tmp_path / "user_mod_ok.py").write_text(textwrap.dedent("""
        import agents
        from agents.baselines import CenterAgent

        agents.register("cwd-agent", CenterAgent)
    """))
    monkeypatch.chdir(tmp_path)
    sys.path[:] = [p for p in sys.path if p not in ("", str(tmp_path))]  # as under the console script
    (module,) = import_user_modules(["user_mod_ok"])
    assert module.__name__ == "user_mod_ok" and "cwd-agent" in agents.available()
    # by path: executed once per process, so a second CLI call does not register twice
    first = import_user_modules([str(ROOT / FIXTURE)])
    assert import_user_modules([str(ROOT / FIXTURE)]) == first


# --- named variants ---------------------------------------------------------------------------------------

def test_base_name_and_variant_lookup():
    assert agents.base_name("sb3-a2c:gamma1") == "sb3-a2c" and agents.base_name("random") == "random"
    assert agents.factory_of("center:x") is agents.factory_of("center")
    assert type(agents.make("center:x")).__name__ == "CenterAgent"
    for bad in ("random:", ":x", "random:a/b", "random:a=b"):
        with pytest.raises(ValueError, match="BASE:LABEL"):
            agents.factory_of(bad)
    with pytest.raises(KeyError, match="unknown agent 'nope'"):
        agents.factory_of("nope:x")
    with pytest.raises(ValueError, match="without ':'"):
        agents.register("a:b", "agents.baselines:CenterAgent")


@needs_fashion_mnist
def test_benchmark_two_named_variants(tmp_path, capsys):
    out = tmp_path / "bench"
    code, stdout, stderr = run_cli(["benchmark", "--env", FMNIST_ENV, "--agents", "random:a,random:b,center:x",
                                    "--out", str(out)] + SMALL, capsys)
    assert code == 0, stdout + stderr
    res = json.loads((out / "results.json").read_text())
    assert list(res["agents"]) == ["random:a", "random:b", "center:x"]
    # a variant without --agent-dir is its base agent: the same seeds, the same numbers
    assert res["agents"]["random:a"]["anytime_top1"] == res["agents"]["random:b"]["anytime_top1"]
    assert res["reference"] is None
    with np.load(out / "per_image.npz") as arrays:
        assert arrays["center:x/correct"].shape[-1] == 16


class _Loadable(Agent):
    """A trainable agent whose "weights" file holds the corner it always looks at."""

    name = "loadable"
    trainable = True

    def __init__(self, corner: float = 0.0) -> None:
        self.corner = corner

    @classmethod
    def load(cls, path, device: str = "auto") -> _Loadable:
        return cls(float(Path(path).read_text()))

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        return np.full((len(obs), 2), self.corner, dtype=np.float32)


def test_variants_load_their_own_agent_dirs(tmp_path):
    agents.register("loadable", _Loadable)
    dirs = {}
    for label, corner in (("v1", "0.25"), ("v2", "0.75")):
        folder = tmp_path / label
        folder.mkdir()
        (folder / "w.txt").write_text(corner)
        write_agent_json(folder, "loadable", "w.txt")   # agent.json holds the base name, as learn() writes it
        dirs[f"loadable:{label}"] = [str(folder)]
    corners = {}
    for name in dirs:
        runs, source = resolve_runs(RunContext(name=name, env_id=FMNIST_ENV, model=None), dirs)
        assert source.startswith("trained:") and len(runs) == 1
        corners[name] = runs[0].build().corner
    assert corners == {"loadable:v1": 0.25, "loadable:v2": 0.75}
    # a trainable variant without weights says which --agent-dir it needs
    with pytest.raises(ValueError, match="--agent-dir loadable:v3=DIR"):
        resolve_runs(RunContext(name="loadable:v3", env_id=FMNIST_ENV, model=None), dirs)


# --- the gfnet.agents entry-point group -------------------------------------------------------------------

def test_entry_point_group(tmp_path, monkeypatch):
    (tmp_path / "ep_agents.py").write_text(textwrap.dedent("""
        import numpy as np
        from agents.base import Agent

        class EPAgent(Agent):
            name = "ep-agent"

            def act(self, obs, deterministic=True):
                return np.zeros((len(obs), 2), dtype=np.float32)
    """))
    sys.path.insert(0, str(tmp_path))
    calls = []

    def fake_entry_points(*, group: str):
        calls.append(group)
        pkg = SimpleNamespace(name="fake-agents-pkg")
        return [importlib.metadata.EntryPoint(name="ep-agent", value="ep_agents:EPAgent", group=group),
                SimpleNamespace(name="center", value="ep_agents:EPAgent", group=group, dist=pkg),   # a clash
                SimpleNamespace(name="ep-bad", value="ep_agents", group=group, dist=pkg)]           # malformed

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    with pytest.warns(UserWarning) as record:
        names = agents.available()
    messages = [str(w.message) for w in record]
    assert any("'center'" in m and "fake-agents-pkg" in m and "already registered" in m for m in messages)
    assert any("'ep-bad'" in m and "fake-agents-pkg" in m for m in messages)
    assert "ep-agent" in names and "ep-bad" not in names
    assert "ep_agents" not in sys.modules  # lazy: imported on the first lookup only
    assert type(agents.make("ep-agent")).__name__ == "EPAgent"
    assert type(agents.make("center")).__name__ == "CenterAgent"  # the built-in wins
    agents.factory_of("random")
    assert calls == ["gfnet.agents"]  # read once
