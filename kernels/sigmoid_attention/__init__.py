"""FlashSigmoid: only the public function lives here (api.py). The oracle, the blockwise jnp path
and the Pallas TPU/Triton kernels are the attention machinery's "sigmoid" kind
(kernels/attention/, kernels/_attn_common.py), not a fork of it."""
