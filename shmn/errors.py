"""The one exception type the command line turns into a single clear error line."""


class ShmnError(Exception):
    """A problem the user can fix: bad input, missing cache, wrong option.

    The message names the file or option and says what was expected; the CLI prints it as one
    line prefixed with ``shmn: error:`` and exits with status 2.
    """
