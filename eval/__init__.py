"""lm-evaluation-harness task templates for benchmark data kept in a local folder (see README.md)."""
