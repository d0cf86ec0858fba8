"""The ``hybrid`` command line: one typer app, a thin layer over the Python API.

User errors (:class:`hybrid.errors.HybridError`) print one line ``hybrid: error: …`` on
stderr (from rank 0 only under MPI) and exit with code 2; no traceback. Exit code 3 means
partial success (a campaign with failed samples). The commands live in one module per
group of verbs (:mod:`hybrid.cli.fem`, :mod:`~hybrid.cli.surrogate`, :mod:`~hybrid.cli.infer`,
:mod:`~hybrid.cli.serve`), which import :mod:`hybrid.cli.common` and never each other.
"""

from __future__ import annotations

import sys

import typer  # noqa: E402

from hybrid.cli import (  # noqa: E402
    common,  # first: thread limits under mpirun
    fem,
    infer,
    serve,
    surrogate,
)
from hybrid.errors import HybridError  # noqa: E402

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="hybrid: FEM campaigns, neural reduced-order surrogates and FEM-confirmed inference.",
)
app.command("campaign")(fem.campaign)
app.command("solve")(fem.solve)
app.command("info")(fem.info)
app.command("train")(surrogate.train_command)
app.command("query")(surrogate.query_command)
app.command("synth")(infer.synth_command)
app.command("infer")(infer.infer_command)
app.command("serve")(serve.serve_command)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning user errors into one line and exit code 2."""
    try:
        app(args=argv, standalone_mode=True)
    except HybridError as exc:
        if common.world_rank() == 0:
            print(f"hybrid: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except OSError as exc:   # read-only location, full disk, quota: the environment's fault
        where = exc.filename or "an output file"
        common.fatal(f"cannot write {where}: {exc.strerror or exc}")
        return 2
    except MemoryError:
        common.fatal("out of memory (a smaller --samples, mesh or batch may fit)")
        return 2
    except SystemExit as exc:  # click/typer: usage errors (2), typer.Exit(code)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception:
        common.abort_world()
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
