"""Architecture rules, checked on the source: no import cycles, package layering, no private core access,
agents see only their view, and the agent registry is open before the first lookup.

The import checks read the source with ``ast`` (nothing is imported), so they hold for code paths no other
test executes, and they keep working while a module elsewhere fails to import.
"""

from __future__ import annotations

import ast
import json
import os
import pkgutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("feature_nets", "gfnet_env", "agents", "gfnet_cli")


# --- reading imports from the source ------------------------------------------------------------------

@dataclass(frozen=True)
class Import:
    """One import statement's target, resolved to an absolute dotted name."""

    source: str          # importing module
    target: str          # absolute dotted name (a module, or a module's attribute for ``from m import x``)
    line: int
    in_function: bool    # inside a def / lambda (runs on first call, not at import time)
    type_checking: bool  # inside ``if TYPE_CHECKING:`` (never runs)


def walk_modules(pkg_dir: Path, prefix: str) -> dict[str, tuple[Path, bool]]:
    """``{module name: (file, is_package)}`` of a package and all its sub-modules, found without importing
    anything (``pkgutil.walk_packages`` would import each sub-package to recurse into it)."""
    out = {prefix: (pkg_dir / "__init__.py", True)}
    for info in pkgutil.iter_modules([str(pkg_dir)]):
        name = f"{prefix}.{info.name}"
        if info.ispkg:
            out.update(walk_modules(pkg_dir / info.name, name))
        else:
            out[name] = (pkg_dir / f"{info.name}.py", False)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def module_imports(module: str, path: Path, is_package: bool) -> list[Import]:
    """Every import in a module's source, relative ones resolved against the module's package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    # the package a relative import of level 1 starts from: the module itself for an __init__
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool, type_checking: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(module, alias.name, node.lineno, in_function, type_checking))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                if node.level - 1 >= len(parts):
                    raise ValueError(f"{path}:{node.lineno}: relative import beyond the top-level package")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module
            for alias in node.names:
                # ``from m import x``: x is a sub-module or an attribute of m; resolve_target decides which
                found.append(Import(module, f"{base}.{alias.name}", node.lineno, in_function, type_checking))
        for child in ast.iter_child_nodes(node):
            if isinstance(node, ast.If) and _is_type_checking(node.test) and child in node.body:
                visit(child, in_function, True)
            else:
                visit(child, in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)),
                      type_checking)

    visit(tree, False, False)
    return found


def resolve_target(target: str, modules: set[str]) -> str | None:
    """The module of ``modules`` an import target lands in: the longest dotted prefix that is one of them."""
    parts = target.split(".")
    for k in range(len(parts), 0, -1):
        name = ".".join(parts[:k])
        if name in modules:
            return name
    return None


def import_graph(modules: dict[str, tuple[Path, bool]]) -> dict[str, dict[str, list[Import]]]:
    """``{module: {imported module of the same set: [imports]}}`` over run-time imports (module level and
    function level; ``if TYPE_CHECKING:`` imports never run and are left out)."""
    names = set(modules)
    graph: dict[str, dict[str, list[Import]]] = {m: {} for m in modules}
    for name, (path, is_pkg) in modules.items():
        for imp in module_imports(name, path, is_pkg):
            if imp.type_checking:
                continue
            dest = resolve_target(imp.target, names)
            if dest is not None and dest != name:
                graph[name].setdefault(dest, []).append(imp)
    return graph


def find_cycle(graph: dict[str, dict[str, list[Import]]]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of the directed graph, or None (iterative DFS, deterministic order)."""
    white, grey, black = 0, 1, 2
    colour = {n: white for n in graph}
    for root in sorted(graph):
        if colour[root] != white:
            continue
        stack = [(root, iter(sorted(graph[root])))]
        path = [root]
        colour[root] = grey
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = black
                stack.pop()
                path.pop()
            elif colour[child] == grey:
                return path[path.index(child):] + [child]
            elif colour[child] == white:
                colour[child] = grey
                stack.append((child, iter(sorted(graph[child]))))
                path.append(child)
    return None


