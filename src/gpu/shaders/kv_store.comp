// Stores rows k[m], v[m] ([kv_heads*hd] each) into one layer's cache at (seq, head, pos). Cache:
// rows [n_seq][kv_heads][n_ctx] of rsk / rsv bytes (a multiple of 4), each row one of
//   type 0 f32, 1 f16, 2 q8, 3 q4: the row layouts of kernels/kv.h (blocks of 32 with an fp16
//   scale), quantized by the same rule as the CPU's scalar quantizer; padding bytes are zero.
// One invocation per (row m, kv head): it writes its K and V rows word by word.
#version 450
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer K { float k[]; };
layout(std430, binding = 1) readonly buffer V { float v[]; };
layout(std430, binding = 2) buffer KC { uint kc[]; };
layout(std430, binding = 3) buffer VC { uint vc[]; };
layout(std430, binding = 4) readonly buffer Tok { int tok[]; };
layout(push_constant) uniform P { int M, kv_heads, hd, n_ctx, tk, tv, rsk, rsv; } p;

bool to_k;
uint acc, widx;
int nacc;

void put_word(uint w) {
  if (to_k)
    kc[widx] = w;
  else
    vc[widx] = w;
  ++widx;
}
void put(uint b) {
  acc |= (b & 0xFFu) << (8 * nacc);
  if (++nacc == 4) {
    put_word(acc);
    acc = 0u;
    nacc = 0;
  }
}
float src(int i) { return to_k ? k[i] : v[i]; }

// Round half away from zero, exactly (as lround).
int round_away(float t) {
  const float a = abs(t), f = floor(a);
  const int r = int(f) + (a - f >= 0.5 ? 1 : 0);
  return t < 0.0 ? -r : r;
}

void store_row(int type, uint row_word, int s0) {
  widx = row_word;
  acc = 0u;
  nacc = 0;
  if (type == 0) {
    for (int e = 0; e < p.hd; ++e) put_word(floatBitsToUint(src(s0 + e)));
    return;
  }
  if (type == 1) {
    for (int e = 0; e < p.hd; e += 2) put_word(packHalf2x16(vec2(src(s0 + e), src(s0 + e + 1))));
    return;
  }
  for (int b0 = 0; b0 < p.hd; b0 += 32) {
    const int len = min(32, p.hd - b0);
    float amax = 0.0, mx = 0.0;
    for (int i = 0; i < len; ++i) {
      const float x = src(s0 + b0 + i);
      if (abs(x) > amax) {
        amax = abs(x);
        mx = x;
      }
    }
    const float d = type == 2 ? amax / 127.0 : mx / -8.0;
    const float id = d != 0.0 ? 1.0 / d : 0.0;
    const uint h = packHalf2x16(vec2(d, 0.0)) & 0xFFFFu;
    put(h);
    put(h >> 8);
    if (type == 2) {
      for (int i = 0; i < len; ++i) put(uint(round_away(src(s0 + b0 + i) * id)));
    } else {
      const int half_len = (len + 1) / 2;
      for (int i = 0; i < half_len; ++i) {
        const uint lo = uint(min(15, int(src(s0 + b0 + i) * id + 8.5)));
        const uint hi = i + half_len < len ? uint(min(15, int(src(s0 + b0 + i + half_len) * id + 8.5))) : 8u;
        put(lo | (hi << 4));
      }
    }
  }
  if (nacc > 0) put_word(acc);  // the row's padding
}

void main() {
  const int id = int(gl_GlobalInvocationID.x + gl_NumWorkGroups.x * 64u * gl_WorkGroupID.z);
  if (id >= p.M * p.kv_heads) return;
  const int h = id % p.kv_heads, m = id / p.kv_heads;
  const int pos = tok[2 * m], seq = tok[2 * m + 1];
  const uint row = uint((seq * p.kv_heads + h) * p.n_ctx + pos);
  const int s0 = (m * p.kv_heads + h) * p.hd;
  to_k = true;
  store_row(p.tk, row * uint(p.rsk / 4), s0);
  to_k = false;
  store_row(p.tv, row * uint(p.rsv / 4), s0);
}
