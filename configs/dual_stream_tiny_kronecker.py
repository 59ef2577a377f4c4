"""Tiny byte-level Dual-Stream Transformer, kronecker head mixing of V and O (FFN dense).

    python train.py --config configs/dual_stream_tiny_kronecker.py --workdir runs/ds_tiny_kron
    python eval.py --workdir runs/ds_tiny_kron --logit-scale 1 2 4 8 16 --sample "def "

Should show: TODO
Everything else as configs/dual_stream_tiny_dense.py.
"""
from configs import dual_stream_tiny_dense


def get_config():
  return dual_stream_tiny_dense.get_config(mix_v="kronecker", mix_o="kronecker")
