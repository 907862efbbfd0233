"""User-facing errors.

Every mistake a user can make (a bad config key, a missing file, an impossible pairing) raises a
subclass of :class:`TextDiffError` with a one-line message that says what was wrong and what to do.
The CLI prints that line and exits with status 2 instead of a traceback.
"""


class TextDiffError(Exception):
    """Base class for errors caused by user input; the message is one line."""


class ConfigError(TextDiffError, ValueError):
    """A recipe or config is malformed: unknown key, wrong type, bad value."""


class DataError(TextDiffError, ValueError):
    """A dataset is missing, empty or cannot be read."""


class IncompatibleError(TextDiffError, ValueError):
    """Two parts cannot work together (a sampler with a process, a model with a process...)."""


def warn(message: str) -> None:
    """A one-line ``warning: ...`` on stderr for input that is accepted but probably a mistake."""
    import sys

    print(f"warning: {message}", file=sys.stderr)


def warn_if(message) -> None:
    """:func:`warn` the message when there is one (a check that returns a message or None / False)."""
    if message:
        warn(message)
