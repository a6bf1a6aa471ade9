// Stores rows k[m], v[m] ([kv_heads*hd] each) into one layer's cache at (seq, head, pos):
// cache [n_seq][kv_heads][n_ctx][hd] in f32 (type 0) or f16 (type 1, two per word).
// One invocation per (row, head, pair of elements).
#version 450
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer K { float k[]; };
layout(std430, binding = 1) readonly buffer V { float v[]; };
layout(std430, binding = 2) buffer KC { uint kc[]; };
layout(std430, binding = 3) buffer VC { uint vc[]; };
layout(std430, binding = 4) readonly buffer Tok { int tok[]; };
layout(push_constant) uniform P { int M, kv_heads, hd, n_ctx, type; } p;

void main() {
  const int pairs = p.hd / 2;
  const int id = int(gl_GlobalInvocationID.x + gl_NumWorkGroups.x * 64u * gl_WorkGroupID.z);
  if (id >= p.M * p.kv_heads * pairs) return;
  const int e = 2 * (id % pairs), h = (id / pairs) % p.kv_heads, m = id / (pairs * p.kv_heads);
  const int pos = tok[2 * m], seq = tok[2 * m + 1];
  const int src = m * p.kv_heads * p.hd + h * p.hd + e;
  const uint dst = uint(((seq * p.kv_heads + h) * p.n_ctx + pos) * p.hd + e);
  if (p.type == 0) {
    kc[dst] = floatBitsToUint(k[src]);
    kc[dst + 1] = floatBitsToUint(k[src + 1]);
    vc[dst] = floatBitsToUint(v[src]);
    vc[dst + 1] = floatBitsToUint(v[src + 1]);
  } else {
    kc[dst / 2] = packHalf2x16(vec2(k[src], k[src + 1]));
    vc[dst / 2] = packHalf2x16(vec2(v[src], v[src + 1]));
  }
}
