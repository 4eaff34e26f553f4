"""Read a dataset's files from an extracted folder or straight from its downloaded tar archive.

An archive is read member by member with :mod:`tarfile` and never extracted: nothing it contains
is written to disk or executed, and a member's name is only ever used as a label.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

from fairquant.data.cache import cached
from fairquant.errors import DataError

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def require_root(root: str | None, dataset: str, expected: str) -> Path:
    """The dataset's root as a path that exists, or a DataError saying what was expected."""
    if root is None:
        raise DataError(f"dataset {dataset!r} needs a root: {expected}")
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"{dataset} root {path} does not exist; expected {expected}")
    return path


def file_fingerprint(path: Path) -> list:
    """Absolute path, size and modification time of one file."""
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


class FileTree:
    """The regular files under a folder or inside a tar archive, by relative POSIX path."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.archive = is_archive(self.root)
        if not self.archive and not self.root.is_dir():
            raise DataError(
                f"{self.root} is neither a folder nor a tar archive ({ARCHIVE_SUFFIXES})"
            )
        self._names: list[str] | None = None

    def names(self) -> list[str]:
        """Every regular file, as a path relative to the root, sorted."""
        if self._names is None:
            if self.archive:  # listing means reading the whole stream: remember it per archive
                joined = cached("names", self.fingerprint(), self._archive_names, str)
                names = joined.split("\n")
            else:
                names = [
                    PurePosixPath(p.relative_to(self.root)).as_posix()
                    for p in self.root.rglob("*")
                    if p.is_file()
                ]
            self._names = sorted(_clean(n) for n in names)
        return self._names

    def fingerprint(self) -> list:
        """Cheap identity of the contents: path, size, mtime of the archive or of each file."""
        if self.archive:
            return file_fingerprint(self.root)
        out: list = [str(self.root.resolve())]
        for name in self.names():
            st = (self.root / name).stat()
            out.append([name, st.st_size, st.st_mtime_ns])
        return out

    def read(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        """Yield ``(name, bytes)`` for each wanted file (in archive order for an archive)."""
        wanted = set(names)
        if not self.archive:
            for name in sorted(wanted):
                try:
                    data = (self.root / name).read_bytes()
                except OSError as e:
                    raise DataError(f"cannot read {self.root / name}: {e}") from None
                yield name, data
            return
        with self._open() as tar:
            for member in tar:
                name = _clean(member.name)
                if member.isfile() and name in wanted:
                    f = tar.extractfile(member)
                    if f is None:
                        raise DataError(f"{self.root}: cannot read member {name}")
                    yield name, f.read()

    def _archive_names(self) -> str:
        with self._open() as tar:
            return "\n".join(m.name for m in tar if m.isfile())

    def _open(self) -> tarfile.TarFile:
        try:
            # streaming mode: one sequential pass, no seeking back through the compressed stream
            return tarfile.open(self.root, mode="r|*")
        except (tarfile.TarError, OSError) as e:
            raise DataError(f"{self.root} is not a readable tar archive: {e}") from None

    def __str__(self) -> str:
        return str(self.root)


def _clean(name: str) -> str:
    return name[2:] if name.startswith("./") else name
