"""lam_train: emotion classifiers with CORAL layer anchoring, evaluation, the pipeline runner and
the ``lam`` command. Top of the import chain: may import ``analysis`` and ``phonalign``.

Its entry points are re-exported here and imported on first use, so ``import lam_train`` does not
import torch until a name that needs it is used:

* :func:`run_pipeline`, :func:`demo_config`, :func:`run_demo` (``lam_train.pipeline``;
  ``lam run``, ``lam demo``): align -> features -> similarity -> training -> report;
* :class:`RunConfig`, :func:`load_config` (``lam_train.config``): the run's settings, from YAML;
* :func:`run_training` (``lam_train.train``; ``lam train``);
* :func:`coral_loss` (``lam_train.coral``): Deep CORAL, in float32;
* :func:`write_report` (``lam_train.report``), :func:`write_html_report` (``lam_train.html_report``;
  ``lam report``): the markdown and the self-contained HTML report.

Examples
--------
>>> import tempfile
>>> import torch
>>> import lam_train
>>> cfg = lam_train.demo_config(out=tempfile.mkdtemp(), seeds=1)
>>> cfg.seeds
(0,)
>>> x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
>>> float(lam_train.coral_loss(x, x)), float(lam_train.coral_loss(x, 3 * x)) > 0
(0.0, True)
>>> result = lam_train.run_pipeline(cfg, progress=False)  # the whole demo, minutes  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from phonalign import __version__

# name -> module that defines it (imported on first access, PEP 562)
_ENTRY_POINTS = {
    "run_pipeline": "lam_train.pipeline",
    "demo_config": "lam_train.pipeline",
    "run_demo": "lam_train.pipeline",
    "RunConfig": "lam_train.config",
    "load_config": "lam_train.config",
    "run_training": "lam_train.train",
    "coral_loss": "lam_train.coral",
    "write_report": "lam_train.report",
    "write_html_report": "lam_train.html_report",
}

__all__ = ["__version__", "run_pipeline", "demo_config", "run_demo", "RunConfig", "load_config", "run_training",
           "coral_loss", "write_report", "write_html_report"]

if TYPE_CHECKING:
    from .config import RunConfig, load_config
    from .coral import coral_loss
    from .html_report import write_html_report
    from .pipeline import demo_config, run_demo, run_pipeline
    from .report import write_report
    from .train import run_training


def __getattr__(name: str) -> Any:
    if name in _ENTRY_POINTS:
        value = getattr(importlib.import_module(_ENTRY_POINTS[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'lam_train' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
