"""The one error type the CLI turns into a single line and exit code 2.

Raise `UserError` for anything a user can fix (a path, an id, a config value);
its message says what is wrong and how to fix it. Anything else is a bug and
keeps its traceback.
"""


class UserError(Exception):
  """A problem with the user's input, reported without a traceback."""