def describe_cycle(cycle: list[str], graph) -> str:
    lines = []
    for a, b in zip(cycle, cycle[1:]):
        lines_seen = sorted({(i.line, i.in_function) for i in graph[a][b]})
        where = ", ".join(f"line {line}{' (in a function)' if in_function else ''}" for line, in_function in lines_seen)
        lines.append(f"  {a} -> {b}   [{where}]")
    return "import cycle:\n" + "\n".join(lines)


def all_imports(package: str) -> list[Import]:
    return [imp for name, (path, is_pkg) in walk_modules(ROOT / package, package).items()
            for imp in module_imports(name, path, is_pkg)]


# --- (a) no import cycle ----------------------------------------------------------------------------------

def _write_package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(textwrap.dedent(text))
    return root


def test_cycle_finder_sees_relative_and_function_level_cycles(tmp_path):
    """The checker itself: relative imports of every level, ``from . import x``, sub-packages, a cycle closed
    only by a function-level import, and TYPE_CHECKING imports that are not a cycle."""
    pkg = _write_package(tmp_path / "demo", {
        "__init__.py": "from .a import A\n",
        "a.py": "from .sub.b import B\nA = 1\n",
        "sub/__init__.py": "",
        "sub/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import A\nB = 2\n"
                    "def late():\n    from ..c import C\n    return C\n",
        "c.py": "from demo.sub import b\nfrom . import a\nC = 3\n",
    })
    modules = walk_modules(pkg, "demo")
    assert set(modules) == {"demo", "demo.a", "demo.sub", "demo.sub.b", "demo.c"}
    graph = import_graph(modules)
    assert set(graph["demo"]) == {"demo.a"}
    assert set(graph["demo.a"]) == {"demo.sub.b"}
    assert set(graph["demo.sub.b"]) == {"demo.c"}            # the TYPE_CHECKING import of ..a is not an edge
    assert graph["demo.sub.b"]["demo.c"][0].in_function
    assert set(graph["demo.c"]) == {"demo.sub.b", "demo.a"}  # `from demo.sub import b` is the module b
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1]
    assert set(cycle) == {"demo.a", "demo.sub.b", "demo.c"}
    assert "(in a function)" in describe_cycle(cycle, graph)
    # without the function-level import there is none
    (pkg / "sub" / "b.py").write_text("B = 2\n")
    assert find_cycle(import_graph(walk_modules(pkg, "demo"))) is None


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_inside_package(package):
    modules = walk_modules(ROOT / package, package)
    assert len(modules) > 3, f"found only {sorted(modules)} under {package}/"
    graph = import_graph(modules)
    assert any(graph.values()), f"no import between modules of {package} found: the walk is broken"
    function_level = sorted({(i.source, dest, i.line) for src, edges in graph.items()
                             for dest, imps in edges.items() for i in imps if i.in_function})
    # function-level imports are edges like any other (a cycle is a cycle); they are listed (pytest -s, or
    # with a failure) because they hide a dependency from a module's header
    print(f"{package}: {len(modules)} modules, {sum(len(e) for e in graph.values())} internal import edges; "
          f"{len(function_level)} imports inside functions:")
    for src, dest, line in function_level:
        print(f"    {src}:{line} -> {dest}")
    cycle = find_cycle(graph)
    assert cycle is None, describe_cycle(cycle, graph)


def test_known_edges_are_found():
    """A few imports that exist today, so a broken walk or resolver cannot pass the cycle test vacuously."""
    graph = import_graph(walk_modules(ROOT / "gfnet_env", "gfnet_env"))
    assert "gfnet_env.core" in graph["gfnet_env.env"]      # from .core import GFNetCore, slice_obs
    assert "gfnet_env.core" in graph["gfnet_env.rollout"]
    assert "gfnet_env.settings" in graph["gfnet_env.factory"]


# --- (b) layering -------------------------------------------------------------------------------------------

def _violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [f"{i.source}:{i.line} imports {i.target}{' (in a function)' if i.in_function else ''}"
            f"{' (TYPE_CHECKING)' if i.type_checking else ''}"
            for i in all_imports(package) if i.target.split(".")[0] in forbidden]


