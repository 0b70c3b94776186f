"""The store's errors (wrong fingerprint, a second writer, a bad store file).

Each derives from `featheads.core.errors.UserError` (re-exported here); the command-line groups turn it into one line
`Error: <message>` and exit code 1, with no traceback.
"""


from featheads.core.errors import UserError

__all__ = ["FingerprintMismatchError", "StoreError", "StoreLockedError", "UserError", "identity_diff"]


class StoreError(UserError):
    """A problem with a feature store that the user can fix; the message says which file and key."""


class StoreLockedError(StoreError):
    """Another process holds the store's writer lock."""


class FingerprintMismatchError(StoreError):
    """Features of a different backbone, weights file or preprocessing were about to land in a source."""


def _short(value, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def identity_diff(old: dict, new: dict, *, limit: int = 6) -> str:
    """The fields in which two source identities differ, one short `key: old -> new` each (at most `limit`),
    so that a mismatch of one field among a thousand logit names reads as one line."""
    keys = sorted(set(old) | set(new), key=str)
    missing = object()
    parts = []
    for k in keys:
        a, b = old.get(k, missing), new.get(k, missing)
        if a != b:
            parts.append(f"{k}: {'(none)' if a is missing else _short(a)} -> {'(none)' if b is missing else _short(b)}")
    if not parts:
        return "no field differs"
    more = f"; and {len(parts) - limit} more field(s)" if len(parts) > limit else ""
    return "; ".join(parts[:limit]) + more
