"""Former import path of :mod:`hybrid.workflows.infer`, kept for users' scripts: the same module."""

import sys

from hybrid.workflows.infer import *  # noqa: F403  (names for static tools; the alias below is the module)

sys.modules[__name__] = sys.modules["hybrid.workflows.infer"]
