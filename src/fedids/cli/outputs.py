"""Output paths of the command line: checked before any work starts, written atomically.

Every command that writes calls :func:`check_outputs` first, with its inputs and all its outputs, so that
a typo fails in a second rather than after training: an output must not be an input, nor another output
of the same command, nor sit under a file, in a directory that cannot take a new file (``/proc``, a
read-only mount), or be a directory where a file is expected. The check creates the missing parent
directories and writes (then removes) one probe file there: the only test root and ACLs cannot fool.

Files are written to a temporary name in the same directory and renamed (:func:`write_atomic`), so a
full disk or an interrupt leaves the previous file intact.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from fedids.errors import InputError
from fedids.pipelines.files import write_atomic, write_json

__all__ = ["check_outputs", "write_atomic", "write_json"]


def _key(path: Path) -> str:
    return os.path.realpath(os.path.abspath(path))


def _probe_directory(directory: Path, shown: str) -> None:
    """Create ``directory`` (and parents) and check that a file can be created in it."""
    probe = directory
    while not probe.exists():
        if probe.is_symlink() or probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise InputError(f"{shown}: cannot write under {probe}: it is a file, not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=directory, prefix=".fedids-probe-")
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise InputError(f"{shown}: cannot write there: {exc.strerror or exc}") from None


def check_outputs(
    command: str, outputs: Iterable[tuple[str, Path | None, str]], inputs: Iterable[Path | None] = ()
) -> None:
    """Check every output before work starts.

    Parameters
    ----------
    command : the command name, for messages (``"export"``).
    outputs : ``(option, path, kind)`` per output; ``kind`` is ``"file"``, ``"append"`` (a file added to)
        or ``"dir"``; ``path`` None or ``-`` (stdout) is skipped.
    inputs : paths the command reads (files, or directories: the directory and the files in it).

    Raises
    ------
    InputError
        One line naming the option and the problem.
    """
    seen: dict[str, str] = {}
    read: dict[str, Path] = {}
    for p in inputs:
        if p is None or str(p) == "-":
            continue
        p = Path(p)
        read[_key(p)] = p
        if p.is_dir():
            read.update({_key(child): child for child in p.iterdir()})
    for option, path, kind in outputs:
        if path is None or str(path) == "-":
            continue
        path = Path(path)
        key = _key(path)
        if key in read:
            raise InputError(f"{command}: {option} {path} would overwrite the input {read[key]}")
        if key in seen:
            raise InputError(f"{command}: {option} {path} is also {seen[key]}; give each output its own path")
        seen[key] = option
        if kind == "dir":
            if path.exists() and not path.is_dir():
                raise InputError(f"{command}: {option} {path} is a file, not a directory")
            _probe_directory(path, f"{command}: {option} {path}")
        else:
            if path.is_dir():
                raise InputError(f"{command}: {option} {path} is a directory, not a file")
            _probe_directory(path.parent, f"{command}: {option} {path}")
            if kind == "append" and path.exists() and not os.access(path, os.W_OK):
                raise InputError(f"{command}: {option} {path} is not writable")
