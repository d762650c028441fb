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
            loader.load_op_library()
            # dlopen of the path tf.load_op_library opened returns the same, loaded library.
            library = ctypes.CDLL(loader.library_path())
            library.tfsw_cpu_isas.restype = ctypes.c_char_p
            library.tfsw_active_isa.restype = ctypes.c_char_p
            library.tfsw_force_isa.restype = ctypes.c_int
            library.tfsw_force_isa.argtypes = [ctypes.c_char_p]
            _FUNCTIONS = library
        return _FUNCTIONS


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
