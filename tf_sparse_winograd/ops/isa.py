"""Which instruction set the ops' kernels use: chosen once per process from the CPU, or forced.

The op library holds one kernel per instruction set (AVX-512, AVX2 + FMA, portable C++) and runs
the best one the CPU supports. `set_isa` forces another one for the whole process (to compare
kernels, or to rule one out); the choice is a process setting, not an op attribute, because a
process runs on one CPU. The environment plays no part in it.

    from tf_sparse_winograd import ops
    ops.cpu_isas()           # ('generic', 'avx2', 'avx512') on an AVX-512 machine
    previous = ops.set_isa("avx2")
    ...
    ops.set_isa(previous)    # or ops.set_isa("auto"): the best one again
"""

import ctypes
import os
import platform
import threading

from tf_sparse_winograd.ops import loader

ISAS = ("generic", "avx2", "avx512")
AUTO = "auto"

_LOCK = threading.Lock()
_FUNCTIONS = None
_REQUESTED = AUTO  # what set_isa last asked for


def _functions():
    """The library's C functions (loading the op library first: OpLibraryError if it cannot)."""
    global _FUNCTIONS
    with _LOCK:
        if _FUNCTIONS is None:
            path = loader.loaded_library_path()
            # The library tf.load_op_library loaded, never a second copy: with RTLD_NOLOAD,
            # dlopen returns a library already loaded under that name, or fails.
            try:
                library = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | ctypes.RTLD_LOCAL)
            except OSError as error:
                raise loader.OpLibraryError(
                    f"The op library {path} is not loaded in this process: {error}") from error
            library.tfsw_cpu_isas.restype = ctypes.c_char_p
            library.tfsw_active_isa.restype = ctypes.c_char_p
            library.tfsw_force_isa.restype = ctypes.c_int
            library.tfsw_force_isa.argtypes = [ctypes.c_char_p]
            _FUNCTIONS = library
        return _FUNCTIONS


def cpu_model():
    """The CPU's model name from /proc/cpuinfo, with its family and model numbers (a VM may name
    only the vendor, e.g. "AMD EPYC"); platform.processor() elsewhere. Printed with every timing:
    the machines' CPUs differ, and only ratios measured on one CPU compare."""
    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if not key.strip():
                    break  # the first processor's block ends
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    if "model name" not in fields:
        return platform.processor() or "unknown CPU"
    return (f"{fields['model name']} (family {fields.get('cpu family', '?')}, "
            f"model {fields.get('model', '?')})")


def cpu_isas():
    """The instruction sets this CPU runs kernels for, worst to best, e.g. ('generic', 'avx2')."""
    return tuple(_functions().tfsw_cpu_isas().decode().split(","))


def active_isa():
    """The instruction set the ops run now: 'generic', 'avx2' or 'avx512'."""
    return _functions().tfsw_active_isa().decode()


def set_isa(isa):
    """Makes every op of this process run the kernel for `isa`; returns the previous request.

    Args:
      isa: 'generic', 'avx2', 'avx512', or 'auto' (or None): the best one the CPU runs, which is
        what the ops use unless this is called.

    Returns:
      What was asked for before ('auto' if nothing was), so that `set_isa(previous)` restores it.

    Raises:
      ValueError: `isa` is not one of these names, or names an instruction set this CPU lacks
        (the message lists the ones it has). Nothing changes then.
      OpLibraryError: the op library cannot be loaded.
    """
    global _REQUESTED
    if isa is None:
        isa = AUTO
    if not isinstance(isa, str) or isa not in ISAS + (AUTO,):
        raise ValueError(f"`isa` must be one of {', '.join(repr(n) for n in ISAS + (AUTO,))}. "
                         f"Received: isa={isa!r}")
    functions = _functions()
    status = functions.tfsw_force_isa(b"" if isa == AUTO else isa.encode())
    if status == 2:
        raise ValueError(f"`isa` names an instruction set this CPU lacks; this CPU runs the "
                         f"kernels for: {', '.join(cpu_isas())}. Received: isa={isa!r}")
    if status != 0:
        raise ValueError(f"The op library does not know the instruction set {isa!r} "
                         f"(tfsw_force_isa returned {status}). Received: isa={isa!r}")
    with _LOCK:
        previous, _REQUESTED = _REQUESTED, isa
    return previous
