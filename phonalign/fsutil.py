"""Safe file output and input: atomic writes, one-line errors for OS faults, ids that cannot escape.

Batch jobs over 10^5 utterances get killed; an interrupted run must leave either the old file or
the complete new one, never half of one. Everything is written to a temporary file in the same
directory and moved into place with :func:`os.replace`, which is atomic on POSIX file systems.

* **Permissions**: the temporary file is created with mode ``0o666`` filtered by the process umask
  (as ``open()`` would), not ``mkstemp``'s private ``0o600``, so that results can be shared by a
  research group exactly as their umask says.
* **Temporary names** are ``.<name>.lamtmp-<8 hex>[suffix]``: :func:`is_temp_name` recognises them
  (and the ``mkstemp`` names of earlier versions), so that clean-ups remove only the toolkit's own
  leftovers, never a user's file.
* **OS faults** (disk full, read-only file system, no permission, too many open files) while
  writing become :class:`~phonalign.errors.OutputError` naming the file and saying what to do
  (:func:`os_error`); :func:`read_json` and :func:`read_parquet` turn damaged files into
  :class:`~phonalign.errors.DamagedFileError`. Either way ``lam`` prints one line, not a traceback.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import DamagedFileError, OutputError, UnsafePathError

_SAFE_ID = re.compile(r"^[A-Za-z0-9_.\-+=@,]+$")
_TEMP = re.compile(r"^\..+\.(lamtmp-[0-9a-f]{8}|[a-z0-9_]{8})(\.[A-Za-z0-9]+)?$")
_ERRNO_IN_TEXT = re.compile(r"(?:errno|os error)\s*(\d+)", re.I)
_SHORT_WRITE = re.compile(r"requested and \d+ written")  # numpy's message for a write cut short

#: errno -> (what happened, how to fix it) for the faults an output folder meets in practice.
_FAULTS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on the device",
                   "free disk space or give an output folder on another disk; what was committed is kept "
                   "and a rerun resumes from it"),
    errno.EDQUOT: ("disk quota exceeded",
                   "free space within your quota or give an output folder elsewhere; a rerun resumes"),
    errno.EROFS: ("the file system is read-only", "give an output folder on a writable disk"),
    errno.EACCES: ("permission denied", "check the owner and permissions of the folder, or give another one"),
    errno.EPERM: ("operation not permitted", "check the owner and permissions of the folder, or give another one"),
    errno.EMFILE: ("too many open files in this process",
                   "raise the limit (e.g. `ulimit -n 4096`) or use fewer --jobs; a rerun resumes"),
    errno.ENFILE: ("too many open files on the system", "close other programs or raise the system limit"),
    errno.EIO: ("input/output error", "the disk may be failing; check it and rerun (committed work is kept)"),
    errno.ENAMETOOLONG: ("file name too long", "use shorter utterance ids or a shorter output path"),
}


def fault_errno(err: BaseException) -> int | None:
    """The OS error number of ``err``: its ``errno``, or one quoted in its text (pyarrow and
    safetensors quote it); a write cut short without one (numpy) counts as a full disk."""
    num = getattr(err, "errno", None)
    if isinstance(num, int):
        return num
    m = _ERRNO_IN_TEXT.search(str(err))
    if m:
        return int(m.group(1))
    return errno.ENOSPC if _SHORT_WRITE.search(str(err)) else None


def os_error(err: BaseException, *, path: str | Path | None = None, action: str = "cannot write") -> OutputError:
    """An :class:`OutputError` for an OS fault ``err`` on ``path``: one line, and how to fix it.

    Parameters
    ----------
    err : OSError
        The fault (its ``filename``, when set, is the file named).
    path : str or Path, optional
        The file being written, when ``err`` does not name one.
    action : str
        What was being done, e.g. ``"cannot write"``, ``"cannot create the output folder"``.
    """
    if isinstance(err, OutputError):
        return err
    num = fault_errno(err)
    known = _FAULTS.get(num) if num is not None else None
    if known is not None:
        what, hint = known
    else:
        text = str(err).strip()
        what = getattr(err, "strerror", None) or (text.splitlines()[0] if text else type(err).__name__)
        hint = "check the disk and the folder's permissions, then rerun"
    where = getattr(err, "filename", None) or path
    out = OutputError(f"{action}: {what}", path=where, hint=hint)
    out.errno = num
    return out


def is_temp_name(name: str) -> bool:
    """True for a temporary file name written by :func:`atomic_path` (or its earlier versions)."""
    return bool(_TEMP.match(name))


def _create_temp(directory: Path, name: str, suffix: str) -> Path:
    """Create an empty file ``.<name>.lamtmp-XXXXXXXX<suffix>`` in ``directory``, mode 0o666 & ~umask."""
    for _ in range(100):
        tmp = directory / f".{name}.lamtmp-{secrets.token_hex(4)}{suffix}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, "no unused temporary name", str(directory))


@contextmanager
def atomic_path(path: str | Path, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` if the block succeeds.

    Use for writers that insist on a file name (pyarrow, soundfile, praatio)::

        with atomic_path(out / "segments.parquet") as tmp:
            pq.write_table(table, tmp)

    The file gets the permissions ``open()`` would give it (``0o666`` less the umask). An OS fault
    while creating, writing or moving it raises :class:`~phonalign.errors.OutputError` naming
    ``path``; the temporary file is removed and an existing ``path`` is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = _create_temp(path.parent, path.name, suffix or path.suffix)
    except OSError as err:
        raise os_error(err, path=path) from None
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OutputError:
        raise
    except OSError as err:
        raise os_error(err, path=path) from None
    except Exception as err:  # writers that wrap OS faults in their own types (safetensors)
        if fault_errno(err) is None:
            raise
        raise os_error(err, path=path) from None
    finally:
        try:
            tmp_path.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only or vanished folder: nothing to clean


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n")


def make_dirs(path: str | Path) -> Path:
    """``mkdir -p path``, with an OS fault as one-line :class:`OutputError`."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError("the output path exists and is not a folder", path=path,
                          hint="give a new folder name") from None
    except OSError as err:
        raise os_error(err, path=path, action="cannot create the folder") from None
    return path


