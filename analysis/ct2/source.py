"""Where the files of one CTranslate2 Whisper model are: weights (whole or in parts) and companions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelLoadError

__all__ = ["CT2Source", "ct2_model_files", "is_ct2_directory"]


@dataclass(frozen=True)
class CT2Source:
    """Where the files of one CTranslate2 Whisper model are.

    Attributes
    ----------
    model_files : tuple of Path
        ``model.bin`` or its parts in order.
    config : Path or None
        CTranslate2 ``config.json`` (suppress ids, language ids, alignment heads).
    tokenizer : Path or None
        Hugging Face ``tokenizer.json``.
    vocabulary : Path or None
        CTranslate2 ``vocabulary.json`` (a JSON list of tokens) or ``vocabulary.txt`` (one token per
        line), used only without ``tokenizer.json``.
    """

    model_files: tuple[Path, ...]
    config: Path | None = None
    tokenizer: Path | None = None
    vocabulary: Path | None = None

    @classmethod
    def from_directory(cls, directory: str | Path) -> CT2Source:
        """Find ``model.bin`` (or ``model.bin.part1..N``) and its companions in ``directory``."""
        directory = Path(directory)
        files = ct2_model_files(directory)
        def opt(*names: str) -> Path | None:
            return next((directory / n for n in names if (directory / n).is_file()), None)

        # CTranslate2 4 writes vocabulary.json, earlier versions vocabulary.txt.
        return cls(tuple(files), opt("config.json"), opt("tokenizer.json"), opt("vocabulary.json", "vocabulary.txt"))

    def all_files(self) -> list[Path]:
        """Every file the checkpoint is made of (weights parts, config, tokenizer), for hashing."""
        return [*self.model_files, *(p for p in (self.config, self.tokenizer, self.vocabulary) if p is not None)]


def is_ct2_directory(directory: str | Path) -> bool:
    """Whether ``directory`` holds a CTranslate2 model (``model.bin`` or ``model.bin.part1``)."""
    directory = Path(directory)
    return (directory / "model.bin").is_file() or (directory / "model.bin.part1").is_file()


def ct2_model_files(directory: str | Path) -> list[Path]:
    """``[model.bin]`` or ``[model.bin.part1, ..., model.bin.partN]`` of ``directory``, in part order."""
    directory = Path(directory)
    single = directory / "model.bin"
    parts = {int(m.group(1)): p for p in directory.glob("model.bin.part*")
             if (m := re.fullmatch(r"model\.bin\.part(\d+)", p.name))}
    if single.is_file():
        if parts:
            raise ModelLoadError("both model.bin and model.bin.partN files are present", path=directory,
                                 hint="keep either the whole model.bin or its parts, not both")
        return [single]
    if not parts:
        raise ModelLoadError("no model.bin (or model.bin.part1, part2, ...) in this directory", path=directory,
                             hint="pass a faster-whisper / CTranslate2 model directory")
    if sorted(parts) != list(range(1, len(parts) + 1)):
        raise ModelLoadError(f"model.bin parts are not numbered 1..N: found {sorted(parts)}", path=directory,
                             hint="a part is missing; copy every model.bin.partN file")
    return [parts[i] for i in sorted(parts)]

