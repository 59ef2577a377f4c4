"""SSD on TPU: Pallas Mosaic kernels, forward and backward.

Grid (batch, head, chunk). The chunk axis is "arbitrary" (sequential on one core) and the
P×N state is carried in a VMEM scratch across it; batch and head are "parallel". Each step
loads one chunk of x [L, P] and of its group's B/C [L, N] (group = head // (H // G) in the
index_map, so B/C are never copied per head) and runs `tiles.chunk_fwd` on the MXU.
The forward also writes the state entering every chunk, [B, H, T/L, P, N]: the backward
walks the chunks in reverse and needs them (this is what FLA and mamba's Triton kernels
store too; recomputing them would need a second forward sweep).

Layouts (built by `api.py` / the wrappers below): x_BHTP, B_BGTN, C_BGTN, and the per-token
scalars dt and a = in-chunk cumsum(dt·A) as [B, H, T/L, L, 1] columns and [B, H, T/L, 1, L]
rows. Every block's last two dims are either full array dims or (L, P|N) with L % 8 == 0,
which is the Mosaic (8, 128) rule.
"""
from __future__ import annotations


import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from kernels.ssd import tiles

_SEMANTICS = pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "arbitrary"))


def _col_row(v_BHT, L):
  Bsz, H, T = v_BHT.shape
  v = v_BHT.reshape(Bsz, H, T // L, L)
  return v[..., :, None], v[..., None, :]


def _specs(H, G, P, N, L, chunk_of):
  """BlockSpecs for the grid (b, h, c); `chunk_of(c)` is the chunk visited at step c."""
  R = H // G
  group = lambda h: jax.lax.div(h, jnp.int32(R))
  tok = lambda d: pl.BlockSpec((None, None, L, d), lambda b, h, c: (b, h, chunk_of(c), 0))
  grp = lambda d: pl.BlockSpec((None, None, L, d), lambda b, h, c: (b, group(h), chunk_of(c), 0))
  col = pl.BlockSpec((None, None, None, L, 1), lambda b, h, c: (b, h, chunk_of(c), 0, 0))
  row = pl.BlockSpec((None, None, None, 1, L), lambda b, h, c: (b, h, chunk_of(c), 0, 0))
  state = pl.BlockSpec((None, None, P, N), lambda b, h, c: (b, h, 0, 0))
  chunk_state = pl.BlockSpec((None, None, None, P, N), lambda b, h, c: (b, h, chunk_of(c), 0, 0))
  return tok, grp, col, row, state, chunk_state


def _fwd_kernel(x_ref, dtc_ref, dtr_ref, ac_ref, ar_ref, B_ref, C_ref, h0_ref,
                y_ref, hT_ref, hc_ref, h_scr):
  c = pl.program_id(2)

  @pl.when(c == 0)
  def _():
    h_scr[...] = h0_ref[...].astype(h_scr.dtype)

  h_PN = h_scr[...]
  hc_ref[...] = h_PN.astype(hc_ref.dtype)
  y_LP, h_PN = tiles.chunk_fwd(x_ref[...], B_ref[...], C_ref[...], dtc_ref[...], dtr_ref[...],
                               ac_ref[...], ar_ref[...], h_PN)
  y_ref[...] = y_LP.astype(y_ref.dtype)
  h_scr[...] = h_PN

  @pl.when(c == pl.num_programs(2) - 1)
  def _():
    hT_ref[...] = h_PN.astype(hT_ref.dtype)


def ssd_fwd(x_BHTP, dt_BHT, a_BHT, B_BGTN, C_BGTN, h0_BHPN, *, chunk, interpret=False):
  """Returns (y_BHTP, final_state_BHPN, chunk_states_BHCPN). T must be a multiple of chunk."""
  Bsz, H, T, P = x_BHTP.shape
  G, N, L = B_BGTN.shape[1], B_BGTN.shape[3], chunk
  nc, acc = T // L, h0_BHPN.dtype
  tok, grp, col, row, state, chunk_state = _specs(H, G, P, N, L, lambda c: c)
  dtc, dtr = _col_row(dt_BHT, L)
  ac, ar = _col_row(a_BHT, L)
  return pl.pallas_call(
      _fwd_kernel,
      grid=(Bsz, H, nc),
      in_specs=[tok(P), col, row, col, row, grp(N), grp(N), state],
      out_specs=[tok(P), state, chunk_state],
      out_shape=[jax.ShapeDtypeStruct(x_BHTP.shape, x_BHTP.dtype),
                 jax.ShapeDtypeStruct((Bsz, H, P, N), acc),
                 jax.ShapeDtypeStruct((Bsz, H, nc, P, N), acc)],
      scratch_shapes=[pltpu.VMEM((P, N), acc)],
      compiler_params=_SEMANTICS,
      interpret=interpret,
      name="ssd_fwd",
  )(x_BHTP, dtc, dtr, ac, ar, B_BGTN, C_BGTN, h0_BHPN)


def _bwd_kernel(x_ref, dtc_ref, dtr_ref, ac_ref, ar_ref, B_ref, C_ref, hc_ref, dy_ref, dhT_ref,
                dx_ref, dB_ref, dC_ref, ddtc_ref, ddtr_ref, dac_ref, dar_ref, dh0_ref, dh_scr):
  c = pl.program_id(2)

  @pl.when(c == 0)
  def _():
    dh_scr[...] = dhT_ref[...].astype(dh_scr.dtype)

  dx, dB, dC, ddtc, ddtr, dac, dar, dh = tiles.chunk_bwd(
      x_ref[...], B_ref[...], C_ref[...], dtc_ref[...], dtr_ref[...], ac_ref[...], ar_ref[...],
      hc_ref[...], dy_ref[...], dh_scr[...])
  for ref, v in ((dx_ref, dx), (dB_ref, dB), (dC_ref, dC), (ddtc_ref, ddtc), (ddtr_ref, ddtr),
                 (dac_ref, dac), (dar_ref, dar)):
    ref[...] = v.astype(ref.dtype)
  dh_scr[...] = dh

  @pl.when(c == pl.num_programs(2) - 1)
  def _():
    dh0_ref[...] = dh.astype(dh0_ref.dtype)


def ssd_bwd(x_BHTP, dt_BHT, a_BHT, B_BGTN, C_BGTN, hc_BHCPN, dy_BHTP, dhT_BHPN, *, chunk,
            interpret=False):
  """Walks the chunks last to first. Returns (dx_BHTP, dB_BHTN, dC_BHTN, ddt_BHT, da_BHT,
  dh0_BHPN); dB/dC are per head (the wrapper sums each group's heads), ddt is the direct
  part and da the gradient w.r.t. the in-chunk cumsum a."""
  Bsz, H, T, P = x_BHTP.shape
  G, N, L = B_BGTN.shape[1], B_BGTN.shape[3], chunk
  nc, acc = T // L, hc_BHCPN.dtype
  tok, grp, col, row, state, chunk_state = _specs(H, G, P, N, L, lambda c: nc - 1 - c)
  dtc, dtr = _col_row(dt_BHT, L)
  ac, ar = _col_row(a_BHT, L)
  sds = jax.ShapeDtypeStruct
  cols, rows = sds((Bsz, H, nc, L, 1), acc), sds((Bsz, H, nc, 1, L), acc)
  dx, dB, dC, ddtc, ddtr, dac, dar, dh0 = pl.pallas_call(
      _bwd_kernel,
      grid=(Bsz, H, nc),
      in_specs=[tok(P), col, row, col, row, grp(N), grp(N), chunk_state, tok(P), state],
      out_specs=[tok(P), tok(N), tok(N), col, row, col, row, state],
      out_shape=[sds(x_BHTP.shape, acc), sds((Bsz, H, T, N), acc), sds((Bsz, H, T, N), acc),
                 cols, rows, cols, rows, sds((Bsz, H, P, N), acc)],
      scratch_shapes=[pltpu.VMEM((P, N), acc)],
      compiler_params=_SEMANTICS,
      interpret=interpret,
      name="ssd_bwd",
  )(x_BHTP, dtc, dtr, ac, ar, B_BGTN, C_BGTN, hc_BHCPN, dy_BHTP, dhT_BHPN)
  flat = lambda c_, r_: (c_[..., 0] + r_[..., 0, :]).reshape(Bsz, H, T)
  return dx, dB, dC, flat(ddtc, ddtr), flat(dac, dar), dh0