def read_json(path: str | Path, *, what: str = "file", hint: str | None = None) -> Any:
    """Parse a JSON file the toolkit wrote; a damaged or unreadable file is one-line error.

    Raises
    ------
    DamagedFileError
        The file cannot be read or is not valid JSON (naming the line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DamagedFileError(f"the {what} cannot be read: {getattr(err, 'strerror', None) or err}", path=path,
                               hint=hint) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DamagedFileError(f"the {what} is damaged (not valid JSON: {err.msg})", path=path, line=err.lineno,
                               hint=hint) from None


def read_parquet(path: str | Path, *, what: str = "table", hint: str | None = None,
                 columns: Sequence[str] | None = None, schema: Any = None) -> Any:
    """``pyarrow.parquet.read_table`` with a damaged or unreadable file as one-line error.

    Raises
    ------
    DamagedFileError
        The file cannot be read, is not Parquet, is truncated, or lacks the columns asked for.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        return pq.read_table(path, columns=list(columns) if columns is not None else None, schema=schema)
    except (OSError, pa.ArrowException, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DamagedFileError(f"the {what} cannot be read ({first})", path=path, hint=hint) from None


def check_utt_id(utt_id: str, *, source: str | Path | None = None) -> str:
    """Return ``utt_id`` unchanged if it is safe as a file name, else raise.

    Rejects ``/``, ``\\``, ``..``, empty ids and characters outside ``[A-Za-z0-9_.-+=@,]``, so
    that ``out / f"{utt_id}.TextGrid"`` can never land outside ``out``.
    """
    if not utt_id or utt_id in {".", ".."} or ".." in utt_id or not _SAFE_ID.match(utt_id):
        raise UnsafePathError(
            f"utterance id {utt_id!r} is not safe as a file name",
            path=source,
            utt_id=utt_id,
            hint="use ids made of letters, digits and _ . - (no '/', '\\' or '..'); "
            "rename the file or fix the manifest's id column",
        )
    return utt_id


def is_safe_name(name: str | None) -> bool:
    """True when ``name`` may be used as one path component (same rule as :func:`check_utt_id`)."""
    if not name:
        return False
    return name not in {".", ".."} and ".." not in name and bool(_SAFE_ID.match(name))


def child_path(root: str | Path, name: str, *, suffix: str = "") -> Path:
    """``root / (name + suffix)``, refusing any name that would resolve outside ``root``."""
    check_utt_id(name)
    root = Path(root)
    path = root / f"{name}{suffix}"
    if root.resolve() not in path.resolve().parents:
        raise UnsafePathError(f"{name!r} resolves outside {root}", path=path)
    return path