def test_feature_nets_is_the_bottom_layer():
    """feature_nets (the networks) knows nothing of the env, the agents, Gymnasium or SB3."""
    bad = _violations("feature_nets", ("gfnet_env", "agents", "gymnasium", "gym", "stable_baselines3", "sb3_contrib"))
    assert not bad, "feature_nets must not import these:\n" + "\n".join(bad)


def test_gfnet_env_does_not_import_agents():
    bad = _violations("gfnet_env", ("agents", "gfnet_cli"))
    assert not bad, "gfnet_env must not import agents:\n" + "\n".join(bad)


def test_nothing_imports_the_cli():
    """gfnet_cli is the top layer: the command assembles the library, the library never reaches up to it."""
    bad = sum((_violations(p, ("gfnet_cli",)) for p in ("feature_nets", "gfnet_env", "agents")), [])
    assert not bad, "only gfnet_cli may import gfnet_cli:\n" + "\n".join(bad)


def test_agents_and_their_trainers_do_not_import_the_benchmark():
    """The benchmark stands above the agents: an agent, its trainer and its pictures never import it."""
    bad = [f"{i.source}:{i.line} imports {i.target}" for i in all_imports("agents")
           if not i.source.startswith("agents.benchmark") and i.target.startswith("agents.benchmark")]
    assert not bad, "only agents.benchmark may import agents.benchmark:\n" + "\n".join(bad)
    # the check reads real imports: the benchmark's own modules import one another
    assert any(i.source.startswith("agents.benchmark.") and i.target.startswith("agents.benchmark.")
               for i in all_imports("agents"))


def test_layering_check_sees_imports():
    """The layering checks read real imports: gfnet_env uses feature_nets and gymnasium, agents uses gfnet_env."""
    tops = {i.target.split(".")[0] for i in all_imports("gfnet_env")}
    assert {"feature_nets", "gymnasium", "torch"} <= tops
    assert "gfnet_env" in {i.target.split(".")[0] for i in all_imports("agents")}


# --- (c) no private core attribute outside gfnet_env --------------------------------------------------------

def core_private_attributes() -> set[str]:
    """Every ``self._x = ...`` of ``GFNetCore.__init__`` in gfnet_env/core.py (dunders excluded)."""
    tree = ast.parse((ROOT / "gfnet_env" / "core.py").read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "GFNetCore")
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    names = set()
    for node in ast.walk(init):
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        for target in targets:
            for t in ast.walk(target):  # tuple targets: self._a, self._b = ...
                if (isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"
                        and t.attr.startswith("_") and not t.attr.startswith("__")):
                    names.add(t.attr)
    return names


