"""phonalign: corpora, TextGrids, phone sets and the six shared vowel classes, aligners.

The bottom room of the toolkit: it imports nothing from ``analysis`` or ``lam_train``.
"""

__version__ = "0.1.0"
