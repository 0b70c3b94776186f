"""The store's errors (wrong fingerprint, a second writer, a bad store file).

Each derives from `featheads.core.errors.UserError` (re-exported here); the command-line groups turn it into one line
`Error: <message>` and exit code 1, with no traceback.
"""


from featheads.core.errors import UserError

__all__ = ["FingerprintMismatchError", "StoreError", "StoreLockedError", "UserError"]


class StoreError(UserError):
    """A problem with a feature store that the user can fix; the message says which file and key."""


class StoreLockedError(StoreError):
    """Another process holds the store's writer lock."""


class FingerprintMismatchError(StoreError):
    """Features of a different backbone, weights file or preprocessing were about to land in a source."""
