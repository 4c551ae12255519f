"""Command-line interface (`hf-infcompute`)."""
