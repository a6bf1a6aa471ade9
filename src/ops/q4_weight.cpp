// Q4Weight bookkeeping beside the kernels: Q4_K's scale layout, the GPTQ-shaped form of any
// layout (for the GPU), fp32 dequantization in checkpoint order, and sizes and names.
#include <algorithm>

#include "ops/q4_linear.h"
#include "util/error.h"

namespace metharme::ops {

using kernels::kQ4TileCols;

std::vector<float> q4_dequantize(const Q4Weight& w) {
  const auto& m = w.mat;
  std::vector<float> rows(size_t(m.n_tiles) * kQ4TileCols * size_t(m.kp));
  kernels::q4_kernels_scalar().dequant(m, 0, m.n_tiles, rows.data());
  std::vector<float> out(size_t(w.n_out) * size_t(w.n_in), 0.0f);
  for (int n = 0; n < w.n_out; ++n)
    for (int j = 0; j < m.kp; ++j) {
      int k = w.perm.empty() ? (j < w.n_in ? j : -1) : w.perm[size_t(j)];
      if (k >= 0) out[size_t(n) * size_t(w.n_in) + size_t(k)] = rows[size_t(n) * size_t(m.kp) + size_t(j)];
    }
  if (!w.offsets.empty())
    for (int n = 0; n < w.n_out; ++n)
      for (int k = 0; k < w.n_in; ++k)
        out[size_t(n) * size_t(w.n_in) + size_t(k)] += w.offsets[size_t(n) * size_t(w.n_in / 32) + size_t(k / 32)];
  return out;
}

std::vector<int32_t> q4_kernel_rows(const Q4Weight& w) {
  std::vector<int32_t> rows(size_t(w.n_in));
  for (int k = 0; k < w.n_in; ++k) rows[size_t(k)] = k;
  if (!w.perm.empty())
    for (int j = 0; j < int(w.perm.size()); ++j)
      if (w.perm[size_t(j)] >= 0) rows[size_t(w.perm[size_t(j)])] = j;
  return rows;
}

void q4_set_k_scales(Q4Weight& w, std::vector<uint8_t> ksc, std::vector<uint8_t> kmin, std::vector<uint16_t> kd,
                     std::vector<uint16_t> kdmin) {
  kernels::Q4Matrix& m = w.mat;
  const size_t cells = size_t(m.n_tiles) * size_t(m.n_groups) * kQ4TileCols;
  MH_CHECK(m.gs == 32 && m.n_groups % 8 == 0 && w.perm.empty() && ksc.size() == cells && kmin.size() == cells &&
               kd.size() == cells / 8 && kdmin.size() == cells / 8,
           "q4_set_k_scales: shapes do not match the matrix");
  w.scales = {};
  w.scales_f32 = {};
  w.zeros = {};
  w.offsets = {};
  w.ksc = std::move(ksc);
  w.kmin = std::move(kmin);
  w.kd = std::move(kd);
  w.kdmin = std::move(kdmin);
  m.scales = nullptr;
  m.scales_f32 = nullptr;
  m.zeros = nullptr;
  m.uniform_zero = 0;
  m.ksc = w.ksc.data();
  m.kmin = w.kmin.data();
  m.kd = w.kd.data();
  m.kdmin = w.kdmin.data();
}

Q4Groups q4_groups(const Q4Weight& w) {
  const kernels::Q4Matrix& m = w.mat;
  const size_t cells = size_t(m.n_tiles) * size_t(m.n_groups) * kQ4TileCols;
  Q4Groups g;
  g.scales.resize(cells);
  g.zeros.resize(cells);
  for (size_t i = 0; i < cells; ++i) {
    g.scales[i] = kernels::q4_scale_at(m, i);
    g.zeros[i] = uint8_t(kernels::q4_zero_at(m, i));
  }
  if (!m.ksc) {
    g.offsets = w.offsets;
    return g;
  }
  // Q4_K's mins become per-32-row offsets [N][n_groups] (gs 32, identity row order).
  g.offsets.resize(size_t(w.n_out) * size_t(m.n_groups));
  for (size_t i = 0; i < cells; ++i) {  // i = (t * n_groups + grp) * 16 + c
    const size_t n = i / kQ4TileCols / size_t(m.n_groups) * kQ4TileCols + i % kQ4TileCols;
    if (n < size_t(w.n_out))
      g.offsets[n * size_t(m.n_groups) + i / kQ4TileCols % size_t(m.n_groups)] = -kernels::q4_min_at(m, i);
  }
  return g;
}

size_t q4_weight_bytes(const Q4Weight& w) {
  return w.qs.size() + w.scales.size() * sizeof(uint16_t) + w.scales_f32.size() * sizeof(float) + w.zeros.size() +
         w.bias.size() * sizeof(float) + w.offsets.size() * sizeof(float) + w.ksc.size() + w.kmin.size() +
         (w.kd.size() + w.kdmin.size()) * sizeof(uint16_t);
}

std::string q4_describe(const Q4Weight& w) {
  std::string s = w.group_size >= w.n_in ? "q4" : cat("q4 g", w.group_size);
  if (!w.offsets.empty()) s += " +offsets";
  if (w.mat.ksc) s += " q4_k scales";
  if (w.act_order) s += " act-order";
  return s;
}

}  // namespace metharme::ops
