"""Output folders: one writer at a time, and never a folder that holds someone else's files.

Every step that writes an output folder (``lam align``, ``lam features``, ``lam similarity``,
``lam train``/``run``/``demo``) opens it with :func:`output_folder`, which

1. **refuses a folder holding files the toolkit did not write**: a non-empty folder without the
   marker ``.lam-output.json`` (and not recognisably an earlier version's output of the same
   step), a folder made by another step, or unknown files inside the sub-folders the step manages
   and cleans (``parts/``, ``textgrids/``, ``layers/``, ``index/``, ``shards/`` ...). Nothing is
   deleted to make room: the user picks another folder;
2. **takes an advisory lock** on ``OUT/.lam.lock`` (``fcntl.flock``) for the whole run, and writes
   who holds it (pid, host, start time, command) to ``OUT/.lam.lock.json``. A second run into the
   same folder is refused with that holder named. The kernel releases the lock when its process
   ends in any way (SIGKILL included), so a dead holder's lock is taken over by the next run
   without any clean-up; the holder file is then simply overwritten.

Shards of one feature store (``lam features --shard I/N``) are the documented way to write one
folder from several processes: each takes the folder lock *shared* plus an exclusive lock of its
own shard (``OUT/.lam.lock.sIIIIofNNNN``), so shards of one split run side by side while an
unsharded run, a second copy of a shard, or shards of a different N are refused. The number of
shards in use is kept in ``OUT/.lam.lock.shards.json`` while shards run.

On file systems (or platforms) without ``flock`` the holder file alone serves as the lock:
a holder on this host whose process is gone is taken over; one on another host is refused (delete
``OUT/.lam.lock.json`` by hand once you are sure it is dead).
"""

from __future__ import annotations

import errno
import os
import re
import socket
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .errors import OutputFolderError, OutputLockedError
from .fsutil import atomic_write_json, is_temp_name, make_dirs, os_error

__all__ = ["output_folder", "OutputFolder", "FolderRules", "LOCK_NAME", "HOLDER_NAME", "MARKER_NAME",
           "check_output_folder", "read_holder"]

LOCK_NAME = ".lam.lock"
HOLDER_NAME = ".lam.lock.json"
SHARDS_NAME = ".lam.lock.shards.json"
MARKER_NAME = ".lam-output.json"
_OWN = re.compile(r"^\.lam\.lock(\.s\d{4}of\d{4})?(\.json)?$|^\.lam\.lock\.(shards\.json|merge)$|^\.lam-output\.json$")

#: Steps that share one kind of output folder (``lam train`` may add runs to a ``lam run`` folder).
_FAMILY = {"run": "pipeline", "train": "pipeline", "demo": "pipeline"}


@dataclass(frozen=True)
class FolderRules:
    """What a step's output folder may hold.

    Attributes
    ----------
    legacy : tuple of str
        Relative paths whose presence shows an output of this step written before the marker file
        existed (adopted, not refused).
    managed : mapping of str to str
        Sub-folder (relative; ``"layers/*"`` means every folder inside ``layers``) -> regular
        expression the names of its entries must match. Temporary files of :mod:`phonalign.fsutil`
        are always allowed. An entry that does not match is a file the toolkit did not write: the
        folder is refused.
    """

    legacy: tuple[str, ...] = ()
    managed: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Holder:
    """Who holds an output folder's lock (read from the holder file)."""

    pid: int | None
    host: str
    started: str
    step: str
    shard: str | None
    command: str

    def describe(self) -> str:
        """``pid 123 on host h since 2026-01-01T10:00:00+00:00 (lam features, shard 0/2)``."""
        what = f"lam {self.step}" + (f", shard {self.shard}" if self.shard else "")
        return f"pid {self.pid} on host {self.host or '?'} since {self.started or '?'} ({what})"


def read_holder(path: Path) -> Holder | None:
    """The holder recorded in ``path`` (a holder file), or None if it is missing or unreadable."""
    import json

    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    pid = raw.get("pid")
    return Holder(pid=pid if isinstance(pid, int) else None, host=str(raw.get("host") or ""),
                  started=str(raw.get("started") or ""), step=str(raw.get("step") or "?"),
                  shard=raw.get("shard"), command=str(raw.get("command") or ""))


def _holder_record(step: str, shard: tuple[int, int] | None) -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"), "step": step,
            "shard": None if shard is None else f"{shard[0]}/{shard[1]}",
            "command": " ".join(sys.argv)[:500]}


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------------------------
# ownership


