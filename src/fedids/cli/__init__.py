"""The `fedids` command line. Each command is a thin shell over library functions; each command group
lives in its own module of this package and registers itself on :data:`app` when imported.

Bad input (missing file, malformed CSV, corrupt model) prints one ``error:`` line on stderr and exits
with code 2, without a traceback.
"""

from __future__ import annotations

import sys

# Importing a command module registers its commands on `app`.
from fedids.cli import audit as _audit  # noqa: F401,E402
from fedids.cli import data as _data  # noqa: F401,E402
from fedids.cli import demo as _demo  # noqa: F401,E402
from fedids.cli import deploy as _deploy  # noqa: F401,E402
from fedids.cli import detect as _detect  # noqa: F401,E402
from fedids.cli import experiment as _experiment  # noqa: F401,E402
from fedids.cli import export as _export  # noqa: F401,E402
from fedids.cli import federate as _federate  # noqa: F401,E402
from fedids.cli import keys as _keys  # noqa: F401,E402
from fedids.cli import train as _train  # noqa: F401,E402
from fedids.cli.common import app
from fedids.console import err
from fedids.errors import FedidsError

__all__ = ["app", "main"]


def _fail(message: str, code: int = 2) -> None:
    """One ``error:`` line on stderr (the message printed verbatim, never read as markup), then exit."""
    from rich.text import Text

    err.print(Text.assemble(("error:", "red"), " ", message), highlight=False, soft_wrap=True)
    sys.exit(code)


def main() -> None:
    """Console-script entry point: run the app, turning input errors into one line and exit code 2."""
    import click

    try:
        code = app(standalone_mode=False)
    except click.exceptions.UsageError as exc:  # a typo in options: one line, with the fix to look up
        if not exc.format_message():  # no arguments at all: the help was printed
            sys.exit(2)
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        _fail(f"{exc.format_message()}{hint}")
    except click.exceptions.ClickException as exc:
        _fail(exc.format_message())
    except (
        click.exceptions.Abort
    ) as exc:  # click's wrapping of KeyboardInterrupt (and of detect's stop signals)
        err.print("interrupted")
        sys.exit(128 + int(getattr(exc.__cause__, "signum", 2)))
    except FedidsError as exc:
        _fail(str(exc))
    except KeyboardInterrupt as exc:  # SIGINT; detect turns SIGTERM/SIGHUP into the same, with its signum
        err.print("interrupted")
        sys.exit(128 + int(getattr(exc, "signum", 2)))
    except OSError as exc:  # the environment (a full disk, a vanished directory), not a bug
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        _fail(f"{where}{exc.strerror or exc}")
    except MemoryError:
        _fail("out of memory; use smaller inputs or settings")
    else:
        sys.exit(code if isinstance(code, int) else 0)
