"""The featurize journal: finished batches on disk next to the store, merged into it in one short write.

It lives in `store.journal` (so that `store merge PATH` can merge parts without importing featurize);
this module keeps the featurize name. See that module for the format and the guarantees.
"""
from store.journal import PART_PATTERN, MERGE_ROWS, Journal, identity_json, merge_all, parts_dir

__all__ = ["MERGE_ROWS", "PART_PATTERN", "Journal", "identity_json", "merge_all", "parts_dir"]
