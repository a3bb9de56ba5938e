"""Errors that the command line reports as one line with exit code 2 (bad input, not a bug)."""


class FedidsError(Exception):
    """A problem with the user's input or environment, reported without a traceback."""


class InputError(FedidsError):
    """A file or stream that cannot be read as expected (missing, empty, malformed, corrupt)."""
