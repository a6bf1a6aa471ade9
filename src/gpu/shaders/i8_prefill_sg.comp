// The int8-code product of i8_matmul.comp (same bindings and push constants) for prefill, M > 8
// rows, with subgroup operations, as q4_prefill_sg.comp does for int4: each invocation owns one
// row m and walks all of k for 8 output columns (half a tile), so a workgroup reads its columns'
// codes once per 64 rows, with no reduction. Per two steps (8 k), lanes 0..7 of each subgroup
// load the 16 code words, scales and adds, and subgroupShuffle hands them to every lane. Needs
// subgroups of 8 or more invocations with shuffle.
#version 450
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
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
  const int m = int(gl_WorkGroupID.y) * 64 + int(gl_LocalInvocationID.x);
  const bool live = m < p.M;  // dead lanes still take part in the shuffles
  const int xrow = (live ? m : 0) * p.ldx;
  const uint lane = gl_SubgroupInvocationID & 7u;  // the column this lane loads
  const int t = col0 / 16, h = (col0 % 16) / 8, steps = p.kp / 4;
  float acc[8];
  for (int c = 0; c < 8; ++c) acc[c] = 0;
  // Two steps (8 k, in one block of sb >= 16 rows: one scale, one add) per pass; kp is a multiple
  // of 32, so the step count is even.
  for (int o = 0; o < steps; o += 2) {
    const int k0 = o * 4;
    const uint w0 = (uint(t) * uint(steps) + uint(o)) * 16u + uint(h * 8) + lane;
    const uint my_lo = qs[w0], my_hi = qs[w0 + 16u];
    const float my_s = scales[uint((t * (p.kp / p.sb) + k0 / p.sb) * 16 + h * 8) + lane];
    const float my_a = p.has_adds != 0 ? adds[uint((t * (p.kp / 32) + k0 / 32) * 16 + h * 8) + lane] : 0.0;
    float xv[8];
    for (int j = 0; j < 8; ++j) xv[j] = (k0 + j < p.k && live) ? x[xrow + k0 + j] : 0.0;
    for (int c = 0; c < 8; ++c) {
      const int lo = int(subgroupShuffle(my_lo, uint(c))), hi = int(subgroupShuffle(my_hi, uint(c)));
      const float s = subgroupShuffle(my_s, uint(c)), a = subgroupShuffle(my_a, uint(c));
      float sum = 0;
      for (int i = 0; i < 4; ++i) {
        sum += (s * float(bitfieldExtract(lo, 8 * i, 8)) + a) * xv[i];
        sum += (s * float(bitfieldExtract(hi, 8 * i, 8)) + a) * xv[4 + i];
      }
      acc[c] += sum;
    }
  }
  if (!live) return;
  for (int c = 0; c < 8 && col0 + c < p.n; ++c) y[m * p.ldy + col0 + c] = acc[c];
}
