"""The mamba family: model.py (the flax model and its registry hooks)."""
