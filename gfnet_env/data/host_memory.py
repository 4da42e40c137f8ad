"""Host memory for the networks on the CPU: let glibc's malloc keep freed blocks for the next forward pass.

Every forward pass of the frozen networks on the CPU allocates activations of megabytes to tens of megabytes
and frees them milliseconds later. With its default settings glibc's malloc serves large blocks with fresh
``mmap`` calls and hands a freed heap top back to the kernel, so the next pass touches new pages again and pays
a page fault per 4 KiB: on a small CPU the kernel's share of every episode becomes a large part of its time.
:func:`keep_freed_memory` sets three ``mallopt`` parameters so that blocks up to 32 MiB come from the heap and
up to ``retain_mib`` of freed heap stays mapped for reuse: no page faults after the first batches (the effect on
episode throughput is measured in benchmarks/RESULTS.md and docs/environment.md). Results are unchanged (only
where memory comes from changes); the price is that the process keeps up to ``retain_mib`` of freed memory
mapped.

It changes the whole process's allocator, so the library never calls it on its own: the ``gfnet`` command
does at start (``GFNET_TUNE_MALLOC=0`` leaves malloc alone), and a script calls it once, first thing::

    from gfnet_env.data.host_memory import keep_freed_memory
    keep_freed_memory()

On other C libraries (macOS, Windows, musl) it does nothing and returns False; there jemalloc or tcmalloc
(``LD_PRELOAD``) are the usual cure. The same settings can be given without code through glibc's environment
variables ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_TOP_PAD_=268435456``.
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["ENV_VARIABLE", "keep_freed_memory", "keep_freed_memory_unless_disabled", "malloc_tuned"]

#: ``mallopt`` parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
#: glibc's upper bound for M_MMAP_THRESHOLD on 64-bit systems (HEAP_MAX_SIZE / 2); larger values are refused.
_MMAP_THRESHOLD_MAX = 32 << 20
#: Set to ``0`` to keep the ``gfnet`` command from tuning malloc.
ENV_VARIABLE = "GFNET_TUNE_MALLOC"

_tuned: tuple[int, int] | None = None  # (retain_mib, top_pad_mib) once applied


def malloc_tuned() -> tuple[int, int] | None:
    """(retain_mib, top_pad_mib) of the last successful :func:`keep_freed_memory` in this process, else None."""
    return _tuned


def keep_freed_memory(retain_mib: int = 1024, top_pad_mib: int = 256) -> bool:
    """Tune glibc's malloc for large, short-lived CPU tensors (module docstring); call it once, early.

    Args:
        retain_mib: freed memory at the top of the heap (MiB) kept mapped before glibc returns it to the kernel.
        top_pad_mib: extra heap (MiB) requested from the kernel whenever the heap grows, so it grows rarely.

    Returns:
        True when applied (Linux with glibc), False when the C library is not glibc (nothing changed).

    Raises:
        ValueError: a size is not a non-negative integer, or glibc refused a setting.
    """
    global _tuned
    for name, value in (("retain_mib", retain_mib), ("top_pad_mib", top_pad_mib)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer number of MiB, got {value!r}")
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # setting any of the three also switches off glibc's own threshold adjustment, so all three are set
    settings = ((_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX), (_M_TRIM_THRESHOLD, min(retain_mib << 20, 2**31 - 1)),
                (_M_TOP_PAD, min(top_pad_mib << 20, 2**31 - 1)))
    for param, value in settings:
        if mallopt(param, value) != 1:  # mallopt returns 1 on success
            raise ValueError(f"glibc's mallopt refused parameter {param} = {value}")
    _tuned = (retain_mib, top_pad_mib)
    return True


def keep_freed_memory_unless_disabled() -> bool:
    """:func:`keep_freed_memory` unless the environment variable ``GFNET_TUNE_MALLOC`` is ``0`` (what the
    ``gfnet`` command calls at start); returns whether this call tuned malloc."""
    if os.environ.get(ENV_VARIABLE, "1").strip() in ("0", "false", "no", "off"):
        return False
    return keep_freed_memory()
