"""The pipelines the command line calls: campaign, solve, coupler, infer.

Each is a function over the Python API (:mod:`hybrid.core`, :mod:`hybrid.fem`,
:mod:`hybrid.surrogate`, :mod:`hybrid.inference`); nothing below imports from here.
"""
