#include "ops/linear.h"

#include <cblas.h>

#include <algorithm>

#include "ops/i8_linear.h"
#include "ops/q4_linear.h"
#include "util/error.h"

namespace metharme::ops {

using kernels::WType;

namespace {

// Prefill path: at or above this many rows a dense matmul converts a panel of weight rows to f32
// and hands it to OpenBLAS's sgemm, which beats our row-dot kernels by a wide margin.
constexpr int kGemmMinRows = 16;
constexpr int kPanelRows = 64;

void dense_range(const Linear& w, const float* x, int M, float* y, int n0, int n1) {
  const auto& k = kernels::dense_kernels();
  if (M < kGemmMinRows) {
    k.gemm(w.dense.type, w.dense.data, w.dense.ld, x, w.n_in, y, w.n_out, M, w.n_in, n0, n1);
    return;
  }
  const int K = w.n_in;
  if (w.dense.type == WType::kF32) {
    // Panels of kPanelRows whatever the range: OpenBLAS picks its kernel (and so the rounding) by
    // shape, so a range-wide call would make the output depend on the thread count.
    const float* W = static_cast<const float*>(w.dense.data);
    for (int p0 = n0; p0 < n1; p0 += kPanelRows)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, std::min(kPanelRows, n1 - p0), K, 1.0f, x, K,
                  W + int64_t(p0) * w.dense.ld, int(w.dense.ld), 0.0f, y + p0, w.n_out);
    return;
  }
  // One panel per thread, grown once: the decode loop never comes here.
  thread_local std::vector<float> panel;
  if (panel.size() < size_t(kPanelRows) * size_t(K)) panel.resize(size_t(kPanelRows) * size_t(K));
  size_t es = kernels::wtype_size(w.dense.type);
  for (int p0 = n0; p0 < n1; p0 += kPanelRows) {
    int rows = std::min(kPanelRows, n1 - p0);
    for (int r = 0; r < rows; ++r)
      k.to_f32(w.dense.type, static_cast<const uint8_t*>(w.dense.data) + (int64_t(p0 + r) * w.dense.ld) * int64_t(es),
               panel.data() + int64_t(r) * K, K);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, rows, K, 1.0f, x, K, panel.data(), K, 0.0f, y + p0,
                w.n_out);
  }
}

// Our ThreadPool splits every matmul; OpenBLAS must not start threads of its own underneath
// (two of our threads inside a multi-threaded OpenBLAS call can deadlock).
void blas_single_threaded() {
  static const bool once = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)once;
}

int range_align(int M) { return M < kGemmMinRows ? 8 : kPanelRows; }

}  // namespace

size_t Linear::weight_bytes() const {
  switch (kind) {
    case Kind::kDense: return size_t(n_out) * size_t(n_in) * kernels::wtype_size(dense.type);
    case Kind::kQ4: return q4_weight_bytes(*q4);
    case Kind::kI8: return i8_weight_bytes(*i8);
    case Kind::kNone: break;
  }
  return 0;
}

std::string Linear::describe() const {
  switch (kind) {
    case Kind::kDense: return dense.type == WType::kF32 ? "f32" : dense.type == WType::kF16 ? "f16" : "bf16";
    case Kind::kQ4: return q4_describe(*q4);
    case Kind::kI8: return i8_describe(*i8);
    case Kind::kNone: break;
  }
  return "none";
}

Linear make_dense_linear(WType type, const void* data, int n_out, int n_in) {
  Linear l;
  l.kind = Linear::Kind::kDense;
  l.n_out = n_out;
  l.n_in = n_in;
  l.dense = {type, data, n_in};
  return l;
}

Linear make_q4_linear(std::shared_ptr<const Q4Weight> w) {
  Linear l;
  l.kind = Linear::Kind::kQ4;
  l.n_out = w->n_out;
  l.n_in = w->n_in;
  l.q4 = std::move(w);
  return l;
}

Linear make_i8_linear(std::shared_ptr<const I8Weight> w) {
  Linear l;
  l.kind = Linear::Kind::kI8;
  l.n_out = w->n_out;
  l.n_in = w->n_in;
  l.i8 = std::move(w);
  return l;
}

void linear(const Linear& w, const float* x, int M, float* y, ThreadPool& pool) {
  LinearOut o{&w, y};
  linear_multi(&o, 1, x, M, pool);
}

void linear_multi(const LinearOut* outs, int n_outs, const float* x, int M, ThreadPool& pool) {
  if (M <= 0) return;
  if (M >= kGemmMinRows) blas_single_threaded();
  // int4 layers run through their own path (it prepares activations first).
  bool all_dense = true;
  for (int i = 0; i < n_outs; ++i) {
    MH_CHECK(outs[i].w->kind != Linear::Kind::kNone, "linear layer has no weights");
    if (outs[i].w->kind != Linear::Kind::kDense) all_dense = false;
  }
  if (!all_dense) {
    constexpr int kMaxOuts = 8;
    MH_CHECK(n_outs <= kMaxOuts, "linear_multi: too many linears");
    LinearOut q4[kMaxOuts], i8[kMaxOuts];
    int n_q4 = 0, n_i8 = 0;
    for (int i = 0; i < n_outs; ++i) {
      if (outs[i].w->kind == Linear::Kind::kQ4) q4[n_q4++] = outs[i];
      else if (outs[i].w->kind == Linear::Kind::kI8) i8[n_i8++] = outs[i];
      else linear_multi(&outs[i], 1, x, M, pool);
    }
    q4_linear_multi(q4, n_q4, x, M, pool);
    i8_linear_multi(i8, n_i8, x, M, pool);
    return;
  }
  // Split the concatenated output rows of all linears into aligned chunks, a few per thread.
  const int align = range_align(M);
  int64_t total = 0;
  for (int i = 0; i < n_outs; ++i) total += outs[i].w->n_out;
  const int chunks_per_thread = M < kGemmMinRows ? 4 : 2;
  int64_t n_chunks = std::max<int64_t>(1, std::min<int64_t>(total / align, int64_t(pool.size()) * chunks_per_thread));
  int64_t per = (total + n_chunks - 1) / n_chunks;
  per = (per + align - 1) / align * align;
  // Chunk boundaries never straddle two linears: each linear is cut on its own into
  // ceil(n_out / per) pieces, and task t is found by walking the linears (no per-piece table,
  // so any thread count works and nothing is allocated).
  int n_pieces = 0;
  for (int i = 0; i < n_outs; ++i) n_pieces += int((outs[i].w->n_out + per - 1) / per);
  pool.run(n_pieces, [&](int t, int) {
    int lin = 0;
    for (;; ++lin) {
      const int n = int((outs[lin].w->n_out + per - 1) / per);
      if (t < n) break;
      t -= n;
    }
    const Linear& w = *outs[lin].w;
    const int n0 = int(int64_t(t) * per);
    dense_range(w, x, M, outs[lin].y, n0, int(std::min<int64_t>(w.n_out, n0 + per)));
  });
}

}  // namespace metharme::ops
