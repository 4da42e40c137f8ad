"""Stable-Baselines3 files: loading them without running code from them, saving them atomically, and finding
the newest valid checkpoint.

An SB3 model zip holds ``data`` (JSON; every entry JSON cannot hold — spaces, the policy class, schedules,
numpy arrays — is cloudpickled and base64-encoded under ``":serialized:"``) and ``*.pth`` tensor files (SB3
reads those with ``weights_only=True``). Unpickling runs whatever the pickle names, so a crafted ``agent.zip``
would run code the moment SB3 loads it. :func:`load_sb3_model` therefore decodes every pickled entry itself
with :class:`RestrictedUnpickler`, which builds only known data types (gymnasium spaces, numpy arrays, dtypes
and random generators, SB3's own policy / buffer / feature-extractor / noise / schedule classes, torch's
``nn`` layer and optimizer classes) and refuses any other global with :class:`UntrustedAgentError`. The
decoded values reach SB3 through its ``custom_objects`` argument, so SB3's own unpickler never sees the file's
pickles. Replay buffers (``*.pkl``, off-policy resume) are read the same way.

``trust_agent=True`` (``--trust-agent`` on the CLI) uses SB3's loader unchanged, for files you made or trust
(e.g. models whose schedules are pickled functions, as older SB3 versions wrote). It must be the boolean
``True``; anything else is refused (the same check as every opt-in: :func:`feature_nets.trust.check_opt_in`).

The zip's ``*.pth`` entries (weights, optimizer state, ``pytorch_variables.pth``) are read by SB3 with
``weights_only=True`` whatever the trust; one whose pickle would run code is refused by the project's one trust
gate (:func:`feature_nets.trust.refuse_untrusted`): an :class:`UntrustedAgentError` (an
:class:`~feature_nets.trust.UntrustedPickleError`) naming the file, the entry and the globals, without torch's advice.

Saves go through :func:`feature_nets.files.atomic_write` (temporary file + rename), so a crash, ``kill -9`` or
a full disk never leaves a partial zip under a checkpoint's name; :func:`latest_checkpoint` still skips
invalid zips (e.g. a 0-byte file left by an older version) with a warning.
"""

from __future__ import annotations

import base64
import binascii
import collections
import importlib
import io
import json
import math
import numbers
import pickle
import re
import struct
import warnings
import zipfile
import os
from pathlib import Path
from typing import Any


from feature_nets.files import atomic_write
from feature_nets.safe_pickle import torch_reason
from feature_nets.trust import UntrustedPickleError, check_opt_in, refuse_untrusted

__all__ = ["OversizedPickleError", "RestrictedUnpickler", "UntrustedAgentError", "check_policy_size",
           "check_trust_flag", "checkpoint_problem", "latest_checkpoint", "load_replay_buffer", "load_sb3_model",
           "safe_custom_objects", "save_model", "save_replay_buffer", "check_policy_class"]

#: How to opt in, appended to every refusal.
OPT_IN = ("load it only if you trust where it came from: pass --trust-agent to the gfnet command "
          "(trust_agent=True in Python)")


#: The refusal's advice for a tensor entry (``*.pth``): SB3 never unpickles those fully, whatever the trust.
PTH_ADVICE = ("SB3 reads the tensor files (*.pth) of a model zip with torch's safe loader only, also with "
              "--trust-agent, so this file cannot be loaded; re-save the model from a trusted environment.")


class UntrustedAgentError(UntrustedPickleError, ValueError):
    """An agent file holds a pickled object that would run code (or is not understood) and trust was not given;
    the one refusal of the trust gate (:class:`~feature_nets.trust.UntrustedPickleError`), also a ``ValueError``."""


class OversizedPickleError(UntrustedAgentError):
    """A pickled entry asks for memory the file does not hold (``bytearray(1.5e9)``, a layer built by calling its
    class, nesting too deep): crafted or damaged, whatever the trust."""


