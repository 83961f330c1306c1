"""Progress of long loops, shown the way the output can take it.

On a terminal (or in a Jupyter kernel) a tqdm bar on stderr; anywhere else (output redirected to a
file, a batch job's log) no bar, whose carriage-return updates would fill the file, but a plain
log record now and then (:func:`progress_bar`). The records go through :mod:`logging` like every other
message of the library, so the application decides where they go and how much of them it wants
(``lam`` prints INFO records; ``lam -q`` only warnings).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["Progress", "interactive", "progress_bar", "track"]

logger = logging.getLogger(__name__)

#: Seconds between two plain progress lines of one loop (its first and last line are always written).
LINE_INTERVAL = 30.0


def interactive() -> bool:
    """True when progress bars can be drawn: stderr is a terminal, or the code runs in a Jupyter
    kernel (tqdm's notebook widget)."""
    stream = sys.stderr
    if stream is not None and getattr(stream, "isatty", lambda: False)():
        return True
    shell = sys.modules.get("IPython")
    ip = getattr(shell, "get_ipython", lambda: None)() if shell is not None else None
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


class Progress:
    """A loop's progress: ``update(n)``, ``set_postfix(**values)``, ``close()`` (also a context manager).

    Made by :func:`progress_bar`: a tqdm bar when :func:`interactive`, else plain log records at
    ``log_level``, at most one every :data:`LINE_INTERVAL` seconds, plus one when the loop ends.
    """

    def __init__(self, total: int | None, *, desc: str, item: str, progress: bool, log_level: int) -> None:
        self.total, self.desc, self.item, self.log_level = total, desc, item, log_level
        self.n = 0
        self._postfix: dict[str, Any] = {}
        self._closed = False
        self._t0 = self._last = time.monotonic()
        self._bar = None
        self._plain = progress and not interactive()
        if progress and not self._plain:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=item, mininterval=0.5, leave=False)

    def update(self, n: int = 1) -> None:
        """``n`` more items done."""
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._plain and time.monotonic() - self._last >= LINE_INTERVAL:
            self._line()

    def set_postfix(self, **values: Any) -> None:
        """Values shown beside the count (the bar's postfix, or the end of the plain line)."""
        self._postfix = values
        if self._bar is not None:
            self._bar.set_postfix(**values)

    def close(self) -> None:
        """End the loop: the bar disappears; a plain line says how far it got and how long it took."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self._plain and self.n:
            self._line(done=True)

    def _line(self, done: bool = False) -> None:
        self._last = time.monotonic()
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        extra = "".join(f", {k} {v}" for k, v in self._postfix.items())
        logger.log(self.log_level, "%s: %s %s%s%s (%.1f s)", self.desc, count, self.item, extra,
                   "" if done else " ...", self._last - self._t0)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def progress_bar(total: int | None, *, desc: str, item: str = "it", progress: bool = True,
                 log_level: int = logging.INFO) -> Progress:
    """The progress of a loop of ``total`` items (None: unknown).

    Parameters
    ----------
    total : int or None
        Items the loop will do.
    desc : str
        What the loop does (``"aligning"``, ``"features whisper-base"``).
    item : str
        What an item is (``"utt"``, ``"layer"``, ``"epoch"``).
    progress : bool
        False: nothing is shown or logged (the callers' own ``progress`` setting).
    log_level : int
        Log level of the plain lines written when no bar can be drawn; inner loops whose outer
        loop already reports (training epochs inside a pipeline) use ``logging.DEBUG``.

    Examples
    --------
    >>> from phonalign.progress import progress_bar
    >>> with progress_bar(3, desc="counting", item="step", progress=False) as bar:
    ...     for _ in range(3):
    ...         bar.update(1)
    >>> bar.n
    3
    """
    return Progress(total, desc=desc, item=item, progress=progress, log_level=log_level)


def track(items: Iterable[T], *, total: int | None = None, desc: str, item: str = "it", progress: bool = True,
          log_level: int = logging.INFO) -> Iterator[T]:
    """``items``, one by one, with their :func:`progress_bar` (``total`` defaults to ``len(items)``)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(total, desc=desc, item=item, progress=progress, log_level=log_level) as bar:
        for one in items:
            yield one
            bar.update(1)
