"""The mamba2 family: model.py (the flax model and its registry hooks)."""