def private_accesses(path: Path, private: set[str]) -> list[str]:
    """``X._name`` and ``getattr(X, "_name")`` with ``_name`` in ``private``, except on ``self`` / ``cls``
    (an agent's own ``self._state`` is not the core's)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in private:
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            hits.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and node.args[1].value in private):
            hits.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    return hits


def test_core_private_attribute_list_is_read():
    private = core_private_attributes()
    # the per-episode buffers and the networks are private today; the list is read, not hard-coded
    assert {"_images", "_targets", "_targets_np", "_logits", "_state", "_model", "_loader", "_closed"} <= private
    assert not any(p.startswith("__") for p in private)


def test_checker_flags_private_access(tmp_path):
    f = tmp_path / "bad.py"
    f.write_text("def f(core, env):\n    x = core._images\n    y = env.unwrapped.core._targets_np\n"
                 "    z = getattr(core, '_state')\n    self = core\n    return self._model, core.images\n")
    hits = private_accesses(f, core_private_attributes())
    assert [h.split(": ", 1)[1] for h in hits] == ["core._images", "env.unwrapped.core._targets_np",
                                                   "getattr(core, '_state')"]


@pytest.mark.parametrize("folder", ["agents", "benchmarks"])
def test_no_private_core_access(folder):
    private = core_private_attributes()
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"no Python files under {folder}/"
    hits = [h for f in files for h in private_accesses(f, private)]
    assert not hits, (f"{folder}/ reads GFNetCore's private attributes (use its public API: observe, step, "
                      f"reset_info, view, privileged_view, model, dataset):\n" + "\n".join(hits))


# --- (d) an agent sees only its view ------------------------------------------------------------------------

def _label_reading_agent(attribute: str, privileged: bool):
    from agents.base import Agent

    class LabelReader(Agent):
        name = "label-reader"

        def __init__(self):
            self.seen = []

        def act(self, obs, deterministic=True):
            labels = self.view.labels() if attribute == "labels" else self.view.targets
            self.seen.append(np.asarray(labels).copy())
            return np.full((len(obs), 2), 0.5, dtype=np.float32)

    LabelReader.privileged = privileged
    return LabelReader()


@pytest.mark.parametrize("attribute", ["labels", "targets"])
def test_agent_cannot_read_labels_through_its_view(attribute):
    from gfnet_env.core import GFNetCore
    from gfnet_env.rollout import rollout
    from gfnet_env.settings import EnvSettings
    from gfnet_env.views import EnvView
    from helpers import tiny_dataset, tiny_model

    agent = _label_reading_agent(attribute, privileged=False)
    assert agent.upper_bound is False
    with GFNetCore(tiny_model(), tiny_dataset(), 3, EnvSettings(), device="cpu") as core:
        with pytest.raises(AttributeError, match=attribute):
            rollout(core, agent, [0, 1, 2])
    assert isinstance(agent.view, EnvView)  # it was bound, to the public view
    assert agent.seen == []


def test_privileged_agent_reads_labels_and_is_an_upper_bound():
    from gfnet_env.core import GFNetCore
    from gfnet_env.rollout import rollout
    from gfnet_env.settings import EnvSettings
    from gfnet_env.views import PrivilegedView
    from helpers import tiny_dataset, tiny_model

    ds = tiny_dataset()
    agent = _label_reading_agent("labels", privileged=True)
    assert agent.upper_bound is True
    with GFNetCore(tiny_model(), ds, 3, EnvSettings(), device="cpu") as core:
        result = rollout(core, agent, [0, 1, 2])
        steps = core.max_steps
    assert isinstance(agent.view, PrivilegedView)
    expected = np.array([int(ds[i][1]) for i in (0, 1, 2)])
    assert len(agent.seen) == steps
    for labels in agent.seen:
        np.testing.assert_array_equal(labels, expected)
    np.testing.assert_array_equal(result.targets.numpy(), expected)


# --- (e) the agent registry is open before the first lookup -------------------------------------------------

def _run_python(code: str, tmp_path: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"subprocess failed:\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_user_agent_registered_before_first_lookup(tmp_path):
    (tmp_path / "my_user_agents.py").write_text(textwrap.dedent("""
        import numpy as np
        from agents.base import Agent

        class Corner(Agent):
            name = "corner"

            def act(self, obs, deterministic=True):
                return np.zeros((len(obs), 2), dtype=np.float32)
    """))
    out = _run_python("""
        import json, sys
        import agents.registry as registry
        before = {m: m in sys.modules for m in ("agents.baselines", "my_user_agents")}
        registry.register("my-corner", "my_user_agents:Corner")   # before any lookup, before agents.baselines
        still = "agents.baselines" in sys.modules
        mine = registry.make("my-corner")
        center = registry.make("center")
        print(json.dumps({
            "before": before, "baselines_after_register": still,
            "mine": type(mine).__module__ + ":" + type(mine).__name__,
            "center": type(center).__module__ + ":" + type(center).__name__,
            "available": registry.available(),
            "top_level_make_is_registry": __import__("agents").make is registry.make,
        }))
    """, tmp_path)
    assert out["before"] == {"agents.baselines": False, "my_user_agents": False}
    assert out["baselines_after_register"] is False
    assert out["mine"] == "my_user_agents:Corner"
    assert out["center"] == "agents.baselines:CenterAgent"
    assert {"my-corner", "center"} <= set(out["available"])
    assert out["top_level_make_is_registry"] is True


def test_importing_agents_is_light(tmp_path):
    out = _run_python("""
        import json, sys
        import agents
        print(json.dumps({m: m in sys.modules for m in
                          ("agents.baselines", "agents.sb3.agent", "stable_baselines3", "sb3_contrib")}))
    """, tmp_path)
    assert out == {"agents.baselines": False, "agents.sb3.agent": False, "stable_baselines3": False,
                   "sb3_contrib": False}
