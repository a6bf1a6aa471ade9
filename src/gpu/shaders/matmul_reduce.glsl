// The last step of the matmul shaders: each of the 64 invocations holds partial sums acc[r * 8 + c]
// for (row r, column c) of its share of k; reduce_acc() returns the full sum of entry `tid` to
// invocation tid < 8 * rows (others get 0). Built twice: plain (one shared-memory array of every
// invocation's partials) and with -DSUBGROUPS (subgroupAdd inside each subgroup, then one value per
// subgroup in shared memory). The subgroup build needs subgroups of at least 4 invocations, so a
// workgroup has at most 16 of them; any size from 4 up (also one wider than the workgroup) works.
#ifdef SUBGROUPS
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
shared float red[32][16];  // [row * 8 + column][subgroup]
#else
shared float red[32][64];  // [row * 8 + column][invocation]
#endif

// The loops over acc run to 32, not 8 * rows: with a constant bound they unroll and acc stays in
// registers (a run-time bound made lavapipe's subgroup build 20% slower).
float reduce_acc(float acc[32], int tid, int rows) {
  const int used = rows * 8;
#ifdef SUBGROUPS
  for (int i = 0; i < 32; ++i) {
    const float s = subgroupAdd(acc[i]);
    if (gl_SubgroupInvocationID == 0u) red[i][gl_SubgroupID] = s;
  }
  barrier();
  float s = 0;
  if (tid < used)
    for (uint g = 0; g < gl_NumSubgroups; ++g) s += red[tid][g];
  return s;
#else
  for (int i = 0; i < 32; ++i) red[i][tid] = acc[i];
  barrier();
  float s = 0;
  if (tid < used)
    for (int i = 0; i < 64; ++i) s += red[tid][i];
  return s;
#endif
}
