"""The decoder family: model.py (the flax model and its registry hooks)."""
