// y[m][n] = sum_k W[n][k] x[m][k] over the int8-code layout of kernels/i8w.h (GGUF Q8_0, Q5_K,
// Q6_K): W[n][k] = scale[n][k / sb] * code[n][k] + add[n][k / 32]. One workgroup: 8 output
// columns (half a tile) x up to 4 rows m; its 64 invocations split the k steps and meet in
// reduce_acc() (matmul_reduce.glsl: shared memory, or subgroupAdd in the _sg build).
// Step o of tile t holds k = 4o..4o+3: word c (byte i = k 4o + i, signed) is column 16t + c.
#version 450
#extension GL_GOOGLE_include_directive : require
#include "matmul_reduce.glsl"
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer Qs { uint qs[]; };          // [tiles][kp/4][16] words
layout(std430, binding = 1) readonly buffer Scales { float scales[]; };  // [tiles][kp/sb][16]
layout(std430, binding = 2) readonly buffer Adds { float adds[]; };      // [tiles][kp/32][16]
layout(std430, binding = 3) readonly buffer X { float x[]; };
layout(std430, binding = 4) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P { int n, kp, sb, k, M, ldx, ldy, has_adds; } p;

void main() {
  const int col0 = 8 * int(gl_WorkGroupID.x + gl_NumWorkGroups.x * gl_WorkGroupID.z);
  if (col0 >= p.n) return;
  const int tid = int(gl_LocalInvocationID.x);
  const int m0 = int(gl_WorkGroupID.y) * 4, rows = min(4, p.M - m0);
  const int t = col0 / 16, h = (col0 % 16) / 8, steps = p.kp / 4;
  float acc[32];
  for (int i = 0; i < 32; ++i) acc[i] = 0;
  for (int o = tid; o < steps; o += 64) {
    const int k0 = o * 4;
    float xv[16];  // [row][4 activations of this step]
    for (int j = 0; j < 4; ++j)
      for (int r = 0; r < 4; ++r) xv[r * 4 + j] = (k0 + j < p.k && r < rows) ? x[(m0 + r) * p.ldx + k0 + j] : 0.0;
    const uint sbase = uint((t * (p.kp / p.sb) + k0 / p.sb) * 16 + h * 8);
    const uint abase = uint((t * (p.kp / 32) + k0 / 32) * 16 + h * 8);
    for (int c = 0; c < 8; ++c) {
      const uint wd = qs[(uint(t) * uint(steps) + uint(o)) * 16u + uint(h * 8 + c)];
      const float s = scales[sbase + uint(c)];
      const float a = p.has_adds != 0 ? adds[abase + uint(c)] : 0.0;
      float w[4];
      for (int i = 0; i < 4; ++i) w[i] = s * float(bitfieldExtract(int(wd), 8 * i, 8)) + a;
      for (int r = 0; r < rows; ++r) {
        float sum = 0;
        for (int j = 0; j < 4; ++j) sum += w[j] * xv[r * 4 + j];
        acc[r * 8 + c] += sum;
      }
    }
  }
  const float s = reduce_acc(acc, tid, rows);
  if (tid < rows * 8) {
    const int r = tid / 8, col = col0 + tid % 8;
    if (col < p.n) y[(m0 + r) * p.ldy + col] = s;
  }
}
