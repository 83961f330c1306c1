"""The options of each aligner backend, declared once: name, type, default, help.

``lam align`` builds its backend flags from :data:`DECLARED`, and ``lam run`` configs
(``corpus.source.options`` / ``corpus.target.options``) are checked and converted against it, so a
backend option exists in one place only. A test checks that every declaration matches its backend's
constructor (names and defaults).

Values arrive as text (command line) or as YAML scalars (configs); :func:`convert_options` turns
either into the declared type and raises :class:`~phonalign.errors.AlignerError` naming the option,
the expected type and the valid choices. Options of kind ``path`` are resolved against the config
file's folder; ``model`` options (MFA dictionaries and acoustic models) are MFA model names unless
they look like a path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AlignerError

__all__ = ["AlignerOption", "DECLARED", "options_of", "convert_options", "cli_options", "looks_like_path"]


@dataclass(frozen=True)
class AlignerOption:
    """One constructor option of an aligner backend.

    Attributes
    ----------
    name : str
        The constructor keyword (and the key in a run config's ``options``).
    type : {"str", "int", "float", "bool", "path", "model", "list"}
        ``path``: a file or folder (resolved against a config's folder); ``model``: an MFA model name
        or a path; ``list``: a list of strings.
    default : Any
        The constructor's default (``None`` = not set).
    help : str
        One sentence for ``--help`` and the docs.
    choices : tuple of str, optional
        The only values allowed (``None`` is always allowed when it is the default).
    min : float, optional
        The smallest value allowed (numbers only).
    required : bool
        The backend cannot be built without it.
    cli : bool
        Offered as a ``lam align`` flag (advanced decoder settings are config-only).
    flag : str, optional
        The command-line flag, when it is not ``--name-with-dashes``.
    flag_sets : Any
        For a flag that takes no value: the value it sets (``--rename-duplicate-tiers`` sets
        ``duplicate_tiers="rename"``).
    """

    name: str
    type: str
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    min: float | None = None
    required: bool = False
    cli: bool = True
    flag: str | None = None
    flag_sets: Any = None

    @property
    def cli_flag(self) -> str:
        """The flag on the command line (``--acoustic-model``)."""
        return self.flag or "--" + self.name.replace("_", "-")


_O = AlignerOption

#: backend name -> its options, in constructor order.
DECLARED: dict[str, tuple[AlignerOption, ...]] = {
    "textgrid": (
        _O("textgrids", "path", None, "folder of <utt_id>.TextGrid (or <speaker>/<utt_id>.TextGrid); "
           "default: the TextGrid beside each audio file"),
        _O("speaker", "str", None, "speaker of MFA multi-speaker tiers ('<speaker> - phones')"),
        _O("words_tier", "str", None, "name of the word tier (default: words, word, ...)"),
        _O("phones_tier", "str", None, "name of the phone tier (default: phones, phone, ...)"),
        _O("duplicate_tiers", "str", "error", "tiers sharing a name: an error, or read as NAME, NAME_2, ...",
           choices=("error", "rename"), flag="--rename-duplicate-tiers", flag_sets="rename"),
        _O("phone_set", "str", None, "phone set of the labels (default: detected)", cli=False),
    ),
    "mfa": (
        _O("dictionary", "model", None, "pronunciation dictionary: MFA model name (english_us_arpa) or file",
           required=True),
        _O("acoustic_model", "model", None, "acoustic model: MFA model name (english_mfa, mandarin_mfa) or .zip",
           required=True),
        _O("beam", "int", 10, "MFA's beam width", min=1),
        _O("retry_beam", "int", 40, "wider beam of MFA's second try for utterances that fail", min=1),
        _O("single_speaker", "bool", False, "pass --single_speaker (no speaker adaptation)"),
        _O("clean", "bool", True, "pass --clean (drop MFA's temporary files of earlier runs)"),
        _O("mfa_command", "str", "mfa", "the mfa executable (name on PATH or path)", cli=False),
        _O("copy_audio", "bool", False, "copy audio into MFA's staged corpus instead of linking it", cli=False),
        _O("timeout", "float", None, "seconds after which mfa is stopped", cli=False, min=0.0),
        _O("extra_args", "list", (), "further arguments for mfa align, e.g. [--use_mp]", cli=False),
    ),
    "pocketsphinx": (
        _O("dictionary", "path", None, "extra pronunciations, CMUdict format (they override CMUdict)"),
        _O("g2p", "str", None, "pronounce out-of-vocabulary words with this grapheme-to-phoneme fallback; "
           "without it OOV utterances fail and are listed in the report", choices=("espeak",)),
        _O("padding", "float", 0.4, "seconds of silence added at both ends before decoding (removed from "
           "the times)", min=0.0),
        _O("beam", "float", 1e-200, "pocketsphinx's beam (a probability; smaller is wider)", cli=False),
        _O("wbeam", "float", 1e-200, "pocketsphinx's word beam", cli=False),
        _O("pbeam", "float", 1e-200, "pocketsphinx's phone beam", cli=False),
        _O("maxhmmpf", "int", -1, "cap on active HMMs per frame; -1 for none", cli=False),
        _O("noise_lsb", "int", 1, "amplitude (16-bit steps) of the seeded noise added before decoding", cli=False,
           min=0),
        _O("hmm", "path", None, "another pocketsphinx acoustic model folder", cli=False),
        _O("lexicon", "path", None, "its full pronunciation dictionary", cli=False),
    ),
}


def options_of(aligner: str) -> tuple[AlignerOption, ...]:
    """The declared options of backend ``aligner``.

    Raises
    ------
    AlignerError
        For an unknown backend, listing the valid ones.
    """
    if aligner not in DECLARED:
        raise AlignerError(f"unknown aligner {aligner!r}", hint=f"choose one of {', '.join(DECLARED)}")
    return DECLARED[aligner]


def looks_like_path(value: str) -> bool:
    """True when an MFA dictionary / model value names a file rather than a model."""
    return os.sep in value or "/" in value or value.endswith((".dict", ".txt", ".zip", ".yaml"))


def _convert_one(opt: AlignerOption, value: Any, where: str, base_dir: Path | None) -> Any:
    converted = _convert_type(opt, value, where, base_dir)
    if opt.min is not None and converted is not None and converted < opt.min:
        raise AlignerError(f"{where}: must be at least {opt.min:g}, got {converted!r}", hint=f"{opt.name}: {opt.help}")
    return converted


def _convert_type(opt: AlignerOption, value: Any, where: str, base_dir: Path | None) -> Any:
    if value is None:
        return None
    kind = opt.type
    bad = AlignerError(f"{where}: expected {_KIND_NAMES[kind]}, got {value!r}",
                       hint=f"{opt.name}: {opt.help}")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise bad
    if kind == "int":
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise bad from None
        raise bad
    if kind == "float":
        if isinstance(value, bool):
            raise bad
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad from None
    if kind == "list":
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise bad
        return tuple(str(v) for v in value)
    if not isinstance(value, (str, Path)) or isinstance(value, bool):
        raise bad
    text = str(value)
    if opt.choices is not None and text not in opt.choices:
        raise AlignerError(f"{where}: {text!r} is not one of {', '.join(opt.choices)}",
                           hint=f"{opt.name}: {opt.help}")
    if base_dir is not None and (kind == "path" or (kind == "model" and looks_like_path(text))):
        p = Path(text).expanduser()
        return str(p if p.is_absolute() else (base_dir / p).resolve())
    return text


_KIND_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
               "path": "a path", "model": "a model name or path", "list": "a list of strings"}


def convert_options(aligner: str, options: Mapping[str, Any] | None, *, where: str = "options",
                    base_dir: str | Path | None = None, flags: bool = False) -> dict[str, Any]:
    """Check and convert the options given for backend ``aligner``.

    Parameters
    ----------
    aligner : str
        Backend name.
    options : mapping
        Option name -> value as given (text from the command line, YAML scalars from a config).
    where : str
        Prefix of error messages (``corpus.source.options``).
    base_dir : str or Path, optional
        Folder that relative ``path`` options are taken from (a config file's folder).
    flags : bool
        Name options by their command-line flags in errors (``--beam``) instead of ``where.beam``.

    Returns
    -------
    dict
        Only the options given (``None`` values dropped), converted to the declared types.

    Raises
    ------
    AlignerError
        Unknown option (listing the backend's options), wrong type, a value outside the choices.
    """
    declared = {o.name: o for o in options_of(aligner)}
    base = None if base_dir is None else Path(base_dir)
    out: dict[str, Any] = {}
    for key, value in (options or {}).items():
        opt = declared.get(key)
        if opt is None:
            label = f"--{key.replace('_', '-')}" if flags else f"{where}.{key}"
            raise AlignerError(f"{label}: the {aligner!r} aligner has no option {key!r}",
                               hint=f"its options are: {', '.join(declared)}")
        label = opt.cli_flag if flags else f"{where}.{key}"
        converted = _convert_one(opt, value, label, base)
        if converted is not None:
            out[key] = converted
    return out


def missing_required(aligner: str, options: Mapping[str, Any]) -> list[AlignerOption]:
    """The required options of ``aligner`` that ``options`` does not give."""
    return [o for o in options_of(aligner) if o.required and options.get(o.name) is None]


@dataclass(frozen=True)
class CliOption:
    """One ``lam align`` flag, possibly shared by several backends (``--dictionary``)."""

    name: str
    flag: str
    help: str
    is_flag: bool  # takes no value
    bool_pair: bool  # --name/--no-name
    backends: tuple[str, ...]


def cli_options() -> list[CliOption]:
    """The backend flags of ``lam align``, merged over backends by option name, in declaration order.

    A name several backends declare (``dictionary``, ``beam``) is one flag; its help lists each
    backend's meaning, and its value is converted by the chosen backend's declaration.
    """
    merged: dict[str, list[tuple[str, AlignerOption]]] = {}
    for backend, opts in DECLARED.items():
        for o in opts:
            if o.cli:
                merged.setdefault(o.name, []).append((backend, o))
    out = []
    for name, pairs in merged.items():
        first = pairs[0][1]
        helps = "; ".join(f"{b}: {o.help}" + (f" (default {o.default})" if o.default not in (None, ()) else "")
                          for b, o in pairs)
        is_bool = all(o.type == "bool" for _, o in pairs)
        out.append(CliOption(name=name, flag=first.cli_flag, help=helps,
                             is_flag=first.flag_sets is not None or (is_bool and not first.default),
                             bool_pair=is_bool and bool(first.default),
                             backends=tuple(b for b, _ in pairs)))
    return out
