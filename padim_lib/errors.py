"""The project's exception type: bad input that the user can fix."""


class PadimError(ValueError):
    """Raised for bad input (paths, parameters, files); the message says what was expected."""
