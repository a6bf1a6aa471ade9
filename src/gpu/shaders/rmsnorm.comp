// out[m] = w * x[m] / sqrt(mean(x[m]^2) + eps): one workgroup per row (out may alias x).
#version 450
layout(local_size_x = 256) in;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer Wt { float w[]; };
layout(std430, binding = 2) writeonly buffer O { float o[]; };
layout(push_constant) uniform P { int M, d, ldx, ldo; float eps; } p;

shared float red[256];

void main() {
  const int m = int(gl_WorkGroupID.x + gl_NumWorkGroups.x * gl_WorkGroupID.z);
  if (m >= p.M) return;
  const int tid = int(gl_LocalInvocationID.x);
  float ss = 0;
  for (int i = tid; i < p.d; i += 256) {
    const float v = x[m * p.ldx + i];
    ss += v * v;
  }
  red[tid] = ss;
  barrier();
  for (int h = 128; h > 0; h >>= 1) {
    if (tid < h) red[tid] += red[tid + h];
    barrier();
  }
  const float inv = inversesqrt(red[0] / float(p.d) + p.eps);
  for (int i = tid; i < p.d; i += 256) o[m * p.ldo + i] = w[i] * (x[m * p.ldx + i] * inv);
}
