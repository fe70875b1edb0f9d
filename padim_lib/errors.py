"""The project's exception type: bad input that the user can fix."""


class PadimError(ValueError):
    """Raised for bad input (paths, parameters, files); the message says what was expected."""


def load_reason(exc: BaseException) -> str:
    """One line saying why torch.load failed on a file. torch's own text runs over several lines
    and suggests weights_only=False, which would run code from the file: never offer that."""
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    if "weights_only" in first or "Weights only load failed" in first:
        first = "it holds objects other than tensors and plain values"
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
