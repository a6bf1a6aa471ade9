// Causal attention over one layer's cache, one workgroup per (row m, query head h):
// out = softmax(scale * q . K[0..pos]) . V[0..pos] for the row's sequence, with kv head
// h / (n_heads / kv_heads). Keys are visited in chunks of 256 with a running max and sum (the
// online softmax), so any context length fits in 1 KiB of shared scores.
// Cache: rows [n_seq][kv_heads][n_ctx] of rsk / rsv bytes; K and V each f32 (type 0), f16 (1),
// q8 (2) or q4 (3) in the row layouts of kernels/kv.h (kv_store.comp writes them); hd <= 256.
#version 450
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer Q { float q[]; };
layout(std430, binding = 1) readonly buffer KC { uint kc[]; };
layout(std430, binding = 2) readonly buffer VC { uint vc[]; };
layout(std430, binding = 3) readonly buffer Tok { int tok[]; };
layout(std430, binding = 4) writeonly buffer O { float o[]; };
layout(push_constant) uniform P { int M, n_heads, kv_heads, hd, n_ctx, tk, tv, rsk, rsv, ld; float scale; } p;

const int kChunk = 256;
shared float sc[kChunk];
shared float qv[256];
shared float red[64];

#include "kv_decode.glsl"
KV_DECODE(kat, kc, p.tk)
KV_DECODE(vat, vc, p.tv)

// All 64 invocations call this; returns the max (is_max) or sum of v over the workgroup.
float reduce(float v, bool is_max) {
  const int tid = int(gl_LocalInvocationID.x);
  red[tid] = v;
  barrier();
  for (int h = 32; h > 0; h >>= 1) {
    if (tid < h) red[tid] = is_max ? max(red[tid], red[tid + h]) : red[tid] + red[tid + h];
    barrier();
  }
  const float r = red[0];
  barrier();
  return r;
}

void main() {
  const int id = int(gl_WorkGroupID.x + gl_NumWorkGroups.x * gl_WorkGroupID.z);
  if (id >= p.M * p.n_heads) return;
  const int tid = int(gl_LocalInvocationID.x);
  const int m = id / p.n_heads, h = id % p.n_heads, g = h / (p.n_heads / p.kv_heads);
  const int n_pos = tok[2 * m] + 1, seq = tok[2 * m + 1];
  const uint row0 = uint((seq * p.kv_heads + g) * p.n_ctx);
  const int qo = m * p.ld + h * p.hd;
  for (int e = tid; e < p.hd; e += 64) qv[e] = q[qo + e];
  barrier();
  float run_max = -3.0e38, run_sum = 0;
  float acc[4] = float[4](0, 0, 0, 0);
  for (int c0 = 0; c0 < n_pos; c0 += kChunk) {
    const int cn = min(kChunk, n_pos - c0);
    float local_max = -3.0e38;
    for (int j = tid; j < cn; j += 64) {
      const uint kr = (row0 + uint(c0 + j)) * uint(p.rsk);
      float s = 0;
      for (int e = 0; e < p.hd; ++e) s += qv[e] * kat(kr, e);
      sc[j] = s * p.scale;
      local_max = max(local_max, sc[j]);
    }
    const float new_max = max(run_max, reduce(local_max, true));
    const float corr = exp(run_max - new_max);
    float local_sum = 0;
    for (int j = tid; j < cn; j += 64) {
      sc[j] = exp(sc[j] - new_max);
      local_sum += sc[j];
    }
    run_sum = run_sum * corr + reduce(local_sum, false);  // reduce's barriers publish sc[]
    for (int i = 0; i < 4; ++i) {
      const int e = tid + 64 * i;
      if (e >= p.hd) break;
      float a = acc[i] * corr;
      for (int j = 0; j < cn; ++j) a += sc[j] * vat((row0 + uint(c0 + j)) * uint(p.rsv), e);
      acc[i] = a;
    }
    run_max = new_max;
    barrier();
  }
  for (int i = 0; i < 4; ++i) {
    const int e = tid + 64 * i;
    if (e < p.hd) o[qo + e] = acc[i] / run_sum;
  }
}
