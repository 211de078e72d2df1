"""The two ways a command ends early on purpose.

Raise `UserError` for anything a user can fix (a path, an id, a config value);
its message says what is wrong and how to fix it. Anything else is a bug and
keeps its traceback.

`Interrupted` is raised in the main thread by SIGINT (Ctrl-C) or SIGTERM (`jaxprobe.cli`
installs the handlers); code that saved something on the way out sets its `kept` to say what.
"""

import signal


class UserError(Exception):
  """A problem with the user's input, reported without a traceback."""


class Interrupted(KeyboardInterrupt):
  """The command was stopped by signal `signum`; `kept` says what it leaves to resume from."""

  def __init__(self, signum: int = signal.SIGINT, kept: str = ""):
    super().__init__(signum)
    self.signum, self.kept = signum, kept
