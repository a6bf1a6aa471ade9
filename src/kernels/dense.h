// Kernels over dense float matrices stored as f32, f16 or bf16 (weights, KV cache rows).
// Each ISA fills one DenseKernels table; the scalar table is the reference the tests trust.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/isa.h"

namespace metharme::kernels {

enum class WType : uint8_t { kF32, kF16, kBF16 };

struct DenseKernels {
  // y[m*ldy + n] = sum_k x[m*ldx + k] * W[n*ldw + k]   for m < M, n0 <= n < n1, k < K.
  void (*gemm)(WType wt, const void* w, int64_t ldw, const float* x, int64_t ldx, float* y, int64_t ldy,
               int M, int K, int n0, int n1);
  // y[k] += sum_{j<n} p[j] * V[j*ldv + k]   for k < K.
  void (*gemv_t)(WType wt, const void* v, int64_t ldv, const float* p, int n, int K, float* y);
  // dst[i] = float(src[i]) / src[i] = wt(src[i]) (round to nearest even) for i < n.
  void (*to_f32)(WType wt, const void* src, float* dst, int64_t n);
  void (*from_f32)(WType wt, const float* src, void* dst, int64_t n);
  // a[i] = silu(a[i]) * b[i] = a[i] / (1 + exp(-a[i])) * b[i] for i < n (the SwiGLU gate).
  void (*silu_mul)(float* a, const float* b, int n);
};

const DenseKernels& dense_kernels(Isa isa);
// The table to use: active_isa(), lowered past any ISA whose self-test failed (kernels/selftest.h).
const DenseKernels& dense_kernels();

size_t wtype_size(WType t);

// Per-ISA tables (the ones this build has; calling one the CPU lacks is undefined).
const DenseKernels& dense_kernels_scalar();
const DenseKernels& dense_kernels_avx2();
const DenseKernels& dense_kernels_avx512();  // gemm, gemv_t, to_f32; from_f32 and silu_mul are AVX2's

}  // namespace metharme::kernels
