"""Errors a user can cause. The CLI prints their message as one line and exits non-zero."""


class SnnkitError(Exception):
    """Base class: the message is one sentence that says what to do."""


class ConfigError(SnnkitError, ValueError):
    pass


class DataError(SnnkitError):
    pass


class CheckpointError(SnnkitError):
    pass
