"""SSD on CUDA GPUs: Pallas Triton kernels, forward and backward.

Triton has no sequential grid axis and no scratch, so each program owns a whole sequence
of one (batch, head, P-tile) and carries the state through a `fori_loop` over chunks,
in registers. Rows of the P×N state never interact (y[:, p] only reads h[p, :]), so P is
tiled across programs for more parallelism: grid (B, H, P/block_p). In the backward, each
P-tile produces partial dB/dC/ddt/da (sums over p), added up by the wrapper.

Triton needs power-of-two tiles and tl.dot needs every matmul dim >= 16, so the wrapper
pads P and N up to max(16, next power of two) with zeros (zero x/B/C rows stay exactly
zero in the state) and the chunk size must be a power of two >= 16. compiler_params are
always `pltriton.CompilerParams`: jax 0.10.2 would otherwise pick the Mosaic GPU backend.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from kernels.ssd import tiles

BLOCK_P = 64        # P-tile per program: state tile [64, N] f32 stays in registers.
FWD_PARAMS = pltriton.CompilerParams(num_warps=4, num_stages=2)
BWD_PARAMS = pltriton.CompilerParams(num_warps=8, num_stages=1)


def _pow2(n: int) -> int:
  return max(16, 1 << (n - 1).bit_length())


def check_chunk(chunk: int):
  if chunk < 16 or chunk & (chunk - 1):
    raise ValueError(f"the Triton SSD kernel needs a power-of-two chunk_size >= 16, got {chunk}")


def _pad_last(a, n, axis=-1):
  widths = [(0, 0)] * a.ndim
  widths[axis] = (0, n - a.shape[axis])
  return jnp.pad(a, widths)


def _specs(H, G, T, bp, N, nc):
  R = H // G
  group = lambda h: jax.lax.div(h, jnp.int32(R))
  x = pl.BlockSpec((None, None, T, bp), lambda b, h, p: (b, h, 0, p))
  grp = pl.BlockSpec((None, None, T, N), lambda b, h, p: (b, group(h), 0, 0))
  tok = pl.BlockSpec((None, None, T), lambda b, h, p: (b, h, 0))
  state = pl.BlockSpec((None, None, bp, N), lambda b, h, p: (b, h, p, 0))
  chunk_state = pl.BlockSpec((None, None, nc, bp, N), lambda b, h, p: (b, h, 0, p, 0))
  return x, grp, tok, state, chunk_state


def _fwd_kernel(x_ref, dt_ref, a_ref, B_ref, C_ref, h0_ref, y_ref, hT_ref, hc_ref, *, L, nc):
  def body(c, h_PN):
    t = pl.ds(pl.multiple_of(c * L, L), L)
    dt, a = dt_ref[t], a_ref[t]
    hc_ref[c] = h_PN.astype(hc_ref.dtype)
    y_LP, h_PN = tiles.chunk_fwd(x_ref[t, :], B_ref[t, :], C_ref[t, :], dt[:, None],
                                 dt[None, :], a[:, None], a[None, :], h_PN)
    y_ref[t, :] = y_LP.astype(y_ref.dtype)
    return h_PN

  h_PN = jax.lax.fori_loop(0, nc, body, h0_ref[...].astype(hT_ref.dtype))
  hT_ref[...] = h_PN


def ssd_fwd(x_BHTP, dt_BHT, a_BHT, B_BGTN, C_BGTN, h0_BHPN, *, chunk, interpret=False):
  """Same contract as pallas_tpu.ssd_fwd."""
  Bsz, H, T, P = x_BHTP.shape
  G, N, L = B_BGTN.shape[1], B_BGTN.shape[3], chunk
  Pp, Np, nc, acc = _pow2(P), _pow2(N), T // L, h0_BHPN.dtype
  bp = min(BLOCK_P, Pp)
  x_spec, grp, tok, state, chunk_state = _specs(H, G, T, bp, Np, nc)
  sds = jax.ShapeDtypeStruct
  y, hT, hc = pl.pallas_call(
      lambda *refs: _fwd_kernel(*refs, L=L, nc=nc),
      grid=(Bsz, H, Pp // bp),
      in_specs=[x_spec, tok, tok, grp, grp, state],
      out_specs=[x_spec, state, chunk_state],
      out_shape=[sds((Bsz, H, T, Pp), x_BHTP.dtype), sds((Bsz, H, Pp, Np), acc),
                 sds((Bsz, H, nc, Pp, Np), acc)],
      compiler_params=FWD_PARAMS,
      interpret=interpret,
      name="ssd_fwd",
  )(_pad_last(x_BHTP, Pp), dt_BHT, a_BHT, _pad_last(B_BGTN, Np), _pad_last(C_BGTN, Np),
    _pad_last(_pad_last(h0_BHPN, Np), Pp, axis=2))
  return y[..., :P], hT[:, :, :P, :N], hc[:, :, :, :P, :N]


def _bwd_kernel(x_ref, dt_ref, a_ref, B_ref, C_ref, hc_ref, dy_ref, dhT_ref,
                dx_ref, dB_ref, dC_ref, ddt_ref, da_ref, dh0_ref, *, L, nc):
  def body(i, dh_PN):
    c = nc - 1 - i
    t = pl.ds(pl.multiple_of(c * L, L), L)
    dt, a = dt_ref[t], a_ref[t]
    dx, dB, dC, ddtc, ddtr, dac, dar, dh_PN = tiles.chunk_bwd(
        x_ref[t, :], B_ref[t, :], C_ref[t, :], dt[:, None], dt[None, :], a[:, None],
        a[None, :], hc_ref[c], dy_ref[t, :], dh_PN)
    dx_ref[t, :] = dx.astype(dx_ref.dtype)
    dB_ref[t, :] = dB.astype(dB_ref.dtype)
    dC_ref[t, :] = dC.astype(dC_ref.dtype)
    ddt_ref[t] = (ddtc.reshape(L) + ddtr.reshape(L)).astype(ddt_ref.dtype)
    da_ref[t] = (dac.reshape(L) + dar.reshape(L)).astype(da_ref.dtype)
    return dh_PN

  dh0_ref[...] = jax.lax.fori_loop(0, nc, body, dhT_ref[...].astype(dh0_ref.dtype))


def ssd_bwd(x_BHTP, dt_BHT, a_BHT, B_BGTN, C_BGTN, hc_BHCPN, dy_BHTP, dhT_BHPN, *, chunk,
            interpret=False):
  """Same contract as pallas_tpu.ssd_bwd."""
  Bsz, H, T, P = x_BHTP.shape
  G, N, L = B_BGTN.shape[1], B_BGTN.shape[3], chunk
  Pp, Np, nc, acc = _pow2(P), _pow2(N), T // L, hc_BHCPN.dtype
  bp = min(BLOCK_P, Pp)
  nP = Pp // bp
  x_spec, grp, tok, state, chunk_state = _specs(H, G, T, bp, Np, nc)
  # Per-P-tile partial sums get their own leading axis.
  part_tok = pl.BlockSpec((None, None, None, T), lambda b, h, p: (p, b, h, 0))
  part_grp = pl.BlockSpec((None, None, None, T, Np), lambda b, h, p: (p, b, h, 0, 0))
  sds = jax.ShapeDtypeStruct
  pad_state = lambda s: _pad_last(_pad_last(s, Np), Pp, axis=-2)
  dx, dB, dC, ddt, da, dh0 = pl.pallas_call(
      lambda *refs: _bwd_kernel(*refs, L=L, nc=nc),
      grid=(Bsz, H, nP),
      in_specs=[x_spec, tok, tok, grp, grp, chunk_state, x_spec, state],
      out_specs=[x_spec, part_grp, part_grp, part_tok, part_tok, state],
      out_shape=[sds((Bsz, H, T, Pp), acc), sds((nP, Bsz, H, T, Np), acc),
                 sds((nP, Bsz, H, T, Np), acc), sds((nP, Bsz, H, T), acc),
                 sds((nP, Bsz, H, T), acc), sds((Bsz, H, Pp, Np), acc)],
      compiler_params=BWD_PARAMS,
      interpret=interpret,
      name="ssd_bwd",
  )(_pad_last(x_BHTP, Pp), dt_BHT, a_BHT, _pad_last(B_BGTN, Np), _pad_last(C_BGTN, Np),
    pad_state(hc_BHCPN), _pad_last(dy_BHTP, Pp), pad_state(dhT_BHPN))
  return (dx[..., :P], dB.sum(0)[..., :N], dC.sum(0)[..., :N], ddt.sum(0), da.sum(0),
          dh0[:, :, :P, :N])
