"""Former import path of :mod:`hybrid.core.store`, kept for users' scripts: the same module."""

import sys

from hybrid.core.store import *  # noqa: F403  (names for static tools; the alias below is the module)

sys.modules[__name__] = sys.modules["hybrid.core.store"]
