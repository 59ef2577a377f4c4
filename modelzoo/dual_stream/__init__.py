"""The dual_stream family: model.py (the flax model and its registry hooks)."""
