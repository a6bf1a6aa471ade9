// Linear layers y = x W^T over any weight storage the kernels support.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/dense.h"
#include "util/thread_pool.h"

namespace metharme::ops {

struct Q4Weight;  // ops/q4_linear.h
struct I8Weight;  // ops/i8_linear.h

// Dense weight [n_out][n_in] row-major, row stride `ld` elements; usually points into the mmap.
struct DenseWeight {
  kernels::WType type = kernels::WType::kF32;
  const void* data = nullptr;
  int64_t ld = 0;
};

struct Linear {
  enum class Kind : uint8_t { kNone, kDense, kQ4, kI8 };
  Kind kind = Kind::kNone;
  int n_out = 0;  // N
  int n_in = 0;   // K
  DenseWeight dense;
  std::shared_ptr<const Q4Weight> q4;  // repacked int4 weights (ops/q4_linear.h), when kind == kQ4
  std::shared_ptr<const I8Weight> i8;  // int8-code weights (ops/i8_linear.h), when kind == kI8
  std::vector<uint8_t> owned;      // storage for converted dense weights, if not mapped

  size_t weight_bytes() const;     // bytes read per use (for bandwidth figures)
  std::string describe() const;    // "f16", "q4 g128", ...
};

Linear make_dense_linear(kernels::WType type, const void* data, int n_out, int n_in);
// Linears over repacked weights; N and K are the weight's own.
Linear make_q4_linear(std::shared_ptr<const Q4Weight> w);
Linear make_i8_linear(std::shared_ptr<const I8Weight> w);

// y[m][n] = sum_k x[m][k] W[n][k] for m < M; x is [M][n_in], y is [M][n_out] (row strides = widths).
void linear(const Linear& w, const float* x, int M, float* y, ThreadPool& pool);

// Several linears that read the same x, in one parallel job (q/k/v, gate/up).
struct LinearOut {
  const Linear* w;
  float* y;
};
void linear_multi(const LinearOut* outs, int n_outs, const float* x, int M, ThreadPool& pool);

}  // namespace metharme::ops
