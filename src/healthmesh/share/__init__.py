"""Sharing a patient's record: summaries, shared bundles, links and cards."""
