"""Hybrid models as UM-Bridge models: ``hybrid serve`` for tinyDA, QMCPy, MUQ and friends.

UM-Bridge (https://um-bridge-benchmarks.readthedocs.io) is a small HTTP protocol: a model is
a map F from a list of input vectors to a list of output vectors, with optional derivatives.
Two hybrid models speak it:

* :class:`SurrogateModel` (name ``"surrogate"``): one input μ ∈ ℝ^P; outputs
  ``[observations, qoi]`` (only ``[qoi]`` when the surrogate has no observations); gradient
  (vector–Jacobian product) and Jacobian action through torch autograd; config
  ``{"extrapolate": true}`` allows μ outside the training box.
* :class:`FEMModel` (name ``"fem"``): the same input and outputs from a DOLFINx solve; a failed
  solve is an error response (type ``ModelError``), not a crash; gradient and Jacobian
  action of both outputs by the tangent-linear model (``jacobian``, ``qoi_jacobian``).
* their single-output views (:mod:`hybrid.serve.views`, ``model.views()``):
  ``NAME-observations``, ``NAME-qoi`` and ``NAME-loglik`` (a Gaussian log-likelihood with
  data and σ from the config; ``{"outside": "-inf"}`` answers −inf outside the box), for
  clients that take one output (tinyDA, ``umbridge.emcee``).

:func:`serve` runs a small aiohttp app implementing the protocol (umbridge 1.2.10's
``serve_models`` binds every interface and has no ``host`` argument), bound to loopback by
default. Bad requests (malformed JSON, wrong sizes, NaN, μ out of bounds, unknown keys) get
the protocol's error object ``{"error": {"type": …, "message": …}}`` with HTTP 400 and the
server keeps serving.

Under MPI (FEM model on a communicator of several ranks) rank 0 serves HTTP; each request's
parameters go to every rank through :class:`WorkChannel` and all ranks join the solve;
the other ranks wait in :meth:`FEMModel.work_loop` until rank 0 posts a stop.

Modules: :mod:`~hybrid.serve.inputs` (request checks), :mod:`~hybrid.serve.models`,
:mod:`~hybrid.serve.views`, :mod:`~hybrid.serve.channel` (MPI), :mod:`~hybrid.serve.app`
(HTTP). Importing the package imports neither DOLFINx, mpi4py nor torch; :class:`FEMModel`
imports :mod:`hybrid.fem.model` when it is built, :class:`SurrogateModel` torch (with
gradients).
"""

from __future__ import annotations

from hybrid.serve.app import PROTOCOL_VERSION, make_app, serve
from hybrid.serve.channel import WorkChannel
from hybrid.serve.inputs import RequestError, ServeError
from hybrid.serve.models import FEMModel, SurrogateModel
from hybrid.serve.views import LogLikelihoodView, OutputView

__all__ = ["PROTOCOL_VERSION", "FEMModel", "LogLikelihoodView", "OutputView", "RequestError",
           "ServeError", "SurrogateModel", "WorkChannel", "make_app", "serve"]
