"""analysis: speech-model layers, frame<->time mapping, pooling, the feature store, cross-language
similarity, rankings and plots. May import ``phonalign``; never ``lam_train``."""

from phonalign import __version__

__all__ = ["__version__"]