#: (module, name) pairs that are always safe to build.
_EXACT = {
    ("collections", "deque"), ("collections", "OrderedDict"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"), ("builtins", "complex"),
    ("builtins", "bytearray"),
    ("numpy", "dtype"), ("numpy", "ndarray"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
    ("numpy.random._pickle", "__generator_ctor"), ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"), ("numpy.random.bit_generator", "SeedSequence"),
    ("numpy.random._pcg64", "PCG64"), ("numpy.random._pcg64", "PCG64DXSM"), ("numpy.random._mt19937", "MT19937"),
    ("numpy.random._philox", "Philox"), ("numpy.random._sfc64", "SFC64"),
    ("torch", "device"),
    # numpy's float scalar types: the dtype an SB3 action noise keeps (TD3/SAC with action_noise_std)
    ("numpy", "float16"), ("numpy", "float32"), ("numpy", "float64"),
    ("stable_baselines3.common.type_aliases", "TrainFreq"),
    ("stable_baselines3.common.type_aliases", "TrainFrequencyUnit"),
}
_CLASS_PREFIXES = ("gymnasium.spaces.", "stable_baselines3.", "sb3_contrib.", "torch.nn.modules.", "torch.optim.",
                   "numpy.dtypes", "gfnet_env.sb3_extractors")


def _safe_class(module: str, obj: Any) -> bool:
    """Whether ``obj`` (found in ``module``) is a class of a known-safe kind."""
    if not isinstance(obj, type):
        return False
    if module.startswith("gymnasium.spaces."):
        from gymnasium.spaces import Space

        return issubclass(obj, Space)
    if module.startswith(("stable_baselines3.", "sb3_contrib.")):
        from stable_baselines3.common import utils
        from stable_baselines3.common.buffers import BaseBuffer
        from stable_baselines3.common.noise import ActionNoise
        from stable_baselines3.common.policies import BasePolicy
        from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

        schedules = tuple(getattr(utils, n) for n in ("FloatSchedule", "ConstantSchedule", "LinearSchedule")
                          if hasattr(utils, n))
        return issubclass(obj, (BasePolicy, BaseBuffer, BaseFeaturesExtractor, ActionNoise)) or obj in schedules
    if module == "gfnet_env.sb3_extractors":  # this package's own features extractors
        from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

        return issubclass(obj, BaseFeaturesExtractor)
    if module.startswith("torch.nn.modules."):
        import torch

        return issubclass(obj, torch.nn.Module)
    if module.startswith("torch.optim."):
        import torch

        return issubclass(obj, torch.optim.Optimizer)
    if module.startswith("numpy.dtypes"):
        import numpy as np

        return issubclass(obj, np.dtype)
    return False


#: What the restricted unpickler may build: bytes created from a number (``bytearray(n)``, an array's shape given
#: as arguments) rather than copied from the file, and how deep containers and objects may nest.
MAX_CREATED_BYTES = 64 * 2**20
MAX_NESTING = 100
_SIZED = {("builtins", "bytearray"), ("numpy", "ndarray"), ("numpy._core.multiarray", "_reconstruct"),
          ("numpy.core.multiarray", "_reconstruct")}


class RestrictedUnpickler(pickle._Unpickler):
    """An unpickler that builds only known-safe globals (see the module docstring); anything else raises
    :class:`UntrustedAgentError` naming the global. Persistent ids are refused by :mod:`pickle` itself.

    It also bounds what a few bytes of pickle can make it allocate (this is pickle's pure-Python unpickler, whose
    opcodes can be checked one by one; entries are small and replay buffers are a few large arrays, so speed is
    not an issue): the classes of the allowed families (spaces, SB3 classes, ``torch.nn`` layers, optimizers) are
    rebuilt only the way pickle saves objects (``cls.__new__`` and their state), never by calling them, so a
    43-byte ``torch.nn.Linear(20000, 20000)`` is refused; ``bytearray(n)`` and arrays whose size comes from a
    number rather than from bytes in the file are limited to :data:`MAX_CREATED_BYTES`; a ``BYTEARRAY8`` longer
    than what is left of the data is refused before it is allocated; and nesting deeper than :data:`MAX_NESTING`
    (which would crash whatever walks the object later) is refused after loading."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, *args, **kwargs) -> None:
        super().__init__(file, *args, **kwargs)
        self._data_size = _remaining(file)
        self._sized: dict[int, tuple[str, str]] = {}  # id of an allowed callable that sizes memory by a number

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _EXACT:
            found = super().find_class(module, name)
            if (module, name) in _SIZED:
                self._sized[id(found)] = (module, name)
            return found
        if module.startswith(_CLASS_PREFIXES) and "." not in name and not name.startswith("_"):
            try:
                obj = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError):
                obj = None
            if _safe_class(module, obj):
                return obj
        raise UntrustedAgentError(f"it refers to {module}.{name}, which is not a known-safe data type")

    def load(self) -> Any:
        return _check_nesting(super().load())

    # --- the opcodes that call something or allocate from a number ----------------------------------------
    def _call(self, func: Any, args: tuple) -> Any:
        if id(func) in self._sized:
            _check_size(self._sized[id(func)], args)
        if isinstance(func, type) and _family_class(func):
            raise OversizedPickleError(f"it calls {func.__module__}.{func.__qualname__}(...) to construct an object, "
                                      "which pickle never does for data (it could allocate without limit)")
        return func(*args)

    def load_reduce(self) -> None:
        stack = self.stack
        args = stack.pop()
        stack[-1] = self._call(stack[-1], args)
    dispatch[pickle.REDUCE[0]] = load_reduce

    def _instantiate(self, klass, args) -> None:
        self.append(self._call(klass, tuple(args)))

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args, {}))
    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args, kwargs))
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def _new(self, cls: Any, args: tuple, kwargs: dict) -> Any:
        """``cls.__new__(cls, *args, **kwargs)`` (NEWOBJ), with the size of an ``ndarray`` checked first."""
        if not isinstance(cls, type):
            raise pickle.UnpicklingError(f"NEWOBJ of a {type(cls).__name__}, not of a class")
        if id(cls) in self._sized:
            _check_size(self._sized[id(cls)], args)
        return cls.__new__(cls, *args, **kwargs)

    def load_bytearray8(self) -> None:
        (size,) = struct.unpack("<Q", self.read(8))
        if self._data_size is not None and size > self._data_size:
            raise pickle.UnpicklingError(f"BYTEARRAY8 of {size} bytes in {self._data_size} bytes of data "
                                         "(truncated or crafted)")
        self.append(bytearray(self.read(size)))
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8


def _check_size(name: tuple[str, str], args: tuple) -> None:
    """Refuse ``bytearray(n)`` and array shapes of more than :data:`MAX_CREATED_BYTES`."""
    if name == ("builtins", "bytearray"):
        sizes = [int(a) for a in args[:1] if isinstance(a, numbers.Integral)]
    else:  # ndarray(shape, ...) / _reconstruct(cls, shape, dtype): the shape's element count, 8 bytes each at most
        shape = next((a for a in args if isinstance(a, (tuple, list, numbers.Integral)) and not isinstance(a, bool)),
                     ())
        shape = (shape,) if isinstance(shape, numbers.Integral) else shape
        sizes = [8 * math.prod(abs(int(n)) for n in shape if isinstance(n, numbers.Integral))]
    if any(n > MAX_CREATED_BYTES for n in sizes):
        raise OversizedPickleError(f"it asks {name[0]}.{name[1]} for {max(sizes):,} bytes that the file does not "
                                  f"hold (at most {MAX_CREATED_BYTES:,} may be created from a number)")


def _family_class(cls: type) -> bool:
    """A class of the allowed families (spaces, SB3 classes, layers, optimizers), not an exact-listed type."""
    return (cls.__module__, cls.__qualname__) not in _EXACT and cls.__module__.startswith(_CLASS_PREFIXES)


def _remaining(file: Any) -> int | None:
    try:
        return len(file.getbuffer()) - file.tell()
    except (AttributeError, ValueError):
        return None


def _children(obj: Any) -> list:
    if isinstance(obj, dict):
        return [*obj.keys(), *obj.values()]
    if isinstance(obj, (list, tuple, set, frozenset, collections.deque)):
        return list(obj)
    d = None if isinstance(obj, type) else getattr(obj, "__dict__", None)
    return list(d.values()) if isinstance(d, dict) else []


def _check_nesting(root: Any) -> Any:
    """``root`` if no chain of containers / object attributes in it is deeper than :data:`MAX_NESTING` (walked
    without recursion; a shared object is walked again only when reached deeper than before)."""
    deepest: dict[int, int] = {}
    todo = [(root, 0)]
    while todo:
        obj, depth = todo.pop()
        if depth > MAX_NESTING:
            raise OversizedPickleError(f"it nests containers or objects more than {MAX_NESTING} levels deep")
        if deepest.get(id(obj), -1) >= depth:
            continue
        deepest[id(obj)] = depth
        todo.extend((child, depth + 1) for child in _children(obj))
    return root


def _restricted_loads(data: bytes) -> Any:
    return RestrictedUnpickler(io.BytesIO(data)).load()


def check_trust_flag(trust_agent: Any) -> bool:
    """``trust_agent`` itself when it is a ``bool``; anything else (``"no"``, 1, None) is a ``TypeError``."""
    return check_opt_in(trust_agent, "trust_agent", "CLI: --trust-agent")


def _read_data(path: Path) -> dict:
    """The ``data`` JSON of an SB3 zip (ValueError when the file is not one)."""
    try:
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read("data").decode())
    except (zipfile.BadZipFile, KeyError, EOFError, ValueError, RecursionError) as e:
        raise ValueError(f"{path} is not a Stable-Baselines3 model file (a zip archive with a 'data' entry): "
                         f"{e}; it may be truncated or empty") from e


def safe_custom_objects(path: Path) -> dict[str, Any]:
    """Every pickled entry of ``path``'s ``data``, decoded with :class:`RestrictedUnpickler`."""
    out = {}
    for key, item in _read_data(path).items():
        if not (isinstance(item, dict) and ":serialized:" in item):
            continue
        try:
            out[key] = _restricted_loads(base64.b64decode(item[":serialized:"].encode()))
        except OversizedPickleError as e:
            raise OversizedPickleError(f"refusing to load {path}: its entry {key!r} is a pickled object and {e}; the "
                                       "file was crafted or damaged") from None
        except UntrustedAgentError as e:
            raise UntrustedAgentError(f"refusing to load {path}: its entry {key!r} is a pickled object and {e} "
                                      f"(unpickling it could run code); {OPT_IN}") from None
        except (pickle.UnpicklingError, binascii.Error, EOFError, ValueError, TypeError, AttributeError,
                ImportError) as e:
            raise UntrustedAgentError(f"refusing to load {path}: its entry {key!r} could not be decoded safely "
                                      f"({type(e).__name__}: {e}); {OPT_IN}") from None
    return out


def load_sb3_model(algo_class, path, trust_agent: bool = False, **load_kwargs):
    """``algo_class.load(path, **load_kwargs)`` without running code from the file unless ``trust_agent is True``.

    Args:
        algo_class: the SB3 algorithm class (``PPO``, ``SAC``, … ``RecurrentPPO``).
        path: the model zip.
        trust_agent: ``True`` to let SB3 unpickle the file itself (full Python unpickling).
        **load_kwargs: SB3 ``load`` arguments (``device``, ``env``, ``tensorboard_log``, …).

    Raises:
        UntrustedAgentError: a pickled entry names something other than a known-safe data type.
        ValueError: the file is not an SB3 zip.
    """
    path = Path(path)
    if not check_trust_flag(trust_agent):
        load_kwargs["custom_objects"] = {**safe_custom_objects(path), **load_kwargs.pop("custom_objects", {})}
        check_policy_size(path, load_kwargs["custom_objects"].get("policy_kwargs"))
        check_policy_class(path, load_kwargs["custom_objects"].get("policy_class"))
    try:
        return algo_class.load(str(path), **load_kwargs)
    except pickle.UnpicklingError as e:  # a *.pth entry refused by torch's weights_only loader inside SB3
        _refuse_tensor_entries(path)
        raise ValueError(f"{path} holds a tensor file that is not readable (truncated or damaged?): "
                         f"{torch_reason(str(e))}") from None
    except RuntimeError as e:  # torch's load_state_dict: the weights do not fit the policy the file describes
        if "state_dict" not in str(e):
            raise
        first = " ".join(str(e).split())[:300]
        raise ValueError(f"{path}: its weights (policy.pth) do not fit the policy its data describes ({first}); "
                         "the file was edited or damaged: use the zip the training run wrote") from None


def check_policy_class(path: Path, policy_class: Any) -> None:
    """Refuse a zip whose ``policy_class`` is not a Stable-Baselines3 policy (``torch.nn.Identity``, say: an allowed
    torch class, but SB3 would build it and fail on the weights), before SB3 builds anything."""
    if policy_class is None:
        return
    from stable_baselines3.common.policies import BasePolicy

    if not (isinstance(policy_class, type) and issubclass(policy_class, BasePolicy)):
        shown = getattr(policy_class, "__qualname__", type(policy_class).__name__)
        module = getattr(policy_class, "__module__", "")
        raise ValueError(f"{path}: its policy_class is {module + '.' if module else ''}{shown}, not a "
                         "Stable-Baselines3 policy; the file was edited or damaged: use the zip the training run wrote")


def check_policy_size(path: Path, policy_kwargs: Any) -> None:
    """Sizes before allocation: refuse a zip whose ``policy_kwargs`` ask for layers whose weights alone (the products
    of consecutive ``net_arch`` widths, float32) exceed what its ``policy.pth`` holds, before SB3 builds the policy
    (``net_arch=[200000, 200000]`` in a 4 MB zip is 160 GB of weights)."""
    arch = policy_kwargs.get("net_arch") if isinstance(policy_kwargs, dict) else None
    chains = list(arch.values()) if isinstance(arch, dict) else \
        [[w for w in arch if isinstance(w, numbers.Integral)]] + [c for d in arch if isinstance(d, dict)
                                                                   for c in d.values()] if isinstance(arch, list) else []
    need = 4 * sum(int(a) * int(b) for c in chains if isinstance(c, list) for a, b in zip(c, c[1:])
                   if isinstance(a, numbers.Integral) and isinstance(b, numbers.Integral))
    try:
        with zipfile.ZipFile(path) as z:
            stored = z.getinfo("policy.pth").file_size
    except (KeyError, zipfile.BadZipFile, OSError):
        return
    if need > stored:
        raise OversizedPickleError(f"refusing to load {path}: its policy_kwargs net_arch={arch!r:.80} asks for "
                                  f"{need:,} bytes of weights but its policy.pth holds {stored:,} bytes (crafted or "
                                  "damaged)")


def _refuse_tensor_entries(path: Path) -> None:
    """The trust gate's refusal for the first ``*.pth`` entry of the zip ``path`` whose pickle would run code."""
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if name.endswith(".pth"):
                refuse_untrusted(path, z.read(name), entry=name, opt_in=PTH_ADVICE, cls=UntrustedAgentError)


def load_replay_buffer(model, path, trust_agent: bool = False) -> None:
    """Put the replay buffer pickled at ``path`` into the off-policy ``model`` (restricted unless trusted)."""
    from stable_baselines3.common.buffers import ReplayBuffer

    if check_trust_flag(trust_agent):
        model.load_replay_buffer(str(path))
        return
    try:
        buffer = _restricted_loads(Path(path).read_bytes())
    except OversizedPickleError as e:
        raise OversizedPickleError(f"refusing to load the replay buffer {path}: {e}; the file was crafted or "
                                   "damaged") from None
    except UntrustedAgentError as e:
        raise UntrustedAgentError(f"refusing to load the replay buffer {path}: {e} (unpickling it could run "
                                  f"code); {OPT_IN}") from None
    if not isinstance(buffer, ReplayBuffer):
        raise UntrustedAgentError(f"{path} does not hold a replay buffer; {OPT_IN}")
    model.replay_buffer = buffer


# --- saving -------------------------------------------------------------------------------------------------
def save_model(model, path) -> Path:
    """``model.save`` into ``path`` (a ``.zip``), atomically: the old file stays until the new one is complete."""
    return atomic_write(path, lambda f: model.save(f))


def save_replay_buffer(model, path) -> Path:
    """``model.save_replay_buffer`` into ``path`` (a ``.pkl``), atomically."""
    return atomic_write(path, lambda f: model.save_replay_buffer(f))


# --- checkpoints --------------------------------------------------------------------------------------------
#: Checkpoint file names: ``<prefix>_<N>_steps.zip``.
CHECKPOINT_NAME = re.compile(r"_(\d+)_steps\.zip$")


def checkpoint_problem(path) -> str | None:
    """Why ``path`` is not a usable SB3 zip (``"0 bytes"``, ``"not a zip archive (truncated?)"``, …), or None."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return "0 bytes"
        with zipfile.ZipFile(path) as z:
            if "data" not in z.namelist():
                return "no 'data' entry"
            bad = z.testzip()
            if bad is not None:
                return f"entry {bad!r} is corrupt"
            json.loads(z.read("data").decode())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        return f"not a complete zip archive ({e})"
    return None


def latest_checkpoint(folder, prefix: str, replay_buffer: bool = False) -> tuple[Path, int] | None:
    """(path, env steps) of the newest *valid* ``<prefix>_<N>_steps.zip`` in ``folder``, or None.

    Invalid zips (0 bytes, truncated) are skipped with a warning. With ``replay_buffer`` (off-policy
    algorithms), a checkpoint whose ``<prefix>_replay_buffer_<N>_steps.pkl`` is missing is used only when no
    checkpoint has one (the model is resumed without its buffer then).
    """
    folder = Path(folder)
    found = []
    for f in folder.glob(f"{prefix}_*_steps.zip"):
        m = CHECKPOINT_NAME.search(f.name)
        if m and "replay_buffer" not in f.name:
            found.append((int(m.group(1)), f))
    valid = []
    for steps, f in sorted(found, reverse=True):
        problem = checkpoint_problem(f)
        if problem is None:
            valid.append((f, steps))
        else:
            warnings.warn(f"skipping checkpoint {f}: {problem}", stacklevel=2)
    if not valid:
        return None
    if replay_buffer:
        for f, steps in valid:
            buf = folder / f"{prefix}_replay_buffer_{steps}_steps.pkl"
            if buf.exists() and buf.stat().st_size > 0:
                if (f, steps) != valid[0]:
                    warnings.warn(f"resuming from {f.name}, the newest checkpoint with its replay buffer", stacklevel=2)
                return f, steps
    return valid[0]


def export_for_inference(zip_in: str | os.PathLike, zip_out: str | os.PathLike, trust_agent: bool = False) -> Path:
    """Copy an SB3 model zip without its optimizer moments (about 2/3 of the file for Adam).

    The policy acts exactly the same; training resumed from the copy restarts Adam's running averages.
    Used to keep the shipped agent small. ``trust_agent`` as in :meth:`SB3Agent.load`.
    """
    zip_in, zip_out = Path(zip_in), Path(zip_out)
    meta = json.loads(zip_in.with_suffix(".json").read_text()) if zip_in.with_suffix(".json").exists() else {}
    from .algorithms import algorithm_class

    model = load_sb3_model(algorithm_class(meta.get("algo", "ppo")), zip_in, trust_agent=trust_agent, device="cpu")
    # PPO/A2C/DQN/RecurrentPPO keep one optimizer on the policy, SAC/TD3 one each on the actor and the critic
    for part in (model.policy, getattr(model.policy, "actor", None), getattr(model.policy, "critic", None)):
        optimizer = getattr(part, "optimizer", None)
        if optimizer is not None:
            optimizer.state.clear()
    return save_model(model, zip_out)