def _entries(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []
    except OSError as err:
        raise os_error(err, path=path, action="cannot list the output folder") from None


def _foreign_in_managed(out: Path, rules: FolderRules) -> list[str]:
    found: list[str] = []
    for rel, pattern in rules.managed.items():
        rx = re.compile(pattern)
        if rel.endswith("/*"):
            parent = out / rel[:-2]
            dirs = [parent / d for d in _entries(parent) if (parent / d).is_dir() and not is_temp_name(d)]
        else:
            dirs = [out / rel]
        for d in dirs:
            if not d.is_dir():
                if d.exists():
                    found.append(str(d.relative_to(out)))
                continue
            for name in _entries(d):
                if not (rx.match(name) or is_temp_name(name)):
                    found.append(str((d / name).relative_to(out)))
    return found


def check_output_folder(out: str | Path, *, step: str, rules: FolderRules = FolderRules()) -> bool:
    """Raise :class:`OutputFolderError` unless ``out`` may be written by ``step``; True if it is new.

    A missing or empty folder is new. A folder with the marker of the same step (or family) is
    ours; a non-empty one without a marker is ours only when ``rules.legacy`` recognises an
    earlier output of the step. Unknown entries in the managed sub-folders are refused.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputFolderError("the output path exists and is not a folder", path=out,
                                hint="give a new folder name for the output")
    names = [n for n in _entries(out) if not _OWN.match(n)]
    marker = out / MARKER_NAME
    if marker.is_file():
        from .fsutil import read_json

        info = read_json(marker, what="output marker", hint=f"delete {MARKER_NAME} if this folder is yours")
        other = str(info.get("step")) if isinstance(info, dict) else "?"
        if _FAMILY.get(other, other) != _FAMILY.get(step, step):
            raise OutputFolderError(f"this folder holds the output of `lam {other}`, not of `lam {step}`", path=out,
                                    hint="give another output folder")
    elif names:
        if not any((out / rel).exists() for rel in rules.legacy):
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            raise OutputFolderError(f"the output folder holds files lam did not write ({shown})", path=out,
                                    hint="give a new or empty folder; lam never deletes or overwrites files "
                                    "it did not write")
    foreign = _foreign_in_managed(out, rules)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise OutputFolderError(f"the output folder holds files lam did not write in the folders it manages "
                                f"({shown})", path=out,
                                hint="move those files elsewhere (lam cleans these folders and would not tell "
                                "them from its own), or give another output folder")
    return not names


# --------------------------------------------------------------------------------------------
# locking


class _Flock:
    """One lock file: ``flock`` when the file system has it, else the holder file alone."""

    def __init__(self, path: Path, holder_path: Path) -> None:
        self.path, self.holder_path = path, holder_path
        self.fd: int | None = None
        self.fallback = False

    def open(self) -> None:
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as err:
            raise os_error(err, path=self.path, action="cannot lock the output folder") from None

    def try_lock(self, shared: bool) -> bool:
        """Take the lock without waiting; False when another process holds it."""
        try:
            import fcntl
        except ImportError:  # no flock on this platform: the holder file alone
            self.fallback = True
        if self.fallback:
            return self._try_holder_file()
        assert self.fd is not None, "open() first"
        try:
            fcntl.flock(self.fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError as err:
            if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                self.fallback = True
                return self._try_holder_file()
            raise os_error(err, path=self.path, action="cannot lock the output folder") from None

    def _try_holder_file(self) -> bool:
        holder = read_holder(self.holder_path)
        if holder is None or holder.pid == os.getpid():
            return True
        return holder.host == socket.gethostname() and not _pid_alive(holder.pid)

    def write_holder(self, record: dict) -> None:
        atomic_write_json(self.holder_path, record)

    def close(self, *, forget_holder: bool) -> None:
        if forget_holder:
            try:  # before the lock goes: while we hold it nobody else writes this file
                self.holder_path.unlink(missing_ok=True)
            except OSError:
                pass
        if self.fd is not None:
            os.close(self.fd)  # releases the flock
            self.fd = None


@dataclass
class OutputFolder:
    """An output folder held by this process (see :func:`output_folder`)."""

    path: Path
    step: str
    shard: tuple[int, int] | None
    new: bool
    _locks: list[_Flock] = field(default_factory=list, repr=False)

    @property
    def shard_name(self) -> str | None:
        """``s0001of0004`` for shard 1/4, None when unsharded."""
        return None if self.shard is None else f"s{self.shard[0]:04d}of{self.shard[1]:04d}"

    def release(self) -> None:
        """Give the folder up (also done by leaving the ``with`` block)."""
        while self._locks:
            lock = self._locks.pop()
            lock.close(forget_holder=True)


def _locked_error(out: Path, holders: list[Holder], *, step: str, extra: str = "") -> OutputLockedError:
    if holders:
        who = "; ".join(h.describe() for h in holders)
    else:
        who = "another process (no holder recorded)"
    return OutputLockedError(
        f"the output folder is in use by {who}{extra}", path=out,
        hint="wait until it finishes or stop it; two runs into one folder would mix their results"
        + (" (to fill one feature store from several processes, run shards: --shard I/N)" if step == "features"
           else ""))


def _live_shard_holders(out: Path) -> list[Holder]:
    holders = []
    for name in _entries(out):
        m = re.match(r"^\.lam\.lock\.(s\d{4}of\d{4})$", name)
        if not m:
            continue
        probe = _Flock(out / name, out / f"{name}.json")
        probe.open()
        try:
            free = probe.try_lock(shared=False)
        finally:
            probe.close(forget_holder=False)
        if not free:
            h = read_holder(out / f"{name}.json")
            holders.append(h or Holder(None, "", "", "features", m.group(1), ""))
    return holders


def _acquire(out: Path, step: str, shard: tuple[int, int] | None) -> list[_Flock]:
    main = _Flock(out / LOCK_NAME, out / HOLDER_NAME)
    main.open()
    record = _holder_record(step, shard)
    try:
        if shard is None or shard[1] == 1:
            if not main.try_lock(shared=False):
                holders = []
                if main.try_lock(shared=True):  # held shared: shard runs are writing
                    holders = _live_shard_holders(out)
                    main.close(forget_holder=False)
                    raise _locked_error(out, holders, step=step)
                h = read_holder(main.holder_path)
                raise _locked_error(out, [h] if h else [], step=step)
            main.write_holder(record)
            return [main]
        n = shard[1]
        import json

        shards_path = out / SHARDS_NAME
        if main.try_lock(shared=False):
            atomic_write_json(shards_path, {"n_shards": n})
            if not main.try_lock(shared=True):  # the downgrade is not atomic: someone came between
                h = read_holder(main.holder_path)
                raise _locked_error(out, [h] if h else [], step=step)
        elif not main.try_lock(shared=True):
            h = read_holder(main.holder_path)
            raise _locked_error(out, [h] if h else [], step=step)
        try:
            current = json.loads(shards_path.read_text(encoding="utf-8")).get("n_shards")
        except (OSError, ValueError):
            current = None
        if current != n:
            raise _locked_error(out, _live_shard_holders(out), step=step,
                                extra=f" with {current} shards, this run asks for {n}")
        name = f"{LOCK_NAME}.s{shard[0]:04d}of{n:04d}"
        own = _Flock(out / name, out / f"{name}.json")
        own.open()
        if not own.try_lock(shared=False):
            h = read_holder(own.holder_path)
            own.close(forget_holder=False)
            raise _locked_error(out, [h] if h else [], step=step)
        own.write_holder(record)
        return [main, own]
    except BaseException:
        main.close(forget_holder=False)
        raise


@contextmanager
def output_folder(out: str | Path, *, step: str, rules: FolderRules = FolderRules(),
                  shard: tuple[int, int] | None = None) -> Iterator[OutputFolder]:
    """Create or reopen ``out`` for ``step``, refuse foreign files, and hold its lock.

    Parameters
    ----------
    out : str or Path
        The output folder (created if missing, with its parents).
    step : str
        ``align``, ``features``, ``similarity``, ``train``, ``run`` ...; recorded in the marker.
    rules : FolderRules
        What the step's folder may hold (see :class:`FolderRules`).
    shard : (int, int), optional
        ``(I, N)`` for shard I of N of a feature store (shared folder lock, exclusive shard lock).

    Yields
    ------
    OutputFolder
        Released when the block ends, however it ends.

    Raises
    ------
    OutputFolderError
        Foreign files, another step's folder (nothing is created or changed).
    OutputLockedError
        Another process holds the folder (its pid and host are named).
    OutputError
        The folder cannot be created or locked (read-only, no permission, ...).
    """
    out = Path(out)
    check_output_folder(out, step=step, rules=rules)  # before creating anything in a user's folder
    make_dirs(out)
    locks = _acquire(out, step, shard)
    folder = OutputFolder(out, step, shard, new=False, _locks=locks)
    try:
        folder.new = check_output_folder(out, step=step, rules=rules)  # again: it may have changed meanwhile
        if not (out / MARKER_NAME).is_file():
            atomic_write_json(out / MARKER_NAME, {"step": step, "format": 1,
                                                  "created": datetime.now(UTC).isoformat(timespec="seconds")})
        yield folder
    finally:
        folder.release()
