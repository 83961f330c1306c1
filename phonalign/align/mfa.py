"""Montreal Forced Aligner backend (``--aligner mfa``): ``mfa align`` driven as a subprocess.

MFA is installed from conda-forge (``environment.yml``), not pip, so the toolkit never imports it:
it stages the corpus in MFA's layout, runs the ``mfa`` command, and reads back what MFA wrote.

* **Staging** (:meth:`MFAAligner.stage`): ``<workdir>/mfa/corpus/<speaker>/<utt_id>.<ext>`` (a
  symbolic link to the audio for WAV/FLAC, a 16 kHz WAV copy for other formats, or copies with
  ``copy_audio=True``) and ``<utt_id>.lab`` holding the transcript. One folder per speaker is how
  MFA knows speakers (for its speaker adaptation; ``single_speaker=True`` turns that off).
* **Command** (:meth:`MFAAligner.command`): ``mfa align CORPUS DICTIONARY ACOUSTIC_MODEL OUTPUT
  -j N --beam B --retry_beam R --output_format long_textgrid --temporary_directory TMP
  [--clean] [--single_speaker]``; dictionary and model are MFA model names (``english_us_arpa``,
  ``english_mfa``, ``mandarin_mfa`` ...) or paths.
* **Reading** (:meth:`MFAAligner.read_outputs`): ``OUTPUT/<speaker>/<utt_id>.TextGrid`` through
  :func:`phonalign.textgrid_io.read_alignment` (plain ``words``/``phones`` tiers or MFA's
  multi-speaker ``"<speaker> - words"`` names), and MFA's out-of-vocabulary lists
  (``oovs_found*.txt``, ``utterance_oovs.txt``) into each result's ``info["oov"]``. An utterance
  without a TextGrid fails with the reason MFA gave (``unaligned.txt``) where it gave one.
* **Acoustic score** (:meth:`MFAAligner.read_analysis`): MFA 2.1 and later write
  ``OUTPUT/alignment_analysis.csv`` with one row per utterance; its ``speech_log_likelihood`` (the
  mean per-frame log-likelihood of the speech phones, silence left out) becomes the result's
  ``info["acoustic_score"]``, which :mod:`phonalign.align.quality` judges against the corpus. An MFA
  that writes no such file leaves the score out; nothing else changes.

A failed ``mfa`` run raises :class:`~phonalign.errors.AlignerError` with the command that was run
and the tail of its log: nothing can be aligned, so the batch stops there.
"""

from __future__ import annotations

import csv
import math
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import AlignerError, LamError, TextGridError
from ..fsutil import check_utt_id
from ..records import Utterance
from .base import Aligner, AlignResult

#: How to get MFA, shown whenever the command is missing.
INSTALL_HINT = (
    "MFA comes from conda-forge, not pip: `conda env create -f environment.yml && conda activate lam` "
    "(or `conda install -c conda-forge montreal-forced-aligner`), then download models, e.g. "
    "`mfa model download acoustic english_us_arpa` and `mfa model download dictionary english_us_arpa`"
)
#: Audio formats staged as links; anything else is converted to 16 kHz WAV first.
_LINKABLE = {".wav", ".flac"}
_SAFE_SPEAKER = re.compile(r"[^A-Za-z0-9_.\-+=@,]")
#: Lines of MFA's log shown when it fails.
LOG_TAIL_LINES = 30


@dataclass(frozen=True)
class StagedUtterance:
    """Where one utterance went in the staged corpus."""

    utt_id: str
    speaker: str  # folder name (sanitised speaker id)
    audio: Path
    lab: Path
    words: tuple[str, ...]  # lower-case transcript tokens, to find its OOVs


def _for_mfa(text: str) -> str:
    """The transcript as staged for MFA: numbers spelled out (MFA's dictionaries hold no digits);
    markup kept as written, which MFA reads as noise itself. Other text is left to MFA's own
    normalisation, so its word tier keeps the transcript's spelling."""
    from ..text_norm import MARKUP, spell_number

    out = []
    for piece in re.split(f"({MARKUP.pattern})", text):
        if not piece or MARKUP.fullmatch(piece):
            out.append(piece)
            continue
        words = []
        for w in piece.split():
            core = w.strip(".,;:!?\"'()")
            spelled = spell_number(core) if core else None
            words.append(" ".join(spelled) if spelled else w)
        out.append(" ".join(words))
    return " ".join(x.strip() for x in out if x.strip())


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or value.endswith((".dict", ".txt", ".zip", ".yaml"))


def _tail(path: Path, n: int = LOG_TAIL_LINES) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


