"""Errors meant for a person: what is wrong, where, and what to do."""


class CanopyError(Exception):
    """An error whose message can be shown as-is to the user (CLI or GUI)."""


class ModelError(CanopyError):
    """A model directory or file cannot be used."""


class IncompatibleModelsError(CanopyError):
    """The draft and target cannot be paired (different vocabularies)."""


class ContextLengthError(CanopyError):
    """The prompt plus the requested tokens exceed the model's context."""


class StreamingError(CanopyError):
    """Reading target layers failed (IO error, short read, corrupt header)."""


class ConfigError(CanopyError, ValueError):
    """A generation setting is outside what it accepts (e.g. top_p <= 0)."""
