"""The one exception type a user sees: a clear sentence saying what is wrong, where, and what to do.

Everything raised as TuneloopError is printed by the CLI as a single line (no traceback) with a
non-zero exit code; anything else is a bug and keeps its traceback.
"""


class TuneloopError(Exception):
    """A problem with the user's input or environment, explained in the message."""
