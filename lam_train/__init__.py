"""lam_train: emotion classifiers with CORAL layer anchoring, evaluation, the pipeline runner and
the ``lam`` command. Top of the import chain: may import ``analysis`` and ``phonalign``."""

from phonalign import __version__

__all__ = ["__version__"]
