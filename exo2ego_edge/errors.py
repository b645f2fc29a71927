"""The exception types a user sees: each message is a single line, printed without traceback."""


class UserError(Exception):
    """A failure caused by the user's input or environment; the CLI prints it as one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class VideoError(UserError):
    """A video file that cannot be decoded into frames: missing, empty, corrupt, unsupported."""
