#include "ops/i8_linear.h"

#include <cblas.h>

#include <algorithm>
#include <cstring>

#include "kernels/q4.h"
#include "ops/q4_linear.h"
#include "util/error.h"

namespace metharme::ops {

using kernels::kI8StepBytes;
using kernels::kI8StepK;
using kernels::kI8TileCols;

namespace {

size_t tile_bytes(const kernels::I8Matrix& m) { return size_t(m.kp) / kI8StepK * kI8StepBytes; }

template <class T>
void grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

size_t code_index(const I8Weight& w, int n, int k) {
  return size_t(n / kI8TileCols) * tile_bytes(w.mat) + size_t(k / kI8StepK) * kI8StepBytes +
         size_t(n % kI8TileCols) * 4 + size_t(k % 4);
}

}  // namespace

std::shared_ptr<I8Weight> i8_alloc(int n, int k, int sb, bool with_adds, const std::string& kind) {
  MH_CHECK(n > 0 && k > 0 && k % 32 == 0 && (sb == 16 || sb == 32), kind, ": bad int8-code weight shape ", n, "x", k);
  auto w = std::make_shared<I8Weight>();
  w->n_out = n;
  w->n_in = k;
  w->kind = kind;
  auto& m = w->mat;
  m.n = n;
  m.kp = k;
  m.n_tiles = (n + kI8TileCols - 1) / kI8TileCols;
  m.sb = sb;
  w->qs = PageBuffer(size_t(m.n_tiles) * tile_bytes(m));
  w->qs.advise_huge_pages();  // read whole every token, as the int4 tiles (zeroed: padding codes 0)
  w->scales.assign(size_t(m.n_tiles) * size_t(k / sb) * kI8TileCols, 0.0f);
  if (with_adds) w->adds.assign(size_t(m.n_tiles) * size_t(k / 32) * kI8TileCols, 0.0f);
  m.qs = reinterpret_cast<const int8_t*>(w->qs.data());
  m.scales = w->scales.data();
  m.adds = with_adds ? w->adds.data() : nullptr;
  return w;
}

void i8_set_code(I8Weight& w, int n, int k, int8_t code) { w.qs.data()[code_index(w, n, k)] = uint8_t(code); }

void i8_set_codes(I8Weight& w, int n, int k0, const int8_t* codes, int count) {
  MH_CHECK(k0 % kI8StepK == 0 && count % kI8StepK == 0, "i8_set_codes: rows must come in whole steps");
  for (int k = k0; k < k0 + count; k += kI8StepK)  // a step's 4 rows of one column are adjacent
    std::memcpy(w.qs.data() + code_index(w, n, k), codes + (k - k0), kI8StepK);
}

float& i8_scale(I8Weight& w, int n, int k) {
  const int ns = w.mat.kp / w.mat.sb;
  return w
      .scales[(size_t(n / kI8TileCols) * size_t(ns) + size_t(k / w.mat.sb)) * kI8TileCols + size_t(n % kI8TileCols)];
}

float& i8_add(I8Weight& w, int n, int k) {
  const int nb = w.mat.kp / 32;
  return w.adds[(size_t(n / kI8TileCols) * size_t(nb) + size_t(k / 32)) * kI8TileCols + size_t(n % kI8TileCols)];
}

void i8_use_k_scales(I8Weight& w) {
  kernels::I8Matrix& m = w.mat;
  MH_CHECK(m.kp % 256 == 0, w.kind, ": the ", w.kind, " scale layout needs whole 256-row super-blocks");
  const size_t cols = size_t(m.n_tiles) * kI8TileCols, super = cols * size_t(m.kp / 256);
  const bool adds = !w.adds.empty();
  w.ksc.assign(cols * size_t(m.kp / m.sb), 0);
  w.kd.assign(super, 0);
  if (adds) {
    w.kmin.assign(cols * size_t(m.kp / 32), 0);
    w.kdmin.assign(super, 0);
  }
  w.scales = {};
  w.adds = {};
  m.scales = nullptr;
  m.adds = nullptr;
  m.ksc = w.ksc.data();
  m.kd = w.kd.data();
  m.kmin = adds ? w.kmin.data() : nullptr;
  m.kdmin = adds ? w.kdmin.data() : nullptr;
}

namespace {
// Index of column n's entry for rows k in a [n_tiles][kp / rows][16] table.
size_t table_index(const I8Weight& w, int n, int k, int rows) {
  return (size_t(n / kI8TileCols) * size_t(w.mat.kp / rows) + size_t(k / rows)) * kI8TileCols + size_t(n % kI8TileCols);
}
}  // namespace

int8_t& i8_ksc(I8Weight& w, int n, int k) { return w.ksc[table_index(w, n, k, w.mat.sb)]; }
uint8_t& i8_kmin(I8Weight& w, int n, int k) { return w.kmin[table_index(w, n, k, 32)]; }
uint16_t& i8_kd(I8Weight& w, int n, int k) { return w.kd[table_index(w, n, k, 256)]; }
uint16_t& i8_kdmin(I8Weight& w, int n, int k) { return w.kdmin[table_index(w, n, k, 256)]; }

I8Scales i8_scales(const I8Weight& w) {
  const kernels::I8Matrix& m = w.mat;
  if (!m.ksc) return {w.scales, w.adds};
  const int ns = m.kp / m.sb, nb = m.kp / 32;
  I8Scales r;
  r.scales.resize(size_t(m.n_tiles) * size_t(ns) * kI8TileCols);
  if (m.kmin) r.adds.resize(size_t(m.n_tiles) * size_t(nb) * kI8TileCols);
  for (size_t i = 0; i < r.scales.size(); ++i)  // i = (t * ns + j) * 16 + c
    r.scales[i] = kernels::i8_scale_at(m, int(i / kI8TileCols / size_t(ns)), int(i / kI8TileCols % size_t(ns)),
                                       int(i % kI8TileCols));
  for (size_t i = 0; i < r.adds.size(); ++i)
    r.adds[i] = kernels::i8_add_at(m, int(i / kI8TileCols / size_t(nb)), int(i / kI8TileCols % size_t(nb)),
                                   int(i % kI8TileCols));
  return r;
}

void i8_finish(I8Weight& w) {
  bool small = true;
  const auto* q = reinterpret_cast<const int8_t*>(w.qs.data());
  for (size_t i = 0; i < w.qs.size() && small; ++i) small = q[i] >= -32 && q[i] <= 32;
  w.mat.small = small;
}

std::vector<float> i8_dequantize(const I8Weight& w) {
  const auto& m = w.mat;
  std::vector<float> rows(size_t(m.n_tiles) * kI8TileCols * size_t(m.kp));
  kernels::i8_dequant(m, 0, m.n_tiles, rows.data());
  rows.resize(size_t(w.n_out) * size_t(w.n_in));
  return rows;
}

size_t i8_weight_bytes(const I8Weight& w) {
  return w.qs.size() + (w.scales.size() + w.adds.size()) * sizeof(float) + w.ksc.size() + w.kmin.size() +
         (w.kd.size() + w.kdmin.size()) * sizeof(uint16_t);
}

std::string i8_describe(const I8Weight& w) { return w.kind + " (int8 codes)"; }

// ---- execution ------------------------------------------------------------------------------

namespace {

constexpr int kPanelTiles = 4;  // exact mode: 64 columns dequantized per sgemm

// Activations for one K, the calling thread's; buffers only grow (no allocation per token).
struct I8ActBuf {
  int k = 0;
  std::vector<int8_t> q;
  std::vector<float> d;
  std::vector<int32_t> s16, s32;
};

void prepare(I8ActBuf& a, int K, const float* x, int M, ThreadPool& pool) {
  a.k = K;
  grow(a.q, size_t(M) * size_t(K));
  grow(a.d, size_t(M) * size_t(K / 32));
  grow(a.s32, size_t(M) * size_t(K / 32));
  grow(a.s16, size_t(M) * size_t(K / 16));
  const auto& kern = kernels::q4_kernels();
  auto row = [&](int m) {
    int8_t* q = a.q.data() + size_t(m) * size_t(K);
    kern.quantize_q8(x + size_t(m) * size_t(K), K, 32, q, a.d.data() + size_t(m) * size_t(K / 32),
                     a.s32.data() + size_t(m) * size_t(K / 32));
    int32_t* s = a.s16.data() + size_t(m) * size_t(K / 16);
    for (int j = 0; j < K / 16; ++j) {
      int32_t v = 0;
      for (int i = 0; i < 16; ++i) v += q[16 * j + i];
      s[j] = v;
    }
  };
  if (M < 4) {
    for (int m = 0; m < M; ++m) row(m);
  } else {
    pool.run(M, [&](int m, int) { row(m); });
  }
}

void run_exact(const I8Weight& w, const float* x, int M, int t0, int t1, float* y) {
  const auto& m = w.mat;
  thread_local std::vector<float> panel;
  grow(panel, size_t(kPanelTiles) * kI8TileCols * size_t(m.kp));
  for (int p0 = t0; p0 < t1; p0 += kPanelTiles) {
    const int p1 = std::min(t1, p0 + kPanelTiles);
    kernels::i8_dequant(m, p0, p1, panel.data());
    const int n0 = p0 * kI8TileCols, cols = std::min(w.n_out, p1 * kI8TileCols) - n0;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, cols, m.kp, 1.0f, x, m.kp, panel.data(), m.kp, 0.0f, y + n0,
                w.n_out);
  }
}

}  // namespace

