"""Dual-Stream Transformer at the paper's ~29M shape, Kronecker head mixing of V and O (FFN dense).

    python train.py --config configs/dual_stream_29m_kronecker.py data.tokenizer_path=<GPT-2 tokenizer.json>
    python eval.py --workdir <workdir> --logit-scale 1 2 4 8 16 --sample "The "
    python train.py --config configs/dual_stream_29m_kronecker.py --aot v5e:2x2

Should show: "model dual_stream: 28,161,072 parameters" at start-up (docs/dual_stream.md: ~28.2M), then
the loss falling; the paper reports validation loss +2.5% relative to the dense model. Whether the
paper's Kronecker model also had a per-head FFN is not recoverable (add model.mix_up=independent
model.mix_down=independent for that reading: 22.26M). M_V starts at I + N(0, 0.02^2), M_O at
N(0, (0.02/sqrt(12))^2); model.kron_init=normal is the authors' precursor code (docs/dual_stream.md).
Everything else as dual_stream_29m_dense.py, including its slice (`--aot v5e:2x2`: data parallel
over 4 chips, 3.3 GiB per chip of 16, fits).
"""
from configs import dual_stream_29m_dense


def get_config():
  return dual_stream_29m_dense.get_config(mix_v="kronecker", mix_o="kronecker")
