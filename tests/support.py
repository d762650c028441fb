"""What several test files share: running code in a fresh interpreter.

Imported by the tests as `support` (pytest puts tests/ on sys.path); not part of the package.
"""

import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _environment(env):
    """This process's environment plus `env` (a value None removes the variable), with
    TensorFlow's C++ logging silenced."""
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    for name, value in (env or {}).items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = str(value)
    return environment


def run_python(code, *args, env=None, cwd=None, timeout=900, check=True, python=sys.executable):
    """Runs `code` (dedented) in a fresh interpreter; returns the CompletedProcess.

    The child sees this process's environment plus `env` (a value None removes the variable),
    with TensorFlow's C++ logging silenced. With `check`, a non-zero exit fails the test and shows
    the end of the child's stderr.
    """
    result = subprocess.run([python, "-c", textwrap.dedent(code), *map(str, args)],
                            capture_output=True, text=True, timeout=timeout, env=_environment(env),
                            cwd=cwd, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"child exited with {result.returncode}:\n{result.stderr[-6000:]}")
    return result


def start_python(code, *args, log, env=None, cwd=None, python=sys.executable):
    """Starts `code` (dedented) in a fresh interpreter, as run_python does, without waiting; its
    stdout and stderr go to the file `log`. Returns the Popen (the caller waits for or kills it).
    """
    with open(log, "w", encoding="utf-8") as out:
        return subprocess.Popen([python, "-c", textwrap.dedent(code), *map(str, args)],
                                stdout=out, stderr=subprocess.STDOUT, env=_environment(env),
                                cwd=cwd)
