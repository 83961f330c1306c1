"""One self-contained HTML page for a run folder: ``lam report RUN_DIR`` -> ``RUN_DIR/report/index.html``.

The page renders whatever it finds, so that it serves a whole ``lam run`` / ``lam demo`` folder as
well as a folder holding only some outputs, and picks up new outputs without a change here:

=====================================  =======================================================
found (relative to RUN_DIR)             shown
=====================================  =======================================================
``config.yaml``, ``versions.json``      the configuration and library versions (collapsed)
``similarity/rankings.json``            per unit: score per layer with its interval, the within-
(or ``rankings.json``)                  language reference, the selections; the uncertainty fields
                                        of newer rankings (``p_best``, ``tied_with_best``,
                                        ``flat``, ``gap``, ``reference_split``, ``p_null``,
                                        ``resampling``, ``duration_s``) when present, any other
                                        per-layer list as one more column
``report/results.json``                 the strategies table (target UAR mean ± std over seeds)
``acoustics/acoustics.parquet``         vowel-class means of F1/F2/F3, duration, F0, intensity
                                        per language; F0/intensity/duration per emotion
``geometry/geometry.json``              the probe's balanced accuracy per layer against chance
``similarity/vowel_map.parquet``        the cross-language vowel map (``lam similarity --vowel-map``):
                                        the diagonal advantage per layer with its interval and the
                                        layers tied with the peak, and the 6 x 6 map of the peak
                                        layer with every cell's interval (any other ``*.parquet`` of
                                        a known folder is shown as a table, the first rows when long)
every ``*.png`` under RUN_DIR           embedded as a data URI, grouped by the folder it is in
=====================================  =======================================================

Figures are embedded (``data:image/png;base64``), so the single file opens offline anywhere and
can be mailed; links point only at files inside RUN_DIR, relative to the page. No script, no
external style sheet, no font download.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from phonalign import __version__
from phonalign.fsutil import atomic_write_text
from phonalign.outdir import FolderRules, output_folder

from .errors import TrainError

logger = logging.getLogger(__name__)

#: Folders whose figures and tables get their own section, in page order, with their heading.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("similarity", "Layer similarity"),
    ("geometry", "Layer geometry of the vowels"),
    ("acoustics", "Acoustic vowel space"),
    ("report", "Emotion transfer (LAM)"),
)
#: Keys of a rankings unit that are drawn specially (everything else per-layer becomes a column).
_KNOWN_UNIT_KEYS = {"layers", "score", "ci_low", "ci_high", "selections", "ranking", "n_source", "n_target",
                    "n_utt_source", "n_utt_target"}
#: What the page's folder may hold: the markdown report of `lam run` / `lam demo` (written there
#: without a marker of its own); a page written before has the folder's marker.
REPORT_FOLDER = FolderRules(legacy=("report.md", "results.json"))
#: Rows of a Parquet table shown in full; longer tables show their first rows.
MAX_TABLE_ROWS = 300
_SKIP_DIRS = {"features", "runs", "aligned", "parts", "steps", "work", "textgrids"}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1180px;padding:1em 2em;
color:#222;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #0072B2;padding-bottom:.2em}
h2{font-size:1.3em;margin-top:2em;border-bottom:1px solid #ccc}
h3{font-size:1.05em;margin-top:1.4em}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right}
th{background:#f3f6f9}
td.l,th.l{text-align:left}
tr.best td{background:#fff3d6}
tr.tied td{background:#fffaf0}
figure{margin:1em 0}
figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.8em}
.note{color:#555;font-size:.9em}
.flag{display:inline-block;background:#D55E00;color:#fff;border-radius:3px;padding:0 .4em;font-size:.8em}
nav a{margin-right:1em}
"""


@dataclass(frozen=True)
class HtmlReport:
    """What :func:`write_html_report` wrote: the page, its size (bytes) and the figures it embeds."""

    path: Path
    size_bytes: int
    figures: tuple[Path, ...]
    sections: tuple[str, ...]


