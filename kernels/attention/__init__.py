"""Flash attention, softmax and sigmoid kinds: reference.py (oracle + blockwise jnp), pallas_tpu.py,
pallas_gpu.py, api.py. The shared mask rule and tile math are in kernels/_attn_common.py."""
