"""Names and defaults of the ``phonalign`` layer, written once.

The library signatures, the run configuration (:mod:`lam_train.config`) and the ``lam`` command
line (:mod:`lam_train.commands`) read them from here, and ``tests/test_defaults.py`` checks that
they agree. Plain Python only (no third-party import), so that the command line can read them
while it starts.
"""

from __future__ import annotations

__all__ = ["DEMO_CORPUS", "EMOTIONS", "LANGUAGES", "RETIRED_DEMO_TOKENS", "UNIT_CLASSES", "VOWEL_CLASSES"]

#: The four emotion classes of the paper, in this order everywhere (label index = position).
EMOTIONS: tuple[str, ...] = ("Neutral", "Happiness", "Anger", "Sadness")

#: The six shared vowel classes (paper's labels) and the other unit classes. ``excluded`` appears
#: only when a named option of PHONESETS.md removes a phone from analysis (e.g. ``u_umlaut=
#: "exclude"``): such a phone is neither a vowel nor a consonant nor unknown.
VOWEL_CLASSES: tuple[str, ...] = ("A", "E", "@", "i", "O", "u")
UNIT_CLASSES: tuple[str, ...] = VOWEL_CLASSES + ("consonant", "silence", "unknown", "excluded")

#: Language codes used in the ``language`` column.
LANGUAGES: tuple[str, ...] = ("en", "zh")

#: The name of the bundled demo corpus wherever a corpus path is expected (``lam align lam-demo``,
#: ``corpus.path: lam-demo`` in a run config, ``read_corpus("lam-demo")``); it is also the corpus
#: preset of its manifest. A folder that happens to have this name is written ``./lam-demo``.
DEMO_CORPUS = "lam-demo"
#: Earlier names of the demo corpus, refused with a hint that names :data:`DEMO_CORPUS`.
RETIRED_DEMO_TOKENS: tuple[str, ...] = ("@demo",)
