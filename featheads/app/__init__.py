"""Orchestration above the rooms: the end-to-end demo. May import featurize, store, heads and blend."""
