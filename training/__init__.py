"""The training package shared by the entry points (train.py, eval.py, export.py)."""
