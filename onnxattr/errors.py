"""The one exception type users see: a message that says what was wrong and what to do."""


class OnnxAttrError(Exception):
    """A user-facing error; the CLI prints its message on one line and exits non-zero."""


class OnnxAttrWarning(UserWarning):
    """Something the user should know but that does not stop the command (printed as one line)."""
