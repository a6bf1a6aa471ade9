// y[m][n] = sum_k W[n][k] x[m][k] for W stored f32 (wtype 0), f16 (1) or bf16 (2), row stride
// ldw elements. One workgroup: 8 output columns x up to 4 rows m; its 64 invocations split k and
// meet in reduce_acc() (matmul_reduce.glsl: shared memory, or subgroupAdd in the _sg build).
#version 450
#extension GL_GOOGLE_include_directive : require
#include "matmul_reduce.glsl"
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer W { uint w[]; };
layout(std430, binding = 1) readonly buffer X { float x[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P { int n, k, M, ldw, ldx, ldy, wtype; } p;


float wat(uint e) {
  if (p.wtype == 0) return uintBitsToFloat(w[e]);
  const uint h = (w[e >> 1] >> (16u * (e & 1u))) & 0xFFFFu;
  if (p.wtype == 1) return unpackHalf2x16(h).x;
  return uintBitsToFloat(h << 16);
}

void main() {
  const int col0 = 8 * int(gl_WorkGroupID.x + gl_NumWorkGroups.x * gl_WorkGroupID.z);
  if (col0 >= p.n) return;
  const int tid = int(gl_LocalInvocationID.x);
  const int m0 = int(gl_WorkGroupID.y) * 4, rows = min(4, p.M - m0);
  const int cols = min(8, p.n - col0);
  float acc[32];
  for (int i = 0; i < 32; ++i) acc[i] = 0;
  for (int k = tid; k < p.k; k += 64) {
    float xv[4];
    for (int r = 0; r < 4; ++r) xv[r] = r < rows ? x[(m0 + r) * p.ldx + k] : 0.0;
    for (int c = 0; c < cols; ++c) {
      const float wk = wat(uint(col0 + c) * uint(p.ldw) + uint(k));
      for (int r = 0; r < rows; ++r) acc[r * 8 + c] += wk * xv[r];
    }
  }
  const float s = reduce_acc(acc, tid, rows);
  if (tid < rows * 8 && tid % 8 < cols) {
    const int r = tid / 8, col = col0 + tid % 8;
    y[(m0 + r) * p.ldy + col] = s;
  }
}
