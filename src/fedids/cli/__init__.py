"""The `fedids` command line. Each command is a thin shell over library functions; each command group
lives in its own module of this package and registers itself on :data:`app` when imported.

Bad input (missing file, malformed CSV, corrupt model) prints one ``error:`` line on stderr and exits
with code 2, without a traceback.
"""

from __future__ import annotations

import sys

from fedids.cli.common import app
from fedids.console import err
from fedids.errors import FedidsError

# Importing a command module registers its commands on `app`.
from fedids.cli import data as _data  # noqa: F401,E402
from fedids.cli import train as _train  # noqa: F401,E402
from fedids.cli import federate as _federate  # noqa: F401,E402
from fedids.cli import keys as _keys  # noqa: F401,E402
from fedids.cli import detect as _detect  # noqa: F401,E402
from fedids.cli import deploy as _deploy  # noqa: F401,E402
from fedids.cli import experiment as _experiment  # noqa: F401,E402
from fedids.cli import demo as _demo  # noqa: F401,E402

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point: run the app, turning input errors into one line and exit code 2."""
    try:
        app()
    except FedidsError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)

