"""Patient privacy: the audit trail (audit, chain, checkpoints, retention, breach)."""
