"""Tiny byte-level Dual-Stream Transformer, kronecker head mixing of V and O (FFN dense).

    python train.py --config configs/dual_stream_tiny_kronecker.py --workdir runs/ds_tiny_kron
    python eval.py --workdir runs/ds_tiny_kron --logit-scale 1 2 4 8 16 --sample "def "

Should show: the loss falling from ~5.5 (ln 256) to ~2.0 (train), eval ~1.85 nats/byte after 500
steps (+15% vs dense at this short budget; the paper's 29M gap is +2.5%, the spec's 1500-step byte-
level pilot +7.1%); see docs/dual_stream.md.
Everything else as configs/dual_stream_tiny_dense.py.
"""
from configs import dual_stream_tiny_dense


def get_config():
  return dual_stream_tiny_dense.get_config(mix_v="kronecker", mix_o="kronecker")
