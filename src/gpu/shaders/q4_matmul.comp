// y[m][n] = sum_k W[n][k] x[m][perm[k]] (+ bias[n]) over the repacked int4 layout of
// kernels/q4.h: one workgroup per output column n and block of up to 8 rows m.
// A tile of 16 columns holds kp/8 steps of 16 words; word (8h + c) of step o is column
// 16t + 8h + c, its byte i has k = 8o + i in the low nibble and k = 8o + 4 + i in the high one.
#version 450
layout(local_size_x = 64) in;
layout(std430, binding = 0) readonly buffer Qs { uint qs[]; };
layout(std430, binding = 1) readonly buffer Scales { float scales[]; };  // [tiles][groups][16]
layout(std430, binding = 2) readonly buffer Zeros { uint zeros[]; };     // u8, same shape
layout(std430, binding = 3) readonly buffer Perm { int perm[]; };        // [kp], -1 = padding
layout(std430, binding = 4) readonly buffer Bias { float bias[]; };
layout(std430, binding = 5) readonly buffer X { float x[]; };
layout(std430, binding = 6) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P { int n, kp, gs, n_groups, M, ldx, ldy, has_bias; } p;

shared float red[8][64];

void main() {
  const int col = int(gl_WorkGroupID.x + gl_NumWorkGroups.x * gl_WorkGroupID.z);
  if (col >= p.n) return;
  const int tid = int(gl_LocalInvocationID.x);
  const int m0 = int(gl_WorkGroupID.y) * 8, rows = min(8, p.M - m0);
  const int t = col / 16, c = col % 16, steps = p.kp / 8;
  const uint base = uint(t) * uint(steps) * 16u + uint(c);  // c = 8h + c' is the word in a step
  float acc[8] = float[8](0, 0, 0, 0, 0, 0, 0, 0);
  for (int o = tid; o < steps; o += 64) {
    const uint wd = qs[base + uint(o) * 16u];
    const int k0 = o * 8;
    const uint gi = uint((t * p.n_groups + k0 / p.gs) * 16 + c);
    const float s = scales[gi];
    const float z = float((zeros[gi >> 2] >> (8u * (gi & 3u))) & 0xFFu);
    float w[8];
    int src[8];
    for (int i = 0; i < 4; ++i) {
      w[i] = s * (float((wd >> (8 * i)) & 0xFu) - z);
      w[4 + i] = s * (float((wd >> (8 * i + 4)) & 0xFu) - z);
    }
    for (int j = 0; j < 8; ++j) src[j] = perm[k0 + j];
    for (int r = 0; r < rows; ++r) {
      const int xr = (m0 + r) * p.ldx;
      float a = 0;
      for (int j = 0; j < 8; ++j)
        if (src[j] >= 0) a += w[j] * x[xr + src[j]];
      acc[r] += a;
    }
  }
  for (int r = 0; r < 8; ++r) red[r][tid] = acc[r];
  barrier();
  for (int h = 32; h > 0; h >>= 1) {
    if (tid < h)
      for (int r = 0; r < 8; ++r) red[r][tid] += red[r][tid + h];
    barrier();
  }
  if (tid < rows) y[(m0 + tid) * p.ldy + col] = red[tid][0] + (p.has_bias != 0 ? bias[col] : 0.0);
}