# ------------------------------------------------------------------------------------------ helpers


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if math.isnan(x):
            return "–"
        return f"{x:.{digits}f}" if abs(x) < 1e4 else f"{x:.4g}"
    if isinstance(x, (list, tuple)):
        return ", ".join(_num(v, digits) for v in x)
    if isinstance(x, Mapping):
        return _e(json.dumps(x, default=str))
    return _e(x)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, left: int = 1,
           row_classes: Sequence[str] | None = None) -> str:
    head = "".join(f'<th class="l">{_e(h)}</th>' if i < left else f"<th>{_e(h)}</th>" for i, h in enumerate(header))
    body = []
    for k, r in enumerate(rows):
        cls = f' class="{row_classes[k]}"' if row_classes and row_classes[k] else ""
        cells = "".join(f'<td class="l">{c if isinstance(c, _Html) else _num(c)}</td>' if i < left else
                        f"<td>{c if isinstance(c, _Html) else _num(c)}</td>" for i, c in enumerate(r))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class _Html(str):
    """Markup that a table cell takes as it is."""


def _rel(path: Path, page_dir: Path) -> str:
    return Path(os.path.relpath(path, page_dir)).as_posix()


def _link(path: Path, page_dir: Path, text: str | None = None) -> str:
    return f'<a href="{_e(_rel(path, page_dir))}">{_e(text or path.name)}</a>'


def _figure(path: Path, run_dir: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    alt = path.stem.replace("_", " ")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}">'
            f"<figcaption>{_e(path.relative_to(run_dir).as_posix())}</figcaption></figure>")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        logger.warning("html report: %s unreadable (%s); left out", path, err)
        return None


# ----------------------------------------------------------------------------------------- sections


