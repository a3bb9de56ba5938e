"""``python -m fedids.cli``: the same as the ``fedids`` console script."""

from fedids.cli import main

main()
