"""Entry point of the ``slimkit`` command.

User mistakes (``SlimkitError``) print one line to stderr and exit 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import sys

import typer

from slimkit._version import __version__
from slimkit.cli import (
    demo_cmd,
    deploy_cmd,
    distill_cmd,
    models_cmd,
    pipeline_cmd,
    profile_cmd,
    prune_cmd,
    quantize_cmd,
    restructure_cmd,
    train_cmd,
)
from slimkit.errors import EXIT_USER_ERROR, SlimkitError

app = typer.Typer(
    name="slimkit",
    help="Design, train, compress and deploy lightweight neural networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"slimkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
) -> None:
    """Design, train, compress and deploy lightweight neural networks."""
    _state["debug"] = debug


models_cmd.register(app)
profile_cmd.register(app)
train_cmd.register(app)
prune_cmd.register(app)
deploy_cmd.register(app)
quantize_cmd.register(app)
distill_cmd.register(app)
restructure_cmd.register(app)
pipeline_cmd.register(app)
demo_cmd.register(app)


EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


def _interrupted(exc: BaseException) -> bool:
    """Whether a KeyboardInterrupt lies in the chain of exceptions behind ``exc``."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, KeyboardInterrupt):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (0 ok, 2 user error or usage error, 130 Ctrl-C)."""
    args = list(sys.argv[1:] if argv is None else argv)
    _state["debug"] = "--debug" in args
    try:
        app(args=args, prog_name="slimkit")  # standalone mode: raises SystemExit
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code == 1 and _interrupted(exc):
            code = EXIT_INTERRUPTED  # click turns Ctrl-C into "Aborted!" and exit 1
    except SlimkitError as exc:
        if _state["debug"]:
            raise
        print(f"slimkit: error: {exc}", file=sys.stderr)
        code = EXIT_USER_ERROR
    else:
        code = 0
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
