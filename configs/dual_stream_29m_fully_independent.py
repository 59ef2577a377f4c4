"""Dual-Stream Transformer at the paper's ~29M shape, fully independent: V, O and the FFN per head.

    python train.py --config configs/dual_stream_29m_fully_independent.py data.tokenizer_path=<GPT-2 tokenizer.json>
    python eval.py --workdir <workdir> --logit-scale 1 2 4 8 16 --sample "The "
    python train.py --config configs/dual_stream_29m_fully_independent.py --aot v5e:2x2

Should show: "model dual_stream: 22,557,312 parameters" at start-up, then the loss falling. The
paper reports +8% validation loss relative to the dense model for its fully independent model; the
authors list that model ("independent channels" at V, O, FFN-up and FFN-down) at 22M parameters,
which is this shape's count (docs/dual_stream.md). Everything else as dual_stream_29m_dense.py,
including its slice (v5e:2x2, data parallel over 4 chips; docs/scale.md's table).
"""
from configs import dual_stream_29m_dense


def get_config():
  return dual_stream_29m_dense.get_config(mix_v="independent", mix_o="independent",
                                          mix_up="independent", mix_down="independent")
