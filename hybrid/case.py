"""Former import path of :mod:`hybrid.core.case`, kept for users' scripts: the same module."""

import sys

from hybrid.core.case import *  # noqa: F403  (names for static tools; the alias below is the module)

sys.modules[__name__] = sys.modules["hybrid.core.case"]
