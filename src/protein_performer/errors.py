"""The one exception the command line turns into a one-line message and exit status 2."""


class UserError(Exception):
    """A problem with the user's input: reported as one line, exit status 2."""
