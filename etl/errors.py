"""User-facing errors: the CLI prints these as one line, never a traceback."""


class GogookuError(Exception):
    """A mistake in input, config or environment that the user can fix; the message says how."""
