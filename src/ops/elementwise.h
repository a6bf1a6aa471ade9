// Small vector ops of the forward pass (norms, activations, softmax). fp32 throughout.
#pragma once

#include <cstdint>

namespace metharme::ops {

// out = w * x / sqrt(mean(x^2) + eps), n elements (out may alias x).
void rmsnorm(const float* x, const float* w, float eps, int n, float* out);
// a = silu(a) * b, n elements (SwiGLU: silu(gate) * up).
void silu_mul(float* a, const float* b, int n);
// y += x
void add(float* y, const float* x, int n);
// In-place softmax of x[0..n) scaled by `scale` first; returns log(sum exp) of the scaled values
// relative to their max (so log_softmax = scale*x - max - returned).
float softmax(float* x, int n, float scale = 1.0f);
// log-sum-exp of x[0..n) computed in double.
double logsumexp(const float* x, int n);

}  // namespace metharme::ops
