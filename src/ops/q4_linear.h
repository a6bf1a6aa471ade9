// 4-bit GPTQ linear layers in the kernels' repacked layout.
#pragma once

#include <string>

#include "ops/linear.h"

namespace metharme::ops {

struct Q4Weight {
  int n_out = 0, n_in = 0, group_size = 0;
};

size_t q4_weight_bytes(const Q4Weight& w);
std::string q4_describe(const Q4Weight& w);
void q4_linear(const Linear& w, const float* x, int M, float* y, ThreadPool& pool);

}  // namespace metharme::ops