def _rankings_html(path: Path, page_dir: Path) -> str:
    doc = _read_json(path)
    if not isinstance(doc, Mapping) or "units" not in doc:
        return f'<p class="note">{_e(path.name)} is not a rankings file; left out.</p>'
    level = doc.get("ci_level", 0.95)
    top = [("model", doc.get("model")), ("metric", doc.get("metric")),
           ("higher is more similar", doc.get("higher_is_more_similar")), ("bootstrap draws", doc.get("n_bootstrap")),
           ("interval", f"{100 * float(level):.0f}% percentile"), ("k", doc.get("k")), ("seed", doc.get("seed"))]
    for key in ("resampling", "duration_s", "n_halves", "emotion"):
        if doc.get(key) is not None:
            top.append((key, doc[key]))
    parts = [f"<p>From {_link(path, page_dir)}.</p>", _table(["setting", "value"], top, left=1)]
    order = ["Utt", "Vowl", "Cons", "A", "E", "@", "i", "O", "u"]
    units = sorted(doc["units"], key=lambda u: (order.index(u) if u in order else len(order), u))
    sel_keys = list(next((doc["units"][u].get("selections") for u in units if doc["units"][u].get("selections")),
                         {}) or {})
    summary_rows, details = [], []
    for unit in units:
        e = doc["units"][unit]
        layers = list(e.get("layers", []))
        n = len(layers)
        best = (e.get("selections") or {}).get("BL", [None])[0]
        tied = e.get("tied_with_best")
        tied_layers: set[int] = set()
        if isinstance(tied, list) and tied and isinstance(tied[0], bool) and len(tied) == n:
            tied_layers = {layers[i] for i, t in enumerate(tied) if t}
        elif isinstance(tied, list):
            tied_layers = {int(x) for x in tied if isinstance(x, (int, float)) and not isinstance(x, bool)}
        flat = bool(e.get("flat"))
        summary_rows.append([unit, _Html('<span class="flag">flat</span>') if flat else "",
                             sorted(tied_layers) if tied is not None else None]
                            + [(e.get("selections") or {}).get(k) for k in sel_keys])
        extra = [k for k, v in e.items() if k not in _KNOWN_UNIT_KEYS and isinstance(v, list) and len(v) == n
                 and k != "tied_with_best"]
        header = ["layer", "score", f"{100 * float(level):.0f}% interval"] + extra + (["tied with best"] if tied
                                                                                       is not None else [])
        rows, classes = [], []
        for i, layer in enumerate(layers):
            lo, hi = (e.get("ci_low") or [None] * n)[i], (e.get("ci_high") or [None] * n)[i]
            interval = _Html(f"[{_num(lo)}, {_num(hi)}]") if lo is not None or hi is not None else None
            row = [layer, (e.get("score") or [None] * n)[i], interval] + [e[k][i] for k in extra]
            if tied is not None:
                row.append("tied" if layer in tied_layers else "")
            rows.append(row)
            classes.append("best" if layer == best else ("tied" if layer in tied_layers else ""))
        sizes = ", ".join(f"{k} {e[k]}" for k in ("n_source", "n_target", "n_utt_source", "n_utt_target") if k in e)
        others = {k: v for k, v in e.items() if k not in _KNOWN_UNIT_KEYS and k not in extra and k != "tied_with_best"
                  and not (isinstance(v, list) and len(v) == n)}
        flag = ' <span class="flag">flat: the data cannot tell the layers apart</span>' if flat else ""
        details.append(f"<details{' open' if unit == 'Vowl' else ''}><summary><b>{_e(unit)}</b>{flag}: score per "
                       f"layer ({_e(sizes)})</summary><p class=\"note\">Best layer highlighted"
                       f"{', layers tied with it shaded' if tied is not None else ''}.</p>"
                       + _table(header, rows, left=1, row_classes=classes)
                       + (_table(["field", "value"], [(k, v) for k, v in others.items()], left=1) if others else "")
                       + "</details>")
    has_flat = any("flat" in doc["units"][u] for u in units)
    has_tied = any("tied_with_best" in doc["units"][u] for u in units)
    keep_cols = [True, has_flat, has_tied] + [True] * len(sel_keys)
    header = [h for h, k in zip(["unit", "profile", "tied with best"] + sel_keys, keep_cols, strict=True) if k]
    summary_rows = [[c for c, k in zip(r, keep_cols, strict=True) if k] for r in summary_rows]
    parts.append("<h3>Layer selections per unit</h3>" + _table(header, summary_rows, left=1))
    parts += details
    return "\n".join(parts)


def _results_html(path: Path, page_dir: Path) -> str:
    doc = _read_json(path)
    if not isinstance(doc, Mapping):
        return ""
    rows = []
    for r in doc.get("strategies", []):
        uar, sd = r.get("uar_mean"), r.get("uar_std")
        rows.append([r.get("strategy"), r.get("layers"), r.get("lambda"), r.get("n_seeds"),
                     _Html(f"{_num(100 * uar if uar is not None else None, 2)} ± "
                           f"{_num(100 * sd if sd is not None else None, 2)}"),
                     _Html(" ".join(_num(100 * u, 1) for u in r.get("uar_per_seed", [])))])
    md = path.parent / "report.md"
    links = ", ".join(_link(p, page_dir) for p in (md, path.parent / "results.csv", path.parent / "coral.csv")
                      if p.is_file())
    return (f"<p>Target-test UAR (%), mean ± std over seeds. Files: {links}.</p>"
            + _table(["strategy", "layers", "CORAL λ", "seeds", "target UAR", "per seed"], rows, left=1))


