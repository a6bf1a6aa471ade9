// The int4 product of q4_matmul.comp (same bindings and push constants) for prefill, M > 8 rows,
// with subgroup operations: each invocation owns one row m and walks all of k for 8 output
// columns (half a tile), so a workgroup reads its columns' codes once per 64 rows (q4_matmul.comp
// reads them once per 4) and needs no reduction. Per step of 8 k, lanes 0..7 of each subgroup load
// the 8 code words, scales, zero points, row-order entries and block offsets, and subgroupShuffle
// hands them to every lane. Needs subgroups of 8 or more invocations with shuffle.
#version 450
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
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
  const int m = int(gl_WorkGroupID.y) * 64 + int(gl_LocalInvocationID.x);
  const bool live = m < p.M;  // dead lanes still take part in the shuffles
  const int xrow = (live ? m : 0) * p.ldx;
  const uint lane = gl_SubgroupInvocationID & 7u;  // the column (and k of the step) this lane loads
  const int t = col0 / 16, h = (col0 % 16) / 8, steps = p.kp / 8;
  const uint base = uint(t) * uint(steps) * 16u + uint(h * 8) + lane;
  const int ocol = min(col0 + int(lane), p.n - 1);  // offsets exist for real columns only
  float acc[8];
  for (int c = 0; c < 8; ++c) acc[c] = 0;
  for (int o = 0; o < steps; ++o) {
    const int k0 = o * 8, blk = k0 / 32;
    const uint my_wd = qs[base + uint(o) * 16u];
    const uint gi = uint((t * p.n_groups + k0 / p.gs) * 16 + h * 8) + lane;
    const float my_s = scales[gi];
    const float my_z = float((zeros[gi >> 2] >> (8u * (gi & 3u))) & 0xFFu);
    const int my_src = perm[k0 + int(lane)];
    const float my_off = blk < p.n_blocks ? offs[ocol * p.n_blocks + blk] : 0.0;
    float xv[8];
    float xs = 0;  // this step's share of the row's block sum (offsets only)
    for (int j = 0; j < 8; ++j) {
      const int src = subgroupShuffle(my_src, uint(j));
      xv[j] = (src >= 0 && live) ? x[xrow + src] : 0.0;
      xs += xv[j];
    }
    for (int c = 0; c < 8; ++c) {
      const uint wd = subgroupShuffle(my_wd, uint(c));
      const float s = subgroupShuffle(my_s, uint(c)), z = subgroupShuffle(my_z, uint(c));
      float a = subgroupShuffle(my_off, uint(c)) * xs;
      for (int i = 0; i < 4; ++i) {
        a += s * (float((wd >> (8 * i)) & 0xFu) - z) * xv[i];
        a += s * (float((wd >> (8 * i + 4)) & 0xFu) - z) * xv[4 + i];
      }
      acc[c] += a;
    }
  }
  if (!live) return;
  for (int c = 0; c < 8 && col0 + c < p.n; ++c)
    y[m * p.ldy + col0 + c] = acc[c] + (p.has_bias != 0 ? bias[col0 + c] : 0.0);
}
