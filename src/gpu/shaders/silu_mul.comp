// a[i] = silu(a[i]) * b[i] = a[i] / (1 + exp(-a[i])) * b[i] (the SwiGLU gate).
#version 450
layout(local_size_x = 64) in;
layout(std430, binding = 0) buffer A { float a[]; };
layout(std430, binding = 1) readonly buffer B { float b[]; };
layout(push_constant) uniform P { int n; } p;

void main() {
  const int i = int(gl_GlobalInvocationID.x + gl_NumWorkGroups.x * 64u * gl_WorkGroupID.z);
  if (i >= p.n) return;
  const float v = a[i];
  a[i] = v / (1.0 + exp(-v)) * b[i];
}
