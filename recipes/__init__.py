"""Study recipes shipped with the package (`hf-infcompute study NAME` finds them by name)."""
