"""Optional dependencies: each is imported where it is used, and a missing one names the extra that installs it.

The core install (``pip install gfnet-gym``) is what ``gym.make``, ``make_vec`` and ``rollout`` need. The extras
(pyproject.toml) add the rest:

* ``sb3`` — Stable-Baselines3 and sb3-contrib (SB3 agents, :mod:`gfnet_env.sb3`);
* ``benchmark`` — matplotlib and tqdm (``gfnet benchmark``: plots, progress bars);
* ``train`` — TensorBoard and tqdm, and the ``sb3`` extra (the training commands);
* ``torchrl`` — TorchRL and tensordict (:func:`gfnet_env.make_torchrl_env`, examples/torchrl_ppo.py);
* ``all`` — every extra.

:func:`require` imports an optional module or raises :class:`MissingExtraError` saying what needs it and which
``pip install`` brings it; :func:`check_extra` does the same for a whole list up front (what the ``gfnet``
command does before a command that needs an extra starts any work).
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtraError", "check_extra", "install_hint", "reraise_missing", "require"]

#: Import name → (distribution name, extra that installs it).
EXTRAS: dict[str, tuple[str, str]] = {
    "stable_baselines3": ("stable-baselines3", "sb3"),
    "sb3_contrib": ("sb3-contrib", "sb3"),
    "matplotlib": ("matplotlib", "benchmark"),
    "tqdm": ("tqdm", "benchmark"),
    "tensorboard": ("tensorboard", "train"),
    "torchrl": ("torchrl", "torchrl"),
    "tensordict": ("tensordict", "torchrl"),
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def install_hint(extra: str) -> str:
    """The command that installs ``extra`` (``pip install 'gfnet-gym[sb3]'``)."""
    return f"pip install 'gfnet-gym[{extra}]'"


def _missing(module: str, extra: str | None, what: str) -> MissingExtraError:
    dist, default_extra = EXTRAS.get(module.split(".")[0], (module.split(".")[0], None))
    extra = extra or default_extra or "all"
    return MissingExtraError(f"{what} needs {dist}, which is not installed: {install_hint(extra)} "
                             f"(or {install_hint('all')} for every optional part)", name=module)


def require(module: str, extra: str | None = None, what: str = "this") -> ModuleType:
    """Import the optional ``module`` (``"matplotlib.figure"``), or raise :class:`MissingExtraError`.

    Args:
        module: dotted module name.
        extra: the extra to name in the message (default: the one :data:`EXTRAS` lists for its package).
        what: what needs it, for the message (``"the benchmark's plots"``).

    Raises:
        MissingExtraError: the module's top-level package is not installed (an ``ImportError``). An import
            error inside an installed package propagates as it is.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        reraise_missing(e, extra, what)


def reraise_missing(error: ModuleNotFoundError, extra: str | None = None, what: str = "this"):
    """Re-raise ``error`` (caught around a module-level ``from optional_package import ...``) as a
    :class:`MissingExtraError` when the optional package itself is absent, else as it is."""
    top = (error.name or "").split(".")[0]
    if top in EXTRAS and importlib.util.find_spec(top) is None:  # the package itself is not installed
        raise _missing(top, extra, what) from error
    raise error


def check_extra(modules: tuple[str, ...] | list[str], extra: str, what: str) -> None:
    """Raise :class:`MissingExtraError` for the first of ``modules`` (top-level import names) that is not
    installed, without importing any of them."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise _missing(module, extra, what)
