"""Errors a user can cause (bad path, bad annotation line, wrong fingerprint, a second writer, ...).

Every error a user can fix derives from `UserError`; the command-line groups turn it into one line
`Error: <message>` and exit code 1, with no traceback.
"""


class UserError(Exception):
    """A problem the user can fix; the message names the file and line or key."""
