"""Tiny byte-level Dual-Stream Transformer, fully independent: V, O and the FFN per head.

    python train.py --config configs/dual_stream_tiny_fully_independent.py --workdir runs/ds_tiny_full_ind
    python eval.py --workdir runs/ds_tiny_full_ind --logit-scale 1 2 4 8 16 --sample "def "

The paper's maximum-isolation end of the mixing hierarchy (+8% validation loss vs dense at 29M):
block-diagonal V and O (one d_h x d_h map per head) and a per-head FFN (head h's d_h channels ->
its own d_ff/H hidden units -> back to its d_h channels). Heads meet only in Q and K (dense), in the
attention pattern they read and in the final LayerNorm. Should show: "model dual_stream: 331,008
parameters" at start-up (0.40x the dense model's 822,528), then the loss falling.
Everything else as configs/dual_stream_tiny_dense.py; V/O-only independence is
dual_stream_tiny_independent.py.
"""
from configs import dual_stream_tiny_dense


def get_config():
  return dual_stream_tiny_dense.get_config(mix_v="independent", mix_o="independent",
                                           mix_up="independent", mix_down="independent")
