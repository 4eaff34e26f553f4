"""Atomic writes: a reader never sees a half-written result file, nor a folder of two runs."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fairquant import __version__
from fairquant.errors import ConfigError


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place.

    The file gets the permissions a plain ``open(path, "w")`` would give (``0o666`` less the
    umask), not ``mkstemp``'s owner-only ``0o600``, so reports and tables can be shared.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# ---- run folders: one complete run per output folder ----------------------------------------

#: The manifest of a run folder: the run's id, its command line and every file it wrote with its
#: SHA-256 (so a ``results.csv`` or figure, which cannot carry them, is tied to its run).
RUN_JSON = "run.json"
RUN_SCHEMA = "fairquant.run/1"
_STAGE, _OLD, _LOCK = ".fairquant-stage-", ".fairquant-old-", ".fairquant-lock"
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


@dataclass(frozen=True)
class RunFolder:
    """An output folder being written: write into :attr:`stage`; :attr:`path` is where the run
    will be once complete. :attr:`scratch` is for temporary files (removed before the move);
    :attr:`run` (``{"id", "command"}``) goes into every file that can carry it."""

    path: Path
    stage: Path
    scratch: Path
    run: dict[str, Any]

    def final(self, staged: Path) -> Path:
        """Where a file written into :attr:`stage` will be once the run is in place."""
        return self.path / staged.relative_to(self.stage)


@contextmanager
def run_folder(
    path: str | os.PathLike,
    *,
    command: Sequence[str] | None = None,
    replaces: Iterable[str] = (),
    keep: Iterable[str | os.PathLike] = (),
    option: str = "--out",
) -> Iterator[RunFolder]:
    """Write one run into the folder ``path``: all of it, or nothing.

    Before anything is computed, the folder is checked (a file, or a folder that cannot be
    written, is a :class:`ConfigError` naming ``option``) and locked: a lock file beside it holds
    the writer's pid under ``flock``, so a second run into a folder that a live process is writing
    is refused (the kernel drops the lock of a killed process). The run is written into a staging
    folder beside ``path``; when the block ends without an exception it is moved into place:

    - a folder that is new, empty or holds only the previous run's files (its :data:`RUN_JSON`)
      is swapped with the staging folder in one ``renameat2(RENAME_EXCHANGE)``, so a reader sees
      the previous run or the new one, never a mix (where the system cannot, two renames: a run
      killed between them leaves the previous run beside ``path``, and the next run puts it back);
    - a folder that also holds files no run wrote (an audit's default folder is its checkpoint's),
      or whose parent cannot be written (then the lock and staging folder are inside it), keeps
      them: the new files replace the previous run's one by one with SIGTERM and SIGINT
      held back, the previous run's other files and the names in ``replaces`` (results of a
      version that wrote no manifest) are removed, and :data:`RUN_JSON` comes last. So does a
      folder holding a file of ``keep`` (the run's input, e.g. the checkpoint it audits), which
      is never removed.

    On an exception (a SIGTERM that the command line turns into ``SystemExit`` included) the
    staging folder is removed and ``path`` is untouched. A run killed outright leaves its staging
    folder, which the next run into ``path`` removes.
    """
    target = _checked_folder(Path(path), option)
    with _locked(target, option):
        _recover(target)
        run_id = uuid.uuid4().hex
        base, prefix = _beside(target)
        stage = base / f"{prefix}{_STAGE}{run_id}"
        stage.mkdir()
        folder = RunFolder(
            target, stage, stage / ".scratch", {"id": run_id, "command": _command(command)}
        )
        folder.scratch.mkdir()
        try:
            yield folder
            shutil.rmtree(folder.scratch)
            _write_manifest(folder)
            with _signals_held():
                _commit(folder, set(replaces), _inside(target, keep))
                shutil.rmtree(stage, ignore_errors=True)  # the previous run, if swapped
        finally:
            shutil.rmtree(stage, ignore_errors=True)


@contextmanager
def locked_folder(path: str | os.PathLike, *, option: str = "--out") -> Iterator[Path]:
    """Check and lock the output folder ``path`` as :func:`run_folder` does, without staging: for
    commands that add to a folder (a resumable experiment, an explanation beside an audit) rather
    than replace it. Yields the folder's absolute path (not created)."""
    target = _checked_folder(Path(path), option)
    with _locked(target, option):
        yield target


def checked_file(path: str | os.PathLike, *, option: str = "--out") -> Path:
    """Refuse, before any compute, an output file that is a folder or whose folder cannot be
    written (a :class:`ConfigError` naming ``option``); the file is written atomically later."""
    shown = repr(str(path))
    target = Path(os.path.realpath(path))
    if target.is_dir():
        raise ConfigError(f"{option} {shown} is a folder; expected a file to write")
    _checked_folder(target.parent, option)
    return Path(path)


def _inside(folder: Path, paths: Iterable[str | os.PathLike]) -> set[str]:
    """The paths that lie in ``folder``, relative to it."""
    inside = set()
    for path in paths:
        real = Path(os.path.realpath(path))
        if real.is_relative_to(folder) and real != folder:
            inside.add(str(real.relative_to(folder)))
    return inside


def _command(command: Sequence[str] | None) -> list[str] | None:
    return None if command is None else [str(c) for c in command]


def _checked_folder(path: Path, option: str) -> Path:
    """``path`` as an absolute folder path that can be written; a clear error if not."""
    shown = repr(str(path))
    target = Path(os.path.realpath(path))  # a link to a folder: the folder it names
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{option} {shown} is a file; expected a folder (new or one to replace)")
    if target.parent == target:
        raise ConfigError(f"{option} {shown} is a file system's root; expected a folder in it")
    for above in target.parents:
        if above.exists() and not above.is_dir():
            raise ConfigError(f"{option} {shown}: {str(above)!r} is a file; expected a folder")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"{option} {shown}: cannot create its parent folder ({e.strerror})"
        ) from None
    folder = target if target.exists() else target.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {shown}: {str(folder)!r} is not writable")
    return target


