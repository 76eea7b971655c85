"""`python -m mirror`, and run(): the command line with its stop signals caught before any import."""
from .errors import Terminated, catch_stop_signals


def run() -> None:
    """The command line's entry: a stop signal while typer and the rest are imported ends the
    run cleanly too; the `mirror` script enters here as well."""
    catch_stop_signals()
    try:
        from .ui.cli import main

        main()
    except Terminated as stop:
        from .ui.session import stopped_early

        raise SystemExit(stopped_early(stop)) from None


if __name__ == "__main__":
    run()