class MFAAligner(Aligner):
    """Forced alignment with the Montreal Forced Aligner's ``mfa align``.

    Parameters
    ----------
    dictionary : str or Path
        Pronunciation dictionary: an MFA model name (``english_us_arpa``) or a file.
    acoustic_model : str or Path
        Acoustic model: an MFA model name (``english_mfa``, ``mandarin_mfa``) or a ``.zip``.
    beam, retry_beam : int
        MFA's beam and the wider beam of its second try for utterances that fail.
    single_speaker : bool
        Pass ``--single_speaker`` (no per-speaker adaptation).
    clean : bool
        Pass ``--clean`` (drop MFA's temporary files from earlier runs first).
    mfa_command : str
        The ``mfa`` executable (name on PATH or path).
    copy_audio : bool
        Copy audio into the staged corpus instead of linking it.
    timeout : float, optional
        Seconds after which ``mfa`` is stopped.
    extra_args : sequence of str
        Further arguments for ``mfa align`` (e.g. ``["--use_mp"]``).
    """

    name = "mfa"
    phone_set = None  # ARPAbet or MFA IPA depending on the model: detected from the labels
    min_phone_duration = 0.03  # MFA's phone HMMs: 3 states, 10 ms frames

    def __init__(self, dictionary: str | Path, acoustic_model: str | Path, beam: int = 10, retry_beam: int = 40,
                 single_speaker: bool = False, clean: bool = True, mfa_command: str = "mfa", *,
                 copy_audio: bool = False, timeout: float | None = None, extra_args: Sequence[str] = ()) -> None:
        if dictionary is None or acoustic_model is None:
            raise AlignerError("the mfa aligner needs a dictionary and an acoustic model",
                               hint="e.g. --dictionary english_us_arpa --acoustic-model english_us_arpa")
        if beam <= 0 or retry_beam <= 0:
            raise AlignerError(f"beams must be positive (beam={beam}, retry_beam={retry_beam})")
        if retry_beam < beam:
            raise AlignerError(f"retry_beam ({retry_beam}) must be at least beam ({beam})",
                               hint="MFA retries failed utterances with the wider retry beam")
        self.dictionary = str(dictionary)
        self.acoustic_model = str(acoustic_model)
        self.beam = int(beam)
        self.retry_beam = int(retry_beam)
        self.single_speaker = bool(single_speaker)
        self.clean = bool(clean)
        self.mfa_command = mfa_command
        self.copy_audio = copy_audio
        self.timeout = timeout
        self.extra_args = tuple(extra_args)

    # -- set-up ---------------------------------------------------------------------------
    def check_available(self) -> None:
        if shutil.which(self.mfa_command) is None:
            raise AlignerError(f"the Montreal Forced Aligner command {self.mfa_command!r} was not found",
                               hint=INSTALL_HINT)
        for what, value in (("dictionary", self.dictionary), ("acoustic model", self.acoustic_model)):
            if _looks_like_path(value) and not Path(value).exists():
                kind = what.split()[-1]
                raise AlignerError(f"MFA {what} not found", path=value,
                                   hint=f"pass an existing file or an MFA model name (`mfa model list {kind}`)")

    def config(self) -> dict:
        return {"aligner": self.name, "dictionary": self.dictionary, "acoustic_model": self.acoustic_model,
                "beam": self.beam, "retry_beam": self.retry_beam, "single_speaker": self.single_speaker,
                "clean": self.clean, "mfa_command": self.mfa_command, "extra_args": list(self.extra_args),
                "output_format": "long_textgrid"}

    def command(self, corpus_dir: Path, output_dir: Path, *, jobs: int = 1, temp_dir: Path | None = None) -> list[str]:
        """The ``mfa align`` command line for a staged corpus (a list for :func:`subprocess.run`)."""
        cmd = [self.mfa_command, "align", str(corpus_dir), self.dictionary, self.acoustic_model, str(output_dir),
               "-j", str(max(1, int(jobs))), "--beam", str(self.beam), "--retry_beam", str(self.retry_beam),
               "--output_format", "long_textgrid"]
        if temp_dir is not None:
            cmd += ["--temporary_directory", str(temp_dir)]
        if self.clean:
            cmd.append("--clean")
        if self.single_speaker:
            cmd.append("--single_speaker")
        return cmd + list(self.extra_args)

    def plan(self, workdir: Path, *, jobs: int = 1) -> list[str]:
        """The staging step and the exact ``mfa align`` command :meth:`align` runs in ``workdir``."""
        workdir = Path(workdir) / "mfa"
        cmd = self.command(workdir / "corpus", workdir / "output", jobs=jobs, temp_dir=workdir / "tmp")
        return [f"stage the corpus in {workdir / 'corpus'} (<speaker>/<utt_id>.wav|.flac + .lab)",
                shlex.join(cmd),
                f"read {workdir / 'output'}/<speaker>/<utt_id>.TextGrid and MFA's OOV lists"]

    # -- staging --------------------------------------------------------------------------
    def stage(self, utterances: Sequence[Utterance],
              corpus_dir: Path) -> tuple[list[StagedUtterance], list[AlignResult]]:
        """Write MFA's corpus layout; return the staged utterances and the ones that could not be
        staged (as failed results)."""
        from ..audio import load_audio
        from ..text_norm import normalize_words

        corpus_dir.mkdir(parents=True, exist_ok=True)
        staged: list[StagedUtterance] = []
        failed: list[AlignResult] = []
        for u in utterances:
            try:
                check_utt_id(u.utt_id)
                text = (u.text or "").strip()
                if not text:
                    raise AlignerError("the transcript is empty", utt_id=u.utt_id, path=u.audio_path,
                                       hint="fill in the transcript (text column or .lab file)")
                speaker = _SAFE_SPEAKER.sub("_", u.speaker or "unknown") or "unknown"
                if speaker in {".", ".."}:
                    speaker = "unknown"
                src = Path(u.audio_path)
                folder = corpus_dir / speaker
                folder.mkdir(parents=True, exist_ok=True)
                if not src.is_file():
                    raise AlignerError("audio file not found", utt_id=u.utt_id, path=src,
                                       hint="check the corpus directory or the manifest's audio_path column")
                if src.suffix.lower() in _LINKABLE:
                    dest = folder / f"{u.utt_id}{src.suffix.lower()}"
                    if dest.is_symlink() or dest.exists():
                        dest.unlink()
                    if self.copy_audio:
                        shutil.copyfile(src, dest)
                    else:
                        dest.symlink_to(src.resolve())
                else:
                    import soundfile as sf

                    dest = folder / f"{u.utt_id}.wav"
                    sf.write(str(dest), load_audio(src, sr=16000), 16000, subtype="PCM_16")
                lab = folder / f"{u.utt_id}.lab"
                lab.write_text(_for_mfa(text) + "\n", encoding="utf-8")
                staged.append(StagedUtterance(u.utt_id, speaker, dest, lab, tuple(normalize_words(text))))
            except LamError as err:
                failed.append(AlignResult(u.utt_id, None, err, {}))
            except OSError as err:
                failed.append(AlignResult(u.utt_id, None, AlignerError(f"cannot stage for MFA: {err}",
                                                                       utt_id=u.utt_id, path=u.audio_path), {}))
        return staged, failed

    # -- running --------------------------------------------------------------------------
    def run_mfa(self, cmd: list[str], log_path: Path, temp_dir: Path | None = None) -> None:
        """Run ``cmd`` with its output in ``log_path``; raise with the log's tail if it fails."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(log_path, "w", encoding="utf-8") as log:
                proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      timeout=self.timeout, check=False)
        except FileNotFoundError:
            raise AlignerError(f"the Montreal Forced Aligner command {cmd[0]!r} was not found",
                               hint=INSTALL_HINT) from None
        except subprocess.TimeoutExpired:
            raise AlignerError(f"mfa align did not finish within {self.timeout} s", path=log_path,
                               hint=f"command: {shlex.join(cmd)}\nlast lines of its log:\n{_tail(log_path)}") from None
        if proc.returncode != 0:
            tail = _tail(log_path)
            # MFA keeps its detailed logs in the temporary directory; show the newest one too
            if temp_dir is not None and temp_dir.is_dir():
                logs = sorted(temp_dir.rglob("*.log"), key=lambda p: p.stat().st_mtime)
                if logs:
                    tail += f"\n--- {logs[-1]} ---\n{_tail(logs[-1], 15)}"
            raise AlignerError(
                f"mfa align failed with exit code {proc.returncode}", path=log_path,
                hint=f"command: {shlex.join(cmd)}\nlast lines of its log:\n{tail}",
            )

    def align(self, utterances: Sequence[Utterance], workdir: Path, *, jobs: int = 1) -> Iterator[AlignResult]:
        workdir = Path(workdir) / "mfa"  # the runner keeps its own files in workdir
        if not utterances:
            return
        self.check_available()
        corpus_dir, output_dir, temp_dir = workdir / "corpus", workdir / "output", workdir / "tmp"
        for d in (corpus_dir, output_dir):
            if d.exists():
                shutil.rmtree(d)  # a resumed run stages only the utterances still to do
        staged, failed = self.stage(utterances, corpus_dir)
        yield from failed
        if not staged:
            return
        cmd = self.command(corpus_dir, output_dir, jobs=jobs, temp_dir=temp_dir)
        self.run_mfa(cmd, workdir / "mfa_align.log", temp_dir)
        yield from self.read_outputs(staged, output_dir)

    # -- reading --------------------------------------------------------------------------
    @staticmethod
    def read_oovs(output_dir: Path) -> tuple[set[str], dict[str, list[str]]]:
        """MFA's OOV lists: all OOV words (``oovs_found*.txt``; first column) and, from
        ``utterance_oovs.txt``, the OOVs per file name (lines ``NAME[:] w1, w2`` in MFA's formats)."""
        words: set[str] = set()
        per_utt: dict[str, list[str]] = {}
        for path in sorted(output_dir.glob("oovs_found*.txt")) + sorted(output_dir.glob("oov_counts*.txt")):
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.strip():
                    words.add(line.split()[0].lower())
        for path in sorted(output_dir.glob("utterance_oovs*.txt")):
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                if not line.strip():
                    continue
                if ":" in line:
                    head, _, rest = line.partition(":")
                else:
                    head, rest = line.split()[0], " ".join(line.split()[1:])
                name = Path(head.split()[0]).stem
                oovs = [w.strip().lower() for w in re.split(r"[,\s]+", rest) if w.strip()]
                per_utt.setdefault(name, []).extend(oovs)
                words.update(oovs)
        return words, per_utt

    @staticmethod
    def read_unaligned(output_dir: Path) -> dict[str, str]:
        """Reasons MFA gave for utterances it could not align (``unaligned.txt``), by file name."""
        out: dict[str, str] = {}
        for path in sorted(output_dir.glob("unaligned*.txt")):
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                parts = line.strip().split(maxsplit=1)
                if parts:
                    out[Path(parts[0].rstrip(":,")).stem] = parts[1] if len(parts) > 1 else "no reason given"
        return out

    @staticmethod
    def read_analysis(output_dir: Path) -> dict[str, float]:
        """MFA's per-utterance speech log-likelihood, by file name (the staged utterance id).

        Read from ``alignment_analysis.csv`` (columns ``file, begin, end, speaker,
        overall_log_likelihood, speech_log_likelihood, phone_duration_deviation, snr``): the mean
        per-frame log-likelihood of the utterance's speech phones (natural log, per 10 ms frame). A file
        with several rows (MFA's own segmentation of one file) gets their mean weighted by duration;
        empty or non-finite values are left out. Returns ``{}`` when MFA wrote no such file (before
        2.1) or it lacks those columns.
        """
        path = output_dir / "alignment_analysis.csv"
        if not path.is_file():
            return {}
        sums: dict[str, list[float]] = {}
        with open(path, newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"file", "speech_log_likelihood"} <= set(reader.fieldnames):
                return {}
            for row in reader:
                try:
                    score = float(row["speech_log_likelihood"])
                except (TypeError, ValueError):
                    continue
                if not math.isfinite(score):
                    continue
                try:
                    weight = max(float(row.get("end") or 0.0) - float(row.get("begin") or 0.0), 0.0) or 1.0
                except ValueError:
                    weight = 1.0
                name = (row["file"] or "").strip()
                if name[-4:].lower() in (".wav", ".lab") or name[-5:].lower() == ".flac":
                    name = name.rsplit(".", 1)[0]
                acc = sums.setdefault(name, [0.0, 0.0])
                acc[0] += weight * score
                acc[1] += weight
        return {name: total / weight for name, (total, weight) in sums.items() if weight > 0}

    def read_outputs(self, staged: Sequence[StagedUtterance], output_dir: Path) -> Iterator[AlignResult]:
        """One result per staged utterance from MFA's output folder."""
        from ..textgrid_io import read_alignment

        oov_words, oov_per_utt = self.read_oovs(output_dir)
        unaligned = self.read_unaligned(output_dir)
        scores = self.read_analysis(output_dir)
        for s in staged:
            oovs = sorted(set(oov_per_utt.get(s.utt_id, [])) | {w for w in s.words if w in oov_words})
            info: dict = {"oov": oovs} if oovs else {}
            if s.utt_id in scores:
                info["acoustic_score"] = round(scores[s.utt_id], 6)
            candidates = [output_dir / s.speaker / f"{s.utt_id}.TextGrid", output_dir / f"{s.utt_id}.TextGrid"]
            path = next((p for p in candidates if p.is_file()), None)
            if path is None:
                reason = unaligned.get(s.utt_id)
                msg = "MFA wrote no TextGrid for this utterance"
                msg += f" ({reason})" if reason else ""
                hint = ("MFA could not align it: check that the transcript matches the audio; a wider "
                        "--retry-beam sometimes helps")
                if oovs:
                    hint += f"; its out-of-vocabulary words ({', '.join(oovs)}) need dictionary entries"
                yield AlignResult(s.utt_id, None, AlignerError(msg, utt_id=s.utt_id, path=s.audio, hint=hint), info)
                continue
            try:
                try:
                    alignment = read_alignment(path)
                except TextGridError:
                    # several speakers' tiers in one file: take this utterance's speaker
                    alignment = read_alignment(path, speaker=s.speaker)
            except LamError as err:
                yield AlignResult(s.utt_id, None, err, info)
                continue
            yield AlignResult(s.utt_id, alignment, None, info)
