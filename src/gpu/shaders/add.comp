// y[i] += x[i] (the residual connection).
#version 450
layout(local_size_x = 64) in;
layout(std430, binding = 0) buffer Y { float y[]; };
layout(std430, binding = 1) readonly buffer X { float x[]; };
layout(push_constant) uniform P { int n; } p;

void main() {
  const int i = int(gl_GlobalInvocationID.x + gl_NumWorkGroups.x * 64u * gl_WorkGroupID.z);
  if (i >= p.n) return;
  y[i] += x[i];
}
