"""Option checks shared by the ``lam`` verbs: every value is checked by the command line itself.

typer/click check numbers against ``min=``/``max=``; the callbacks here check what they cannot
(choices read from the library's own constants, open intervals, text encodings, regular
expressions), so that no value reaches library code as a traceback. A bad value gives click's
usage error (exit code 2) naming the option and the valid values.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import typer


def choice(valid: Iterable[str] | Callable[[], Iterable[str]]) -> Callable[[str | None], str | None]:
    """A callback accepting None or one of ``valid`` (a sequence, or a function returning one so that
    the library constant is imported only when the option is used)."""

    def check(value: str | None) -> str | None:
        if value is None:
            return value
        options = list(valid() if callable(valid) else valid)
        if value not in options:
            raise typer.BadParameter(f"{value!r} is not one of: {', '.join(options)}")
        return value

    return check


def choices(valid: Iterable[str] | Callable[[], Iterable[str]], *, split: bool = False
            ) -> Callable[[Sequence[str] | None], list[str] | None]:
    """A callback for a repeatable option: every value in ``valid`` (comma lists split if ``split``)."""

    def check(values: Sequence[str] | None) -> list[str] | None:
        if not values:
            return None
        items = [v for item in values for v in (item.split(",") if split else [item]) if v]
        options = list(valid() if callable(valid) else valid)
        bad = [v for v in items if v not in options]
        if bad:
            raise typer.BadParameter(f"{', '.join(map(repr, bad))} not among: {', '.join(options)}")
        return items

    return check


def open_unit_interval(value: float) -> float:
    """A callback for a probability or confidence level strictly between 0 and 1."""
    if not 0.0 < value < 1.0:
        raise typer.BadParameter(f"{value} is not strictly between 0 and 1")
    return value


def positive(value: float | None) -> float | None:
    """A callback for a quantity that must be greater than 0 (seconds, sizes)."""
    if value is not None and not value > 0:
        raise typer.BadParameter(f"{value} is not greater than 0")
    return value


def text_encoding(value: str) -> str:
    """A callback for a Python codec name (``utf-8``, ``gbk``, ``latin-1`` ...)."""
    try:
        codecs.lookup(value)
    except LookupError:
        raise typer.BadParameter(f"{value!r} is not a known text encoding (e.g. utf-8, gbk, big5, latin-1)") from None
    return value


def regex(value: str | None) -> str | None:
    """A callback for a regular expression."""
    if value is None:
        return value
    try:
        re.compile(value)
    except re.error as err:
        raise typer.BadParameter(f"{value!r} is not a valid regular expression ({err})") from None
    return value


def library_check(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A callback that runs the library's own check of a value (and takes what it returns, e.g. a
    parsed value), so that the command line refuses a bad value before any work without checking
    it a second way: a :class:`~phonalign.errors.LamError` becomes click's usage error."""
    from phonalign.errors import LamError

    def run(value: Any) -> Any:
        if value is None:
            return value
        try:
            return check(value)
        except LamError as err:
            raise typer.BadParameter(err.message + (f" ({err.hint})" if err.hint else "")) from None

    return run


def device(value: str | None) -> str | None:
    """A callback for ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (:func:`analysis.defaults.check_device`)."""
    from analysis.defaults import check_device

    return library_check(check_device)(value)


def shard(value: str) -> tuple[int, int]:
    """A callback turning ``I/N`` into ``(I, N)`` (:func:`analysis.extract.parse_shard`)."""
    from analysis.extract import parse_shard

    return library_check(parse_shard)(value)


def languages() -> tuple[str, ...]:
    """The languages of :data:`phonalign.records.LANGUAGES`."""
    from phonalign.records import LANGUAGES

    return tuple(LANGUAGES)


def engines() -> tuple[str, ...]:
    """The engines of :data:`phonalign.engine.ENGINES` (``--engine``)."""
    from phonalign.engine import ENGINES

    return tuple(ENGINES)


def phone_sets() -> tuple[str, ...]:
    """The phone sets of :data:`phonalign.phonesets.PHONE_SETS`."""
    from phonalign.phonesets import PHONE_SETS

    return tuple(PHONE_SETS)


def class_option(name: str) -> Callable[[str | None], str | None]:
    """A callback for one named vowel-class option (``trap``, ``strut`` ...) of PHONESETS.md."""

    def valid() -> tuple[str, ...]:
        from phonalign.phonesets import OPTION_CHOICES

        return tuple(OPTION_CHOICES[name])

    return choice(valid)
