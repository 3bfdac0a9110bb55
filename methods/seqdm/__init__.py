"""SeqDMs (placeholder)."""
