"""The kernel every package may import: errors, logging, config files, the model card, records, alignment,
images. It imports nothing else of facestream's (tests/test_architecture.py enforces the rule)."""