def _acoustics_html(folder: Path, page_dir: Path) -> str:
    from analysis.acoustics import class_means, emotion_summary, read_acoustics

    table = read_acoustics(folder)
    cols = ("F1_50", "F2_50", "F3_50", "duration", "f0_mean", "intensity_mean")
    means = class_means(table, columns=cols).to_pylist()
    links = [_link(folder / name, page_dir) for name in ("acoustics.parquet", "acoustics.csv", "ceilings.json",
                                                               "emotion_by_class.csv")
             if (folder / name).is_file()]
    parts = [f"<p>{table.num_rows} vowel segments ({', '.join(links)}). Midpoint formants from Praat's Burg "
             "analysis (parselmouth); means over the segments measured.</p>"]
    parts.append(_table(["language", "class", "n", "F1 (Hz)", "F2 (Hz)", "F3 (Hz)", "duration (ms)", "F0 (Hz)",
                         "intensity (dB)"],
                        [[m["language"], m["unit_class"], m["n"], m["F1_50"], m["F2_50"], m["F3_50"],
                          1000 * m["duration"], m["f0_mean"], m["intensity_mean"]] for m in means], left=2))
    cells = emotion_summary(table, by_class=False)
    if cells:
        parts.append("<h3>Emotion (all vowels; mean of speaker means, speaker range in brackets)</h3>")
        parts.append(_table(["language", "emotion", "tokens", "speakers", "F0 (Hz)", "intensity (dB)",
                             "duration (ms)"],
                            [[c.language, c.emotion, c.n_tokens, c.n_speakers,
                              _Html(f"{_num(c.f0, 1)} [{_num(c.f0_range[0], 1)}, {_num(c.f0_range[1], 1)}]"),
                              _Html(f"{_num(c.intensity, 1)} [{_num(c.intensity_range[0], 1)}, "
                                    f"{_num(c.intensity_range[1], 1)}]"),
                              _Html(f"{_num(1000 * c.duration, 0)} [{_num(1000 * c.duration_range[0], 0)}, "
                                    f"{_num(1000 * c.duration_range[1], 0)}]")] for c in cells], left=2))
    report = _read_json(folder / "report.json") if (folder / "report.json").is_file() else None
    if isinstance(report, Mapping):
        counts = {k: v for k, v in report.get("counts", {}).items() if v}
        parts.append(f'<p class="note">Measurement status: {_e(", ".join(f"{k} {v}" for k, v in counts.items()))}'
                     f" (reasons per segment in {_link(folder / 'report.json', page_dir)}).</p>")
    return "\n".join(parts)


def _geometry_html(folder: Path, page_dir: Path) -> str:
    doc = _read_json(folder / "geometry.json")
    if not isinstance(doc, Mapping):
        return ""
    probe = doc.get("probe", [])
    pairs = sorted({(r["train_language"], r["test_language"]) for r in probe}, key=lambda p: (p[0] != p[1], p))
    layers = sorted({r["layer"] for r in probe})
    by = {(r["layer"], r["train_language"], r["test_language"]): r for r in probe}
    rows = []
    for layer in layers:
        row: list[Any] = [layer]
        for a, b in pairs:
            r = by.get((layer, a, b))
            row.append(_Html(f"{_num(r['balanced_accuracy'], 2)} [{_num(r['fold_min'], 2)}, {_num(r['fold_max'], 2)}]")
                       if r else None)
        row.append(min((by[k]["chance"] for k in by if k[0] == layer), default=None))
        rows.append(row)
    return (f"<p>Linear vowel-class probe, balanced accuracy per layer with the range over folds (within a "
            f"language: folds never share a speaker) or over test speakers (across languages: trained on one, "
            f"tested on the other). {_link(folder / 'geometry.json', page_dir)}, "
            f"{_link(folder / 'probe.parquet', page_dir)}.</p>"
            + "".join(f'<p class="note"><span class="flag">note</span> {_e(n)}</p>' for n in doc.get("notes", []))
            + _table(["layer"] + [f"{a} → {b}" for a, b in pairs] + ["chance"], rows, left=1))


