"""Errors a user can act on. The CLI prints their message and exits non-zero."""


class UserError(Exception):
    """Bad input: the message says what is wrong and what to change."""
