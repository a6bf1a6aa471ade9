// y[m][n] = sum_k W[n][k] x[m][perm[k]] (+ bias[n]) over the repacked int4 layout of
// kernels/q4.h, plus (n_blocks > 0: GGUF Q4_1 / Q4_K, identity row order) the per-block offsets
// sum_b offsets[n][b] * sum of x[m][32b .. 32b+31]. One workgroup: 8 output columns (half a
// tile) x up to 4 rows m; its 64 invocations split the k steps and meet in reduce_acc()
// (matmul_reduce.glsl: shared memory, or subgroupAdd in the _sg build).
// A tile of 16 columns holds kp/8 steps of 16 words; word (8h + c) of step o is column
// 16t + 8h + c, its byte i has k = 8o + i in the low nibble and k = 8o + 4 + i in the high one.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "matmul_reduce.glsl"
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer Qs { uint qs[]; };
layout(std430, binding = 1) readonly buffer Scales { float scales[]; };  // [tiles][groups][16]
layout(std430, binding = 2) readonly buffer Zeros { uint zeros[]; };     // u8, same shape
layout(std430, binding = 3) readonly buffer Perm { int perm[]; };        // [kp], -1 = padding
layout(std430, binding = 4) readonly buffer Bias { float bias[]; };
layout(std430, binding = 5) readonly buffer X { float x[]; };
layout(std430, binding = 6) writeonly buffer Y { float y[]; };
layout(std430, binding = 7) readonly buffer Off { float offs[]; };  // [n][n_blocks]
layout(push_constant) uniform P { int n, kp, gs, n_groups, M, ldx, ldy, has_bias, n_blocks; } p;

void main() {
  const int col0 = 8 * int(gl_WorkGroupID.x + gl_NumWorkGroups.x * gl_WorkGroupID.z);
  if (col0 >= p.n) return;
  const int tid = int(gl_LocalInvocationID.x);
  const int m0 = int(gl_WorkGroupID.y) * 4, rows = min(4, p.M - m0);
  const int t = col0 / 16, h = (col0 % 16) / 8, steps = p.kp / 8;
  const uint base = uint(t) * uint(steps) * 16u + uint(h * 8);
  float acc[32];
  for (int i = 0; i < 32; ++i) acc[i] = 0;
  for (int o = tid; o < steps; o += 64) {
    const int k0 = o * 8;
    float xv[32];  // [row][8 activations of this step]
    for (int j = 0; j < 8; ++j) {
      const int src = perm[k0 + j];
      for (int r = 0; r < 4; ++r) xv[r * 8 + j] = (src >= 0 && r < rows) ? x[(m0 + r) * p.ldx + src] : 0.0;
    }
    const uint gbase = uint((t * p.n_groups + k0 / p.gs) * 16 + h * 8);
    const int blk = k0 / 32;
    float xs[4];  // this step's share of each row's block sum (offsets only)
    for (int r = 0; r < 4; ++r) {
      xs[r] = 0.0;
      for (int j = 0; j < 8; ++j) xs[r] += xv[r * 8 + j];
    }
    for (int c = 0; c < 8; ++c) {
      const uint wd = qs[base + uint(o) * 16u + uint(c)];
      const uint gi = gbase + uint(c);
      const float s = scales[gi];
      const float z = float((zeros[gi >> 2] >> (8u * (gi & 3u))) & 0xFFu);
      float w[8];
      for (int i = 0; i < 4; ++i) {
        w[i] = s * (float((wd >> (8 * i)) & 0xFu) - z);
        w[4 + i] = s * (float((wd >> (8 * i + 4)) & 0xFu) - z);
      }
      const float off = blk < p.n_blocks && col0 + c < p.n ? offs[(col0 + c) * p.n_blocks + blk] : 0.0;
      for (int r = 0; r < rows; ++r) {
        float a = off * xs[r];
        for (int j = 0; j < 8; ++j) a += w[j] * xv[r * 8 + j];
        acc[r * 8 + c] += a;
      }
    }
  }
  const float s = reduce_acc(acc, tid, rows);
  if (tid < rows * 8) {
    const int r = tid / 8, col = col0 + tid % 8;
    if (col < p.n) y[(m0 + r) * p.ldy + col] = s + (p.has_bias != 0 ? bias[col] : 0.0);
  }
}
