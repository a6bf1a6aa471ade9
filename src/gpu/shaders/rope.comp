// Rotary embedding, "rotate half" layout: in each head element j pairs with j + hd/2 and both turn
// by the angle of (position, j). The angles come as cos/sin tables [pos][hd/2] built on the host
// from the model's per-dimension inverse frequencies (with any RoPE scaling applied there), so the
// device turns exactly as the CPU does. One invocation per (row, head, j).
#version 450
layout(local_size_x = 64) in;
layout(std430, binding = 0) buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer Tok { int tok[]; };  // [M][2]: position, sequence
layout(std430, binding = 2) readonly buffer Cos { float cs[]; };
layout(std430, binding = 3) readonly buffer Sin { float sn[]; };
layout(push_constant) uniform P { int M, ld, n_heads, hd; } p;

void main() {
  const int half_d = p.hd / 2;
  const int id = int(gl_GlobalInvocationID.x + gl_NumWorkGroups.x * 64u * gl_WorkGroupID.z);
  if (id >= p.M * p.n_heads * half_d) return;
  const int j = id % half_d, h = (id / half_d) % p.n_heads, m = id / (half_d * p.n_heads);
  const int pos = tok[2 * m];
  const float c = cs[pos * half_d + j], s = sn[pos * half_d + j];
  const int i0 = m * p.ld + h * p.hd + j;
  const float a = x[i0], b = x[i0 + half_d];
  x[i0] = a * c - b * s;
  x[i0 + half_d] = b * c + a * s;
}
