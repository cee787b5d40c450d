"""The optional C extension, ``_speedups.c``: its module, or ``None``.

``setup.py`` skips the extension where it cannot be compiled;
``GEVENTWS_NO_SPEEDUPS=1`` ignores it.  Each user (:mod:`.masking`,
:mod:`.frames`, :mod:`.reader`) keeps a pure Python fallback, which the tests
run too.
"""

from __future__ import annotations

import os
from types import ModuleType


def _load() -> ModuleType | None:
    if os.environ.get("GEVENTWS_NO_SPEEDUPS"):
        return None
    try:
        from . import _speedups
    except ImportError:  # pragma: no cover - depends on the build
        return None
    return _speedups


speedups = _load()