def _vowel_map_html(folder: Path, page_dir: Path) -> str:
    from analysis.vowel_map import read_diagonal_advantage, read_vowel_map

    try:
        cells, adv = read_vowel_map(folder).to_pylist(), read_diagonal_advantage(folder).to_pylist()
    except Exception as err:  # noqa: BLE001 -- an unreadable table: say so and go on
        return f'<p class="note">vowel map unreadable: {_e(err)}</p>'
    summary = _read_json(folder / "vowel_map.json") if (folder / "vowel_map.json").is_file() else None
    summary = summary if isinstance(summary, Mapping) else {}
    files = ", ".join(_link(folder / n, page_dir) for n in ("vowel_map.parquet", "diagonal_advantage.parquet",
                                                               "vowel_map.json") if (folder / n).is_file())
    parts = ["<h3>Cross-language vowel map</h3>",
             "<p>Per layer, the similarity of each source vowel class with each target vowel class, and the "
             "<b>diagonal advantage</b>: mean same-class minus mean different-class similarity (for distances the "
             "other way round), so that a positive value means a vowel class is closest to the same class of the "
             "other language. Where its interval contains 0 the layer shows no shared vowel identity the data can "
             f"vouch for. Files: {files}.</p>"]
    for metric in dict.fromkeys(r["metric"] for r in adv):
        info = summary.get(metric, {}) if isinstance(summary.get(metric), Mapping) else {}
        rows_m = sorted((r for r in adv if r["metric"] == metric), key=lambda r: r["layer"])
        peak = next((r["layer"] for r in rows_m if r["is_peak"]), None)
        res = info.get("resampling") or {}
        level = info.get("ci_level")
        head = [("metric", metric), ("peak layer", peak), ("tied with the peak", info.get("tied_with_peak")),
                ("flat", info.get("flat")), ("classes", " ".join(info.get("classes", []))),
                ("resampling", f"{res.get('unit')} ({(res.get('clusters') or {}).get('source')} / "
                               f"{(res.get('clusters') or {}).get('target')} clusters)" if res else None),
                ("bootstrap draws", info.get("n_bootstrap")),
                ("interval", f"{100 * float(level):.0f}%, re-centred percentile" if level else None)]
        parts.append(_table(["setting", "value"], [h for h in head if h[1] is not None], left=1))
        if info.get("skipped"):
            parts.append('<p class="note">Left out: ' + _e("; ".join(f"{k}: {v}" for k, v in info["skipped"].items()))
                         + "</p>")
        if info.get("flat"):
            parts.append('<p><span class="flag">flat</span> the data cannot tell which layer shares vowel identity '
                         "most.</p>")
        table_rows, classes = [], []
        for r in rows_m:
            interval = _Html(f"[{_num(r['ci_low'])}, {_num(r['ci_high'])}]") if r["ci_low"] is not None else None
            table_rows.append([r["layer"], r["advantage"], interval, r["mean_same_class"], r["mean_different_class"],
                               "peak" if r["is_peak"] else ("tied" if r["tied_with_peak"] else "")])
            classes.append("best" if r["is_peak"] else ("tied" if r["tied_with_peak"] else ""))
        parts.append(_table(["layer", "diagonal advantage", "interval", "mean same class", "mean different class",
                             "vs the peak"], table_rows, left=1, row_classes=classes))
        if peak is None:
            continue
        grid = {(r["source_class"], r["target_class"]): r for r in cells if r["metric"] == metric
                and r["layer"] == peak}
        order = list(dict.fromkeys(r["source_class"] for r in cells))
        src = next((r["source_language"] for r in cells if r["source_language"]), "source")
        tgt = next((r["target_language"] for r in cells if r["target_language"]), "target")
        matrix = []
        for a in order:
            row: list[Any] = [a]
            for b in order:
                c = grid.get((a, b))
                if c is None or c["score"] is None:
                    row.append(None)
                    continue
                text = f"{_num(c['score'])}" + (f" [{_num(c['ci_low'])}, {_num(c['ci_high'])}]"
                                                if c["ci_low"] is not None else "")
                row.append(_Html(f"<b>{_e(text)}</b>" if a == b else _e(text)))
            matrix.append(row)
        parts.append(f"<p>The map at the peak layer {peak} (rows: {_e(src)} classes, columns: {_e(tgt)} classes; "
                     "same class in bold):</p>" + _table([f"{src} \\ {tgt}"] + order, matrix, left=1))
    return "\n".join(parts)


