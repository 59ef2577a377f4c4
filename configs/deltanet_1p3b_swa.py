"""DeltaNet + sliding-window attention every other layer, 1.3B (the paper's first hybrid).

    python train.py --config configs/deltanet_1p3b_swa.py data.path=<text files> --workdir runs/x
    python train.py --config configs/deltanet_1p3b_swa.py --aot v5e:2x2

Should show: nothing on CPU (1.36B parameters; built by tests/test_zoo_deltanet.py). Layers
alternate DeltaNet (even) and softmax attention with RoPE over a window of model.dn_window keys
(odd), 16 heads of 128, every other setting as configs/deltanet_1p3b.py. The window size is not
confirmed from the paper text here: 512 is this config's choice (override model.dn_window).
Sized as deltanet_1p3b.py (v5e 2x2, fsdp, remat full, 16 micro-batches): 12.6 GiB per chip of 16
on `--aot v5e:2x2`, fits (docs/scale.md).
"""
from configs import deltanet_1p3b
from configs.base import Config


def get_config() -> Config:
  return deltanet_1p3b.get_config(dn_hybrid="swa", dn_window=512)
