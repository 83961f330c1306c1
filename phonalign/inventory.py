"""What an aligned corpus contains: counts per unit class and per phone, for each language.

:func:`corpus_inventory` reads ``OUT/segments.parquet`` and ``OUT/utterances.parquet`` (written by
:func:`phonalign.align.run.align_corpus`) and counts with pyarrow group-bys, so it stays fast on
10^7 segments. ``lam inventory OUT`` prints it (rich tables, or ``--json``).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from .errors import PhonalignError
from .records import UNIT_CLASSES
from .segments import read_table

__all__ = ["corpus_inventory", "inventory_from_tables"]


def inventory_from_tables(segments: pa.Table, utterances: pa.Table) -> dict:
    """Count segments per language, unit class and phone.

    Parameters
    ----------
    segments : pa.Table
        :data:`~phonalign.records.SEGMENT_SCHEMA` rows.
    utterances : pa.Table
        :data:`~phonalign.records.UTTERANCE_SCHEMA` rows (for each utterance's language).

    Returns
    -------
    dict
        ``{language: {"utterances": n, "segments": n, "phone_sets": [...],
        "classes": {class: count} (every class of UNIT_CLASSES, zeros included),
        "phones": [{"phone", "unit_class", "count"}, ...] (most frequent first),
        "unknown": {label: count}, "excluded": {phone: count}}}`` (``excluded``: vowels a class
        option such as ``vowel_segments="simple"`` left out); segments of utterances missing from ``utterances`` are
        counted under the language ``"?"``.
    """
    langs = utterances.select(["utt_id", "language"])
    seg = segments.select(["utt_id", "label", "phone", "unit_class", "phone_set"])
    joined = seg.join(langs, keys="utt_id", join_type="left outer")
    joined = joined.set_column(joined.schema.get_field_index("language"), "language",
                               pc.fill_null(joined.column("language"), "?"))
    out: dict[str, dict] = {}
    n_utts = {r["language"]: r["utt_id_count"]
              for r in langs.group_by("language").aggregate([("utt_id", "count")]).to_pylist()}
    for language in sorted(set(n_utts) | set(joined.column("language").unique().to_pylist())):
        part = joined.filter(pc.equal(joined.column("language"), language))
        classes = {c: 0 for c in UNIT_CLASSES}
        for r in part.group_by("unit_class").aggregate([("utt_id", "count")]).to_pylist():
            classes[r["unit_class"]] = r["utt_id_count"]
        phones = part.group_by(["phone", "unit_class"]).aggregate([("utt_id", "count")])
        phones = phones.sort_by([("utt_id_count", "descending"), ("phone", "ascending")]).to_pylist()
        excluded = part.filter(pc.equal(part.column("unit_class"), "excluded"))
        excluded = excluded.group_by("phone").aggregate([("utt_id", "count")])
        excluded = excluded.sort_by([("utt_id_count", "descending"), ("phone", "ascending")]).to_pylist()
        unknown = part.filter(pc.equal(part.column("unit_class"), "unknown"))
        unknown = unknown.group_by("label").aggregate([("utt_id", "count")])
        unknown = unknown.sort_by([("utt_id_count", "descending"), ("label", "ascending")]).to_pylist()
        out[language] = {
            "utterances": n_utts.get(language, 0),
            "segments": part.num_rows,
            "phone_sets": sorted(x for x in part.column("phone_set").unique().to_pylist() if x),
            "classes": classes,
            "phones": [{"phone": r["phone"], "unit_class": r["unit_class"], "count": r["utt_id_count"]}
                       for r in phones],
            "unknown": {r["label"]: r["utt_id_count"] for r in unknown},
            # vowels a named class option left out (vowel_segments="simple", u_umlaut="exclude", ...)
            "excluded": {r["phone"]: r["utt_id_count"] for r in excluded},
        }
    return out


def corpus_inventory(out_dir: str | Path) -> dict:
    """:func:`inventory_from_tables` of an aligned-corpus directory (``lam align``'s output).

    Raises
    ------
    PhonalignError
        If ``out_dir`` has no ``segments.parquet``/``utterances.parquet``.
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise PhonalignError("not a directory", path=out, hint="give the OUT folder of `lam align`")
    for name in ("segments.parquet", "utterances.parquet"):
        if not (out / name).exists():
            raise PhonalignError(f"{name} is missing: this is not an aligned-corpus folder", path=out,
                                 hint="run `lam align CORPUS OUT` first (an interrupted run is finished "
                                 "by running it again)")
    return inventory_from_tables(read_table(out / "segments.parquet"), read_table(out / "utterances.parquet"))
