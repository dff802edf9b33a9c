"""Names and the user-error type shared by the `keras-l0-shrink` modules."""

PROG = "keras-l0-shrink"
REPORT_NAME = "report.json"


class UsageError(Exception):
    """A user mistake, reported as one line on stderr with exit status 2."""

# Largest accepted |gated - slim| (Keras), times max(1, largest output).
GATED_TOLERANCE = 1e-4
