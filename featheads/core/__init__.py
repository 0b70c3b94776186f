"""Shared by every room: errors a user can cause, the click group helper, JSON and version helpers.

Imports nothing of featurize, store, heads or blend (tests/test_layering.py keeps this true)."""
from .errors import UserError
from .jsonfile import read_json, toolkit_version

__all__ = ["UserError", "read_json", "toolkit_version"]
