// Causal attention for prefill, flash-style: one workgroup per (tile of 8 consecutive query rows,
// query head h). K and V stream through shared memory in blocks of 8 positions (decoded once per
// block for the whole tile); each row keeps a running max, sum and output (the online softmax),
// so scores never reach memory. Invocation t owns row t / 8: it scores key t % 8 of each block
// and accumulates output elements t % 8 + 8 i. Rows of other sequences in the same tile are
// handled in further passes over their own keys.
// Cache and push constants as attention.comp; hd <= 128 (12 KiB of shared memory).
#version 450
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer Q { float q[]; };
layout(std430, binding = 1) readonly buffer KC { uint kc[]; };
layout(std430, binding = 2) readonly buffer VC { uint vc[]; };
layout(std430, binding = 3) readonly buffer Tok { int tok[]; };
layout(std430, binding = 4) writeonly buffer O { float o[]; };
layout(push_constant) uniform P { int M, n_heads, kv_heads, hd, n_ctx, tk, tv, rsk, rsv, ld; float scale; } p;

const int TM = 8, BK = 8, HD = 128;
shared float qs[TM][HD];
shared float ks[BK][HD];
shared float vs[BK][HD];
shared float ss[TM][BK];

#include "kv_decode.glsl"
KV_DECODE(kat, kc, p.tk)
KV_DECODE(vat, vc, p.tv)

void main() {
  const int tiles = (p.M + TM - 1) / TM;
  const int id = int(gl_WorkGroupID.x + gl_NumWorkGroups.x * gl_WorkGroupID.z);
  if (id >= tiles * p.n_heads) return;
  const int tid = int(gl_LocalInvocationID.x), r = tid / BK, c = tid % BK;
  const int m0 = (id / p.n_heads) * TM, h = id % p.n_heads, g = h / (p.n_heads / p.kv_heads);
  const int rows = min(TM, p.M - m0);
  for (int i = tid; i < TM * p.hd; i += 64) {
    const int rr = i / p.hd, e = i % p.hd;
    qs[rr][e] = rr < rows ? q[(m0 + rr) * p.ld + h * p.hd + e] : 0.0;
  }
  const int my_pos = r < rows ? tok[2 * (m0 + r)] : -1, my_seq = r < rows ? tok[2 * (m0 + r) + 1] : -1;
  for (int lead = 0; lead < rows; ++lead) {  // one pass per sequence present in the tile
    const int seq = tok[2 * (m0 + lead) + 1];
    bool seen = false;
    for (int j = 0; j < lead; ++j) seen = seen || tok[2 * (m0 + j) + 1] == seq;
    if (seen) continue;
    int n_keys = 0;
    for (int j = lead; j < rows; ++j)
      if (tok[2 * (m0 + j) + 1] == seq) n_keys = max(n_keys, tok[2 * (m0 + j)] + 1);
    const bool mine = my_seq == seq;
    const uint row0 = uint((seq * p.kv_heads + g) * p.n_ctx);
    float run_max = -3.0e38, run_sum = 0.0;
    float acc[HD / BK];
    for (int i = 0; i < HD / BK; ++i) acc[i] = 0.0;
    for (int j0 = 0; j0 < n_keys; j0 += BK) {
      barrier();  // the previous block (and the Q tile, first time) is done with / written
      for (int i = tid; i < BK * p.hd; i += 64) {
        const int j = i / p.hd, e = i % p.hd;
        const bool inside = j0 + j < n_keys;
        ks[j][e] = inside ? kat((row0 + uint(j0 + j)) * uint(p.rsk), e) : 0.0;
        vs[j][e] = inside ? vat((row0 + uint(j0 + j)) * uint(p.rsv), e) : 0.0;
      }
      barrier();
      float s = 0.0;
      for (int e = 0; e < p.hd; ++e) s += qs[r][e] * ks[c][e];
      ss[r][c] = s * p.scale;
      barrier();
      float bmax = -3.0e38;
      for (int j = 0; j < BK; ++j)
        if (mine && j0 + j <= my_pos) bmax = max(bmax, ss[r][j]);
      const float new_max = max(run_max, bmax), corr = exp(run_max - new_max);
      float pj[BK];
      float psum = 0.0;
      for (int j = 0; j < BK; ++j) {
        pj[j] = mine && j0 + j <= my_pos ? exp(ss[r][j] - new_max) : 0.0;
        psum += pj[j];
      }
      run_sum = run_sum * corr + psum;
      for (int i = 0; i < HD / BK; ++i) {
        const int e = c + BK * i;
        if (e >= p.hd) break;
        float a = acc[i] * corr;
        for (int j = 0; j < BK; ++j) a += pj[j] * vs[j][e];
        acc[i] = a;
      }
      run_max = new_max;
    }
    if (mine)
      for (int i = 0; i < HD / BK; ++i) {
        const int e = c + BK * i;
        if (e < p.hd) o[(m0 + r) * p.ld + h * p.hd + e] = acc[i] / run_sum;
      }
  }
}
