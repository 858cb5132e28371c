"""Errors that reach the user as one line and exit status 2 (bad input, missing data)."""


class UserError(Exception):
    """Bad input: the message says what is wrong and how to fix it, in one line.

    Raised before any job starts; `python -m repro.table` prints it and exits 2.
    """