def _parquet_html(path: Path, page_dir: Path) -> str:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # noqa: BLE001 -- any unreadable file: say so and go on
        return f'<p class="note">{_e(path.name)} unreadable: {_e(err)}</p>'
    shown = table.slice(0, MAX_TABLE_ROWS)
    note = "" if table.num_rows <= MAX_TABLE_ROWS else f" (first {MAX_TABLE_ROWS} of {table.num_rows} rows)"
    rows = [[r[c] for c in shown.column_names] for r in shown.to_pylist()]
    return (f"<details><summary>{_e(path.name)}{_e(note)}</summary><p>{_link(path, page_dir)}</p>"
            + _table(shown.column_names, rows, left=0) + "</details>")


def _pre(path: Path, page_dir: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return ""
    return f"<details><summary>{_e(path.name)}</summary><p>{_link(path, page_dir)}</p><pre>{_e(text)}</pre></details>"


# ------------------------------------------------------------------------------------------ the page


def _pngs(folder: Path, run_dir: Path, shown: set[Path]) -> list[Path]:
    out = []
    for p in sorted(folder.rglob("*.png")):
        rel = p.relative_to(run_dir).parts
        if any(part in _SKIP_DIRS for part in rel[:-1]) or p in shown:
            continue
        out.append(p)
    return out


def write_html_report(run_dir: str | Path, *, out_dir: str | Path | None = None,
                      title: str | None = None) -> HtmlReport:
    """Write ``index.html`` for ``run_dir`` (default into ``run_dir/report``); see the module docstring.

    Raises
    ------
    TrainError
        If ``run_dir`` is not a folder, or holds nothing the report can show.
    phonalign.errors.OutputFolderError
        The page's folder holds files lam did not write or another step's output;
        :class:`~phonalign.errors.OutputLockedError` while another process writes it.
    """
    run = Path(run_dir).resolve()
    if not run.is_dir():
        raise TrainError("run folder not found", path=run, hint="give the output folder of `lam run`/`lam demo` "
                         "(or of `lam similarity`, `lam acoustics`, `lam geometry`)")
    page_dir = Path(out_dir).resolve() if out_dir else run / "report"
    page = page_dir / "index.html"
    doc, shown, anchors = _render(run, page_dir, title=title)
    # the page's folder is locked while written (one writer at a time, no foreign files); in a
    # `lam run` folder it is the pipeline's report/ (report.md, results.*), which it may share
    with output_folder(page_dir, step="report", rules=REPORT_FOLDER):
        atomic_write_text(page, doc)
    logger.info("html report: %s (%d bytes, %d figures)", page, len(doc.encode()), len(shown))
    return HtmlReport(page, len(doc.encode("utf-8")), tuple(sorted(shown)), anchors)


def _render(run: Path, page_dir: Path, *, title: str | None) -> tuple[str, set[Path], tuple[str, ...]]:
    """The page's text, the figures it embeds and its section anchors (nothing is written)."""
    shown: set[Path] = set()
    body: list[str] = []
    nav: list[tuple[str, str]] = []

    def section(anchor: str, heading: str, html_parts: list[str]) -> None:
        if any(html_parts):
            nav.append((anchor, heading))
            body.append(f'<h2 id="{anchor}">{_e(heading)}</h2>' + "\n".join(p for p in html_parts if p))

    for folder_name, heading in SECTIONS:
        folder = run / folder_name
        if folder_name == "similarity" and not folder.is_dir() and (run / "rankings.json").is_file():
            folder = run
        if not folder.is_dir():
            continue
        parts: list[str] = []
        rankings = folder / "rankings.json"
        if rankings.is_file():
            parts.append(_rankings_html(rankings, page_dir))
        if folder_name == "report" and (folder / "results.json").is_file():
            parts.append(_results_html(folder / "results.json", page_dir))
        if (folder / "acoustics.parquet").is_file():
            parts.append(_acoustics_html(folder, page_dir))
        if (folder / "geometry.json").is_file():
            parts.append(_geometry_html(folder, page_dir))
        if (folder / "vowel_map.parquet").is_file():
            parts.append(_vowel_map_html(folder, page_dir))
        known = {"acoustics.parquet", "projection.parquet", "probe.parquet", "scores.parquet", "vowel_map.parquet",
                 "diagonal_advantage.parquet"}
        for pq_path in sorted(folder.glob("*.parquet")):
            if pq_path.name not in known:
                parts.append(f"<h3>{_e(pq_path.stem.replace('_', ' '))}</h3>" + _parquet_html(pq_path, page_dir))
        if folder == run:  # a bare similarity folder: its figures only, not the whole tree
            figs = sorted((run / "figures").glob("*.png")) if (run / "figures").is_dir() else []
        else:
            figs = _pngs(folder, run, shown)
        shown.update(figs)
        parts += [_figure(p, run) for p in figs]
        section(folder_name, heading, parts)
    # everything else: figures elsewhere in the run folder, acoustics / geometry folders by other names
    for sub in sorted(p for p in run.iterdir() if p.is_dir() and p.name not in dict(SECTIONS) and
                      p.name not in _SKIP_DIRS and p != page_dir):
        parts = []
        if (sub / "acoustics.parquet").is_file():
            parts.append(_acoustics_html(sub, page_dir))
        if (sub / "geometry.json").is_file():
            parts.append(_geometry_html(sub, page_dir))
        if (sub / "rankings.json").is_file():
            parts.append(_rankings_html(sub / "rankings.json", page_dir))
        figs = _pngs(sub, run, shown)
        shown.update(figs)
        parts += [_figure(p, run) for p in figs]
        section(sub.name, sub.name, parts)
    if run != page_dir:
        top_figs = [p for p in sorted(run.glob("*.png")) if p not in shown]
        if (run / "acoustics.parquet").is_file():
            body.insert(0, _acoustics_html(run, page_dir))
        if (run / "geometry.json").is_file():
            body.insert(0, _geometry_html(run, page_dir))
        if (run / "figures").is_dir() and not any(f.parent == run / "figures" for f in shown):
            top_figs += sorted((run / "figures").glob("*.png"))
        shown.update(top_figs)
        if top_figs:
            section("figures", "Figures", [_figure(p, run) for p in top_figs])
    if not body:
        raise TrainError("nothing to report in this folder", path=run,
                         hint="give a folder written by lam run, lam demo, lam similarity, lam acoustics or "
                              "lam geometry")
    prov = [_pre(p, page_dir) for p in (run / "config.yaml", run / "versions.json") if p.is_file()]
    steps = sorted((run / "steps").glob("*.json")) if (run / "steps").is_dir() else []
    if steps:
        rows = []
        for p in steps:
            rec = _read_json(p) or {}
            rows.append([p.stem, rec.get("seconds"), rec.get("finished")])
        prov.append(_table(["step", "seconds", "finished"], rows, left=1))
    section("provenance", "Configuration and versions", prov)
    heading = title or f"lam report: {run.name}"
    when = datetime.now(UTC).isoformat(timespec="seconds")
    nav_html = "".join(f'<a href="#{a}">{_e(h)}</a>' for a, h in nav)
    doc = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
           f"<title>{_e(heading)}</title><style>{_CSS}</style></head><body>"
           f"<h1>{_e(heading)}</h1><p class=\"note\">Written {when} by lam-toolkit {_e(__version__)} from "
           f"<code>{_e(run)}</code>. Self-contained: figures are embedded; links open files of the run folder.</p>"
           f"<nav>{nav_html}</nav>"
           + "\n".join(body) + "</body></html>\n")
    return doc, shown, tuple(a for a, _ in nav)