def _beside(target: Path) -> tuple[Path, str]:
    """Where a run's lock and staging folder go, and their name prefix: beside ``target`` when
    its parent can be written, else inside it (a home folder, say: then files move one by one)."""
    if os.access(target.parent, os.W_OK | os.X_OK):
        return target.parent, f".{target.name}"
    return target, ""


@contextmanager
def _locked(target: Path, option: str) -> Iterator[None]:
    """Hold ``.<name>.fairquant-lock`` beside ``target`` (``flock``, with the holder's pid)."""
    import fcntl

    base, prefix = _beside(target)
    lock = base / f"{prefix}{_LOCK}"
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ConfigError(
                f"{option} {str(target)!r}: cannot write in {str(base)!r} ({e.strerror})"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                f"{option} {str(target)!r} is being written by another fairquant run (pid "
                f"{holder}, lock {str(lock)!r}); wait for it to end or choose another folder"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:  # its holder removed it between our open and flock
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def _recover(target: Path) -> None:
    """Remove what killed runs into ``target`` left beside it (under the lock, so no live run
    owns them); a previous run moved aside by the two-rename fallback goes back first."""
    base, prefix = _beside(target)
    leftovers = [
        p
        for p in base.iterdir()
        if p.name.startswith(prefix) and p.name[len(prefix) :].startswith((_STAGE, _OLD))
    ]
    old = [p for p in leftovers if p.name[len(prefix) :].startswith(_OLD)]
    if old and not target.exists():
        old[0].rename(target)
    for p in leftovers:
        if p.exists():
            shutil.rmtree(p, ignore_errors=True)


def _write_manifest(folder: RunFolder) -> None:
    files = {
        str(p.relative_to(folder.stage)): sha256_file(p)
        for p in sorted(folder.stage.rglob("*"))
        if p.is_file() and p.name != RUN_JSON
    }
    manifest = {
        "schema": RUN_SCHEMA,
        **folder.run,
        "fairquant_version": __version__,
        "files": files,
    }
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    atomic_write(folder.stage / RUN_JSON, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _previous_files(target: Path) -> set[str] | None:
    """The files the run now in ``target`` wrote (its manifest), or None without one."""
    try:
        manifest = json.loads((target / RUN_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("schema") != RUN_SCHEMA:
        return None
    return set(manifest.get("files") or {})


def _commit(folder: RunFolder, replaces: set[str], keep: set[str]) -> None:
    target, stage = folder.path, folder.stage
    previous = _previous_files(target) if target.exists() else set()
    if not target.exists():
        stage.rename(target)
        return
    entries = set(os.listdir(target))
    ours = previous is not None and entries <= {RUN_JSON, *(Path(f).parts[0] for f in previous)}
    swap = not entries or (ours and not keep & set(previous or ()))
    if swap and stage.parent != target:
        if not _exchange(stage, target):
            old = stage.parent / f"{stage.name.partition(_STAGE)[0]}{_OLD}{folder.run['id']}"
            target.rename(old)
            stage.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        return  # the previous run is now in ``stage``, removed by the caller
    # a folder shared with files no run wrote: file by file, the manifest last
    (target / RUN_JSON).unlink(missing_ok=True)
    new = {str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file()} - {RUN_JSON}
    for name in sorted(new):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage / name, target / name)
    for name in sorted(((previous or set()) | replaces) - new - keep):
        (target / name).unlink(missing_ok=True)
    os.replace(stage / RUN_JSON, target / RUN_JSON)


def _exchange(a: Path, b: Path) -> bool:
    """Swap the folders ``a`` and ``b`` atomically (Linux ``renameat2``); False where the system
    or file system cannot."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    status = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if status == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGTERM and SIGINT back (delivered when the block ends) in the main thread."""
    held = {signal.SIGTERM, signal.SIGINT}
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
