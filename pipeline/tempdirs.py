"""Driver temp dirs: every ``ctpipe`` process keeps its temporary files, and those of TensorFlow,
Beam and its worker processes, in one directory of its own, ``<system temp>/ctpipe-<pid>-<random>``
(``tempfile.tempdir`` and ``TMPDIR`` point there while the command runs). The directory goes when
the command ends, failed or not; a process killed with SIGKILL leaves it behind, and ``ctpipe gc``
removes such directories once their process is gone (``dead_process_dirs``).

What must outlive a process (the training backup of BackupAndRestore) is placed under
``system_temp_dir()``, never under the process's own directory.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from typing import Iterator, Optional

PREFIX = "ctpipe-"
_DIR_RE = re.compile(r"^ctpipe-([0-9]+)-[a-z0-9_]{8}$")
_system: Optional[str] = None


def system_temp_dir() -> str:
    """The temp dir the machine gives every process (not this process's own directory)."""
    return _system or tempfile.gettempdir()


@contextmanager
def process_temp_dir() -> Iterator[str]:
    """Make a directory of this process's own the temp dir of everything it runs; remove it after."""
    global _system
    saved_tempdir, saved_env = tempfile.tempdir, os.environ.get("TMPDIR")
    base = tempfile.gettempdir()
    path = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=base)
    _system, tempfile.tempdir, os.environ["TMPDIR"] = base, path, path
    try:
        yield path
    finally:
        _system, tempfile.tempdir = None, saved_tempdir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env
        shutil.rmtree(path, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_process_dirs(base: Optional[str] = None) -> list[str]:
    """Process temp dirs under ``base`` (default: the system temp dir) whose process is gone."""
    base = base or system_temp_dir()
    out = []
    for name in sorted(os.listdir(base)) if os.path.isdir(base) else ():
        match = _DIR_RE.match(name)
        if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
            out.append(os.path.join(base, name))
    return out
