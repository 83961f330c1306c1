"""Time loading a CTranslate2 Whisper: first conversion, cached load, and plain ``from_pretrained``.

Usage::

    .venv/bin/python benchmarks/bench_ct2_load.py                 # the packaged whisper-base
    .venv/bin/python benchmarks/bench_ct2_load.py --source DIR    # any faster-whisper directory

Steps, all in this process on the same source:

1. first conversion into an empty temporary cache (parse + map + write safetensors);
2. the full SHA-256 of the source (what a load costs without the stat memo);
3. cached loads by the toolkit (:func:`analysis.ct2.load_ct2_whisper`), ``--repeats`` times;
4. the baseline: ``WhisperForConditionalGeneration.from_pretrained`` of the same cached directory,
   ``--repeats`` times.

The first call of each loader in a process is reported apart from the median of the repeats,
because transformers' ``from_pretrained`` compiles its key-renaming regular expressions once per
process (about 1 s), which a notebook or a batch job pays once. The last line is the ratio of the
median times, toolkit cached load / ``from_pretrained`` (below 1 = the toolkit is faster).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def _time(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path,
                        help="CTranslate2 Whisper directory (default: the packaged whisper-base)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (loading is mostly I/O)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from transformers import WhisperForConditionalGeneration

    from analysis import ct2
    from analysis.model_sources import ct2_package_source

    def hf_load(directory: Path) -> WhisperForConditionalGeneration:
        return WhisperForConditionalGeneration.from_pretrained(directory, local_files_only=True)

    source = ct2.CT2Source.from_directory(args.source) if args.source else ct2_package_source("openai/whisper-base")
    size = sum(p.stat().st_size for p in source.model_files)
    print(f"source: {', '.join(str(p) for p in source.model_files)} ({size / 1e6:.1f} MB)")

    with tempfile.TemporaryDirectory(prefix="bench-ct2-") as tmp:
        cache = Path(tmp) / "cache"
        t_convert, directory = _time(lambda: ct2.cached_conversion(source, cache_dir=cache))
        print(f"first conversion (hash + parse + map + write): {t_convert:.2f} s -> {directory}")
        t_hash, _ = _time(lambda: ct2.source_key(source))
        print(f"full SHA-256 of the source: {t_hash:.2f} s ({size / t_hash / 1e6:.0f} MB/s); "
              f"with the stat memo: {_time(lambda: ct2.cached_key(source, cache_dir=cache))[0] * 1e3:.1f} ms")

        first_ours, model = _time(lambda: ct2.load_ct2_whisper(source, cache_dir=cache))
        first_base, ref = _time(lambda: hf_load(directory))
        pairs = zip(model.state_dict().values(), ref.state_dict().values(), strict=True)
        same = all(torch.equal(a, b) for a, b in pairs)
        print(f"first call in process: toolkit cached load {first_ours:.2f} s, from_pretrained {first_base:.2f} s; "
              f"identical tensors: {same}")
        del model, ref
        ours, base = [], []
        for _ in range(args.repeats):  # interleaved so that both see the same machine load
            ours.append(_time(lambda: ct2.load_ct2_whisper(source, cache_dir=cache))[0])
            base.append(_time(lambda: hf_load(directory))[0])
        m_ours, m_base = statistics.median(ours), statistics.median(base)
        print(f"median of {args.repeats}: toolkit cached load {m_ours:.3f} s, from_pretrained {m_base:.3f} s")
        print(f"first conversion / cached load: {t_convert / m_ours:.1f}x")
        print(f"ratio cached load / from_pretrained (median): {m_ours / m_base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