void i8_linear_multi(const LinearOut* outs, int n_outs, const float* x, int M, ThreadPool& pool) {
  if (M <= 0 || n_outs <= 0) return;
  const bool exact = q4_act_for_rows(M) == Q4Act::kF32;
  constexpr int kMaxOuts = 8;
  MH_CHECK(n_outs <= kMaxOuts, "i8_linear_multi: too many linears");
  thread_local I8ActBuf tl_bufs[kMaxOuts];
  I8ActBuf* bufs = tl_bufs;  // the caller's (a thread_local named in the lambda would be the worker's)
  int act_of[kMaxOuts];
  int n_acts = 0;
  for (int i = 0; i < n_outs; ++i) {
    const int K = outs[i].w->i8->n_in;
    act_of[i] = -1;
    for (int j = 0; j < n_acts && act_of[i] < 0; ++j)
      if (bufs[j].k == K) act_of[i] = j;
    if (act_of[i] < 0 && !exact) prepare(bufs[n_acts], K, x, M, pool);
    if (act_of[i] < 0) bufs[n_acts].k = K, act_of[i] = n_acts++;
  }
  // Split the tiles of all linears into pieces, a few per thread (whole panels in exact mode).
  const int align = exact ? kPanelTiles : 1;
  int64_t total = 0;
  for (int i = 0; i < n_outs; ++i) total += outs[i].w->i8->mat.n_tiles;
  const int64_t n_chunks = std::max<int64_t>(1, std::min<int64_t>(total / align, int64_t(pool.size()) * 4));
  int64_t per = (total + n_chunks - 1) / n_chunks;
  per = (per + align - 1) / align * align;
  auto pieces_of = [&](int i) { return int((outs[i].w->i8->mat.n_tiles + per - 1) / per); };
  int n_pieces = 0;
  for (int i = 0; i < n_outs; ++i) n_pieces += pieces_of(i);
  const auto& kern = kernels::i8_kernels();
  pool.run(n_pieces, [&](int task, int) {
    int lin = 0;
    for (; task >= pieces_of(lin); ++lin) task -= pieces_of(lin);
    const I8Weight& w = *outs[lin].w->i8;
    const int t0 = int(int64_t(task) * per), t1 = int(std::min<int64_t>(w.mat.n_tiles, t0 + per));
    if (exact) {
      run_exact(w, x, M, t0, t1, outs[lin].y);
      return;
    }
    const I8ActBuf& a = bufs[act_of[lin]];
    const kernels::I8Act xa{a.q.data(), a.d.data(), a.s16.data(), w.n_in};
    kern.gemm(w.mat, xa, M, t0, t1, outs[lin].y, w.n_out);
  });
}

}  // namespace metharme::ops
