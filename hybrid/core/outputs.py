"""Output targets of the command-line verbs: refused cleanly, written atomically.

Every verb that writes (``train --out``, ``solve --out``, ``infer --out``, ``synth --out``,
``query --field``) checks its target first with :func:`check_target`, before any work is
done, and refuses in one line naming the path:

* a target that exists, unless ``--force``;
* a file where a directory is wanted, or a directory where a file is wanted;
* a target whose nearest existing parent is not a writable directory (read-only location,
  a file in the way, missing permissions).

:func:`replaced_dir` builds a directory beside the target and moves it into place when it is
complete; an existing one is moved aside first and deleted only after the new one is in
place, so a failure (a full disk, an exception) never leaves a half-written target nor
destroys the old one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from hybrid.errors import HybridError


class OutputError(HybridError):
    """An output target that cannot or must not be written."""


def _writable_parent(path: Path) -> None:
    parent = path.parent
    while not parent.exists():
        if parent.parent == parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{path}: cannot create it, {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: cannot write into {parent} (permission denied or "
                          "read-only)")


def check_target(path: str | Path, *, kind: str, force: bool = False,
                 parent_must_exist: bool = False) -> Path:
    """Refuse an output target that cannot or must not be written; return it as a Path.

    Args:
        path: the file or directory to be written.
        kind: ``"dir"`` or ``"file"``.
        force: allow replacing an existing target of the right kind.
        parent_must_exist: refuse a file whose directory does not exist (instead of
            creating it).
    """
    path = Path(path)
    if kind not in ("dir", "file"):
        raise ValueError(kind)
    if path.exists() or path.is_symlink():
        if kind == "dir" and not path.is_dir():
            raise OutputError(f"{path}: exists and is not a directory")
        if kind == "file" and path.is_dir():
            raise OutputError(f"{path}: is a directory, expected a file name")
        if not force and not (kind == "dir" and not any(path.iterdir())):
            raise OutputError(f"{path}: exists (use --force to replace it)")
        if not os.access(path, os.W_OK):
            raise OutputError(f"{path}: exists and is not writable")
    if parent_must_exist and not path.parent.is_dir():
        raise OutputError(f"{path}: directory {path.parent} does not exist")
    _writable_parent(path)
    return path


@contextlib.contextmanager
def replaced_dir(target: str | Path) -> Iterator[Path]:
    """Yield a fresh directory beside ``target``; on success it becomes ``target``.

    An existing ``target`` is moved aside and deleted only once the new one is in place; on
    an exception the new directory is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = target.parent / f".{target.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{tag}"
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["OutputError", "check_target", "replaced_dir"]
