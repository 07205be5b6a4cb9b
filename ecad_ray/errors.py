"""Errors the CLI turns into one clear line and exit code 1.

Raise `UserError` for anything a user can fix (a bad file, option or missing weights); the
message must name the file/option and say what is wrong. Everything else is a bug and keeps
its traceback.
"""


class UserError(Exception):
    """A problem with the user's input or environment, reported as one line without traceback."""
