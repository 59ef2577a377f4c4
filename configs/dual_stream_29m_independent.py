"""Dual-Stream Transformer at the paper's ~29M shape, independent (block-diagonal) V and O (FFN dense).

    python train.py --config configs/dual_stream_29m_independent.py data.tokenizer_path=<GPT-2 tokenizer.json>
    python eval.py --workdir <workdir> --logit-scale 1 2 4 8 16 --sample "The "
    python train.py --config configs/dual_stream_29m_independent.py --aot v5e:2x2

Should show: "model dual_stream: 28,455,552 parameters" at start-up (docs/dual_stream.md: ~28.5M), then
the loss falling. The paper's fully independent model (+8% validation loss vs dense) is most
likely block-diagonal at the FFN too: that is dual_stream_29m_fully_independent.py (22.56M,
matching the authors' "22M" fully independent model). Everything else as dual_stream_29m_dense.py,
including its slice (`--aot v5e:2x2`: data parallel over 4 chips, 3.3 GiB per chip of 16, fits).
"""
from configs import dual_stream_29m_dense


def get_config():
  return dual_stream_29m_dense.get_config(mix_v="independent", mix_o="independent")
