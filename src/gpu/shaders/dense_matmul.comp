// y[m][n] = sum_k W[n][k] x[m][k] for W stored f32 (wtype 0), f16 (1) or bf16 (2), row stride
// ldw elements: one workgroup per output column n and block of up to 8 rows m.
#version 450
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer W { uint w[]; };
layout(std430, binding = 1) readonly buffer X { float x[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P { int n, k, M, ldw, ldx, ldy, wtype; } p;

shared float red[8][64];

float wat(uint e) {
  if (p.wtype == 0) return uintBitsToFloat(w[e]);
  const uint h = (w[e >> 1] >> (16u * (e & 1u))) & 0xFFFFu;
  if (p.wtype == 1) return unpackHalf2x16(h).x;
  return uintBitsToFloat(h << 16);
}

void main() {
  const int col = int(gl_WorkGroupID.x + gl_NumWorkGroups.x * gl_WorkGroupID.z);
  if (col >= p.n) return;
  const int tid = int(gl_LocalInvocationID.x);
  const int m0 = int(gl_WorkGroupID.y) * 8, rows = min(8, p.M - m0);
  const uint row = uint(col) * uint(p.ldw);
  float acc[8] = float[8](0, 0, 0, 0, 0, 0, 0, 0);
  for (int k = tid; k < p.k; k += 64) {
    const float wk = wat(row + uint(k));
    for (int r = 0; r < rows; ++r) acc[r] += wk * x[(m0 + r) * p.ldx + k];
  }
  for (int r = 0; r < 8; ++r) red[r][tid] = acc[r];
  barrier();
  for (int h = 32; h > 0; h >>= 1) {
    if (tid < h)
      for (int r = 0; r < 8; ++r) red[r][tid] += red[r][tid + h];
    barrier();
  }
  if (tid < rows) y[(m0 + tid) * p.ldy + col] = red[tid][0];
}
