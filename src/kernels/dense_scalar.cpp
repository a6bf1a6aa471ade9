// Reference kernels: plain loops, the oracle for every optimized twin.
#include <cmath>
#include <cstring>

#include "kernels/dense.h"
#include "kernels/selftest.h"
#include "util/fast_exp.h"
#include "util/half.h"

namespace metharme::kernels {

namespace {

inline float load(WType wt, const void* p, int64_t i) {
  switch (wt) {
    case WType::kF32: return static_cast<const float*>(p)[i];
    case WType::kF16: return fp16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case WType::kBF16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
  }
  return 0;
}

void gemm(WType wt, const void* w, int64_t ldw, const float* x, int64_t ldx, float* y, int64_t ldy, int M, int K,
          int n0, int n1) {
  for (int m = 0; m < M; ++m) {
    for (int n = n0; n < n1; ++n) {
      double acc = 0;
      for (int k = 0; k < K; ++k) acc += double(x[m * ldx + k]) * double(load(wt, w, n * ldw + k));
      y[m * ldy + n] = float(acc);
    }
  }
}

void gemv_t(WType wt, const void* v, int64_t ldv, const float* p, int n, int K, float* y) {
  for (int k = 0; k < K; ++k) {
    double acc = 0;
    for (int j = 0; j < n; ++j) acc += double(p[j]) * double(load(wt, v, j * ldv + k));
    y[k] += float(acc);
  }
}

void to_f32(WType wt, const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = load(wt, src, i);
}

void from_f32(WType wt, const float* src, void* dst, int64_t n) {
  switch (wt) {
    case WType::kF32: std::memcpy(dst, src, size_t(n) * 4); break;
    case WType::kF16:
      for (int64_t i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[i] = f32_to_fp16(src[i]);
      break;
    case WType::kBF16:
      for (int64_t i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[i] = f32_to_bf16(src[i]);
      break;
  }
}

void silu_mul(float* a, const float* b, int n) {
  for (int i = 0; i < n; ++i) {
    float g = a[i];
    a[i] = g / (1.0f + exp_fast_edges(-g)) * b[i];
  }
}

}  // namespace

const DenseKernels& dense_kernels_scalar() {
  static const DenseKernels k{gemm, gemv_t, to_f32, from_f32, silu_mul};
  return k;
}

size_t wtype_size(WType t) { return t == WType::kF32 ? 4 : 2; }

const DenseKernels& dense_kernels(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return dense_kernels_avx512();
    case Isa::kAvx2: return dense_kernels_avx2();
    case Isa::kScalar: break;
  }
  return dense_kernels_scalar();
}

const DenseKernels& dense_kernels() { return dense_kernels(checked_isa(dense_family())); }

}  // namespace metharme::kernels
