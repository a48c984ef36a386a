"""The one exception type a user can cause; the CLI prints it as one line and exits non-zero."""


class GenlabError(Exception):
    """A problem with the user's input (config, data, checkpoint) that says what to do."""
