"""The error a user can fix by changing what they passed (a flag, a setting, a file): the
command line prints its message as one line. Any other exception is a defect and keeps its
traceback."""


class ConfigError(ValueError):
    """A setting or input that cannot work, with a message meant for the user."""
