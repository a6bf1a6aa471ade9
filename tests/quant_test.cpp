// Quantization building blocks: CPython's random, calibration windows, the quantizer grid, GPTQ's
// blocked sweep against a naive transcription of the algorithm, and checkpoint packing.
#include <gtest/gtest.h>

#include <cblas.h>
#include <zlib.h>

#include <cmath>
#include <fstream>
#include <numeric>
#include <random>

#include "formats/npy.h"
#include "quant/calibration.h"
#include "quant/gptq.h"
#include "quant/pack.h"
#include "util/py_random.h"
#include "support/test_util.h"
#include "util/error.h"
#include "util/half.h"

namespace metharme::quant {
namespace {

TEST(PyRandom, MatchesCPython) {
  // Values printed by CPython 3.11: random.seed(s); random.getrandbits / randint.
  PyRandom r(0);
  EXPECT_EQ(r.getrandbits(32), 3626764237u);
  EXPECT_EQ(r.getrandbits(32), 1654615998u);
  EXPECT_EQ(r.getrandbits(32), 3255389356u);
  PyRandom big(12345678901ull);  // a seed wider than 32 bits
  EXPECT_EQ(big.randint(0, 1000000), 991965);
  EXPECT_EQ(big.randint(0, 1000000), 625564);
  EXPECT_EQ(big.randint(0, 1000000), 343932);
  EXPECT_EQ(big.getrandbits(40), 424635408031ull);
  PyRandom s7(7);
  std::vector<int64_t> got;
  for (int i = 0; i < 5; ++i) got.push_back(s7.randint(5, 9));
  EXPECT_EQ(got, (std::vector<int64_t>{7, 6, 8, 5, 5}));
}

TEST(Calibration, WindowStartsMatchTheReferenceSampler) {
  auto j = test::read_json(test::fixture("gptq/calibration.json"));
  auto starts = draw_window_starts(j["total_tokens_with_bos"].get<int64_t>(), j["seqlen"].get<int>(),
                                   j["nsamples"].get<int>(), 0);
  EXPECT_EQ(starts, j["window_starts"].get<std::vector<int64_t>>());
}

TEST(Calibration, TextWindowsEqualTheReferenceCalibrationIds) {
  Tokenizer tok(test::fixture("tokenizer/llama/tokenizer.model"));
  CalibOptions o;
  o.path = test::shared("data/tinyshakespeare.txt");
  o.nsamples = 32;
  o.seqlen = 128;
  CalibSet c = load_calibration(o, tok, 32000);
  NpyArray want = read_npy(test::fixture("gptq/calibration_ids.npy"));
  ASSERT_EQ(want.shape, (std::vector<int64_t>{32, 128}));
  auto w = want.to_i64();
  ASSERT_EQ(c.ids.size(), w.size());
  EXPECT_TRUE(std::equal(c.ids.begin(), c.ids.end(), w.begin()));

  // The same windows given as ids.npy: taken as they are.
  CalibOptions n;
  n.path = test::fixture("gptq/calibration_ids.npy");
  CalibSet d = load_calibration(n, tok, 32000);
  EXPECT_EQ(d.nsamples, 32);
  EXPECT_EQ(d.seqlen, 128);
  EXPECT_EQ(d.ids, c.ids);
}

void write_gz(const std::string& path, const std::string& s) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_TRUE(f);
  ASSERT_EQ(gzwrite(f, s.data(), unsigned(s.size())), int(s.size()));
  gzclose(f);
}

TEST(Calibration, JsonlDocumentsAreSampledLikeC4) {
  Tokenizer tok(test::fixture("tokenizer/llama/tokenizer.model"));
  test::TempDir tmp;
  std::vector<std::string> docs = {"Short one.", "Tiny.",
                                   std::string(400, 'a') + " the end of a long document",
                                   "Another long document: " + std::string(300, 'b') + " with more words in it"};
  std::string body;
  for (const auto& d : docs) body += nlohmann::json({{"text", d}, {"url", "x"}}).dump() + "\n";
  std::ofstream(tmp / "c4.jsonl") << body;
  write_gz(tmp / "c4.jsonl.gz", body);
  CalibOptions o;
  o.path = tmp / "c4.jsonl";
  o.nsamples = 6;
  o.seqlen = 16;
  o.seed = 3;
  CalibSet a = load_calibration(o, tok, 32000);
  ASSERT_EQ(a.ids.size(), 6u * 16u);
  // Independent replay of the reference loop with CPython's generator.
  std::vector<std::vector<int>> enc;
  for (const auto& d : docs) enc.push_back(tok.encode(d, true));
  PyRandom rng(3);
  std::vector<int32_t> want;
  for (int s = 0; s < 6; ++s) {
    int64_t i;
    do i = rng.randint(0, 3);
    while (int(enc[size_t(i)].size()) <= 16);
    int64_t st = rng.randint(0, int64_t(enc[size_t(i)].size()) - 16 - 1);
    want.insert(want.end(), enc[size_t(i)].begin() + st, enc[size_t(i)].begin() + st + 16);
  }
  EXPECT_EQ(a.ids, want);
  o.path = tmp / "c4.jsonl.gz";
  EXPECT_EQ(load_calibration(o, tok, 32000).ids, want);
  o.seed = 4;
  EXPECT_NE(load_calibration(o, tok, 32000).ids, want);
}

TEST(Calibration, BadInputGivesClearErrors) {
  Tokenizer tok(test::fixture("tokenizer/llama/tokenizer.model"));
  test::TempDir tmp;
  auto err = [&](CalibOptions o) {
    try {
      load_calibration(o, tok, 32000);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CalibOptions o;
  o.seqlen = 64;
  o.nsamples = 4;
  EXPECT_NE(err(o).find("no calibration text"), std::string::npos);
  std::ofstream(tmp / "empty.txt") << "  \n";
  o.path = tmp / "empty.txt";
  EXPECT_NE(err(o).find("is empty"), std::string::npos);
  std::ofstream(tmp / "short.txt") << "Only a few words here.";
  o.path = tmp / "short.txt";
  EXPECT_NE(err(o).find("shorter than one window"), std::string::npos) << err(o);
  std::ofstream(tmp / "bad.jsonl") << "{\"text\": \"fine\"}\n{not json\n";
  o.path = tmp / "bad.jsonl";
  EXPECT_NE(err(o).find("line 2 is not valid JSON"), std::string::npos) << err(o);
  std::ofstream(tmp / "notext.jsonl") << "{\"body\": \"x\"}\n";
  o.path = tmp / "notext.jsonl";
  EXPECT_NE(err(o).find("no \"text\" string"), std::string::npos);
  std::ofstream(tmp / "shortdocs.jsonl") << "{\"text\": \"a b c\"}\n{\"text\": \"d e\"}\n";
  o.path = tmp / "shortdocs.jsonl";
  EXPECT_NE(err(o).find("no document has more than"), std::string::npos) << err(o);
  float f[4] = {1, 2, 3, 4};
  write_npy(tmp / "f.npy", DType::F32, {2, 2}, f);
  o.path = tmp / "f.npy";
  EXPECT_NE(err(o).find("integer array"), std::string::npos) << err(o);
  int32_t ids[6] = {1, 2, 3, 4, 5, 99999};
  write_npy(tmp / "ids.npy", DType::I32, {2, 3}, ids);
  o.path = tmp / "ids.npy";
  o.seqlen_given = true;
  EXPECT_NE(err(o).find("windows of 3 tokens but --seqlen is 64"), std::string::npos) << err(o);
  o.seqlen_given = false;
  o.nsamples = 2;
  EXPECT_NE(err(o).find("outside the model's vocabulary"), std::string::npos) << err(o);
}

TEST(Quantizer, GridFollowsTheReference) {
  QuantConfig c;
  Grid g = make_grid(-0.3f, 0.9f, c);  // asymmetric: scale (0.9+0.3)/15, zero round(0.3/scale)
  EXPECT_FLOAT_EQ(g.scale, 1.2f / 15);
  EXPECT_EQ(g.zero, 4.0f);  // 0.3/0.08 = 3.75 -> 4
  g = make_grid(0.2f, 0.5f, c);  // min clamps to 0
  EXPECT_FLOAT_EQ(g.scale, 0.5f / 15);
  EXPECT_EQ(g.zero, 0.0f);
  c.zero_at_least_one = true;
  EXPECT_EQ(make_grid(0.2f, 0.5f, c).zero, 1.0f);
  g = make_grid(0, 0, c);  // all-zero row -> [-1, 1]
  EXPECT_FLOAT_EQ(g.scale, 2.0f / 15);
  QuantConfig s;
  s.sym = true;
  g = make_grid(-0.3f, 0.9f, s);
  EXPECT_FLOAT_EQ(g.scale, 1.8f / 15);
  EXPECT_EQ(g.zero, 8.0f);
  g = make_grid(0.1f, 0.9f, s);  // quirk: non-negative row keeps xmin = 0
  EXPECT_FLOAT_EQ(g.scale, 0.9f / 15);
  // Round half to even, clamped to [0, maxq].
  Grid unit{1.0f, 8.0f};
  EXPECT_EQ(quant_code(0.5f, unit, 15), 8);
  EXPECT_EQ(quant_code(1.5f, unit, 15), 10);
  EXPECT_EQ(quant_code(-2.5f, unit, 15), 6);
  EXPECT_EQ(quant_code(100.0f, unit, 15), 15);
  EXPECT_EQ(quant_code(-100.0f, unit, 15), 0);
}

// ---- GPTQ against a naive transcription of the reference algorithm ----------------------------

// Cholesky A = L L^T (lower, double), in place.
void cholesky(std::vector<double>& a, int n) {
  for (int j = 0; j < n; ++j) {
    double s = a[size_t(j) * n + j];
    for (int k = 0; k < j; ++k) s -= a[size_t(j) * n + k] * a[size_t(j) * n + k];
    ASSERT_GT(s, 0);
    a[size_t(j) * n + j] = std::sqrt(s);
    for (int i = j + 1; i < n; ++i) {
      double t = a[size_t(i) * n + j];
      for (int k = 0; k < j; ++k) t -= a[size_t(i) * n + k] * a[size_t(j) * n + k];
      a[size_t(i) * n + j] = t / a[size_t(j) * n + j];
    }
    for (int i = 0; i < j; ++i) a[size_t(i) * n + j] = 0;
  }
}

struct Twin {
  std::vector<uint8_t> codes;  // [K][N]
  double loss = 0;
};

// The reference's fasterquant, step by step on full matrices (W [N][K], H [K][K] finished).
Twin twin_gptq(std::vector<float> W, int N, int K, std::vector<double> H, const QuantConfig& c) {
  const bool grouped = c.group_size > 0;
  const int gs = grouped ? c.group_size : K, B = c.block_size, maxq = c.maxq();
  auto at = [&](int n, int k) -> float& { return W[size_t(n) * K + k]; };
  auto grid_of = [&](int n, int k0, int k1) {
    float lo = INFINITY, hi = -INFINITY;
    for (int k = k0; k < k1; ++k) lo = std::min(lo, at(n, k)), hi = std::max(hi, at(n, k));
    return make_grid(lo, hi, c);
  };
  std::vector<Grid> grid(static_cast<size_t>(N));
  if (!grouped)
    for (int n = 0; n < N; ++n) grid[size_t(n)] = grid_of(n, 0, K);
  for (int k = 0; k < K; ++k)
    if (H[size_t(k) * K + k] == 0) {
      H[size_t(k) * K + k] = 1;
      for (int n = 0; n < N; ++n) at(n, k) = 0;
    }
  std::vector<Grid> sgrid;
  if (grouped && c.static_groups)
    for (int g = 0; g < K / gs; ++g)
      for (int n = 0; n < N; ++n) sgrid.push_back(grid_of(n, g * gs, (g + 1) * gs));
  std::vector<int> perm(static_cast<size_t>(K));
  std::iota(perm.begin(), perm.end(), 0);
  if (c.act_order)
    std::stable_sort(perm.begin(), perm.end(), [&](int a, int b) { return H[size_t(a) * K + a] > H[size_t(b) * K + b]; });
  std::vector<float> Wp(W.size());
  std::vector<double> Hp(H.size());
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < K; ++k) Wp[size_t(n) * K + k] = at(n, perm[size_t(k)]);
  for (int i = 0; i < K; ++i)
    for (int j = 0; j < K; ++j) Hp[size_t(i) * K + j] = H[size_t(perm[size_t(i)]) * K + perm[size_t(j)]];
  W = Wp;
  double mean = 0;
  for (int k = 0; k < K; ++k) mean += Hp[size_t(k) * K + k];
  for (int k = 0; k < K; ++k) Hp[size_t(k) * K + k] += c.percdamp * mean / K;
  // U: upper factor of H^-1 = U^T U.
  cholesky(Hp, K);
  std::vector<double> Linv(size_t(K) * K, 0.0);  // L^-1 by forward substitution
  for (int j = 0; j < K; ++j) {
    Linv[size_t(j) * K + j] = 1 / Hp[size_t(j) * K + j];
    for (int i = j + 1; i < K; ++i) {
      double s = 0;
      for (int k = j; k < i; ++k) s += Hp[size_t(i) * K + k] * Linv[size_t(k) * K + j];
      Linv[size_t(i) * K + j] = -s / Hp[size_t(i) * K + i];
    }
  }
  std::vector<double> Hinv(size_t(K) * K, 0.0);  // L^-T L^-1
  for (int i = 0; i < K; ++i)
    for (int j = 0; j < K; ++j) {
      double s = 0;
      for (int k = std::max(i, j); k < K; ++k) s += Linv[size_t(k) * K + i] * Linv[size_t(k) * K + j];
      Hinv[size_t(i) * K + j] = s;
    }
  cholesky(Hinv, K);
  std::vector<float> U(size_t(K) * K);
  for (int i = 0; i < K; ++i)
    for (int j = 0; j < K; ++j) U[size_t(i) * K + j] = float(Hinv[size_t(j) * K + i]);
  Twin t;
  t.codes.resize(size_t(K) * N);
  for (int i1 = 0; i1 < K; i1 += B) {
    const int i2 = std::min(i1 + B, K), cnt = i2 - i1;
    std::vector<float> W1(size_t(N) * cnt), E(size_t(N) * cnt);
    for (int n = 0; n < N; ++n)
      for (int i = 0; i < cnt; ++i) W1[size_t(n) * cnt + i] = at(n, i1 + i);
    for (int i = 0; i < cnt; ++i) {
      const int col = i1 + i;
      if (grouped && c.static_groups) {
        for (int n = 0; n < N; ++n) grid[size_t(n)] = sgrid[size_t(perm[size_t(col)] / gs) * N + n];
      } else if (grouped && col % gs == 0) {
        for (int n = 0; n < N; ++n) grid[size_t(n)] = grid_of(n, col, col + gs);  // global W: stale inside the block
      }
      const float d = U[size_t(col) * K + col];
      for (int n = 0; n < N; ++n) {
        float w = W1[size_t(n) * cnt + i];
        int code = quant_code(w, grid[size_t(n)], maxq);
        t.codes[size_t(perm[size_t(col)]) * N + n] = uint8_t(code);
        float q = grid[size_t(n)].scale * (float(code) - grid[size_t(n)].zero);
        t.loss += double((w - q) * (w - q) / (d * d)) / 2;
        float e = (w - q) / d;
        for (int j = i; j < cnt; ++j) W1[size_t(n) * cnt + j] -= e * U[size_t(col) * K + i1 + j];
        E[size_t(n) * cnt + i] = e;
      }
    }
    for (int n = 0; n < N; ++n)
      for (int k = i2; k < K; ++k) {
        float s = 0;
        for (int i = 0; i < cnt; ++i) s += E[size_t(n) * cnt + i] * U[size_t(i1 + i) * K + k];
        at(n, k) -= s;
      }
  }
  return t;
}

struct Problem {
  std::vector<float> W;       // [N][K]
  std::vector<float> X;       // [rows][K] calibration inputs
  int N, K, rows;
};

Problem make_problem(int N, int K, int rows, unsigned seed, int dead_every = 0) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0, 1);
  Problem p{{}, {}, N, K, rows};
  for (int i = 0; i < N * K; ++i) p.W.push_back(0.05f * nd(rng));
  // Correlated inputs with uneven column scales, some columns never active.
  std::vector<float> z(size_t(rows) * K);
  for (auto& v : z) v = nd(rng);
  p.X.resize(z.size());
  for (int r = 0; r < rows; ++r)
    for (int k = 0; k < K; ++k) {
      float v = z[size_t(r) * K + k] + 0.6f * z[size_t(r) * K + (k + 1) % K] + 0.3f * z[size_t(r) * K + (k * 7) % K];
      p.X[size_t(r) * K + k] = (dead_every && k % dead_every == 3) ? 0.0f : v * (0.5f + float(k % 5));
    }
  return p;
}

std::vector<float> hessian_of(const Problem& p, ThreadPool& pool, int chunks) {
  Hessian h(p.K);
  const int per = p.rows / chunks;
  for (int c = 0; c < chunks; ++c) h.add(p.X.data() + size_t(c) * per * p.K, per, pool);
  return h.finish();
}

TEST(Gptq, HessianIsTwoOverNTimesXtX) {
  openblas_set_num_threads(1);
  ThreadPool pool(2);
  Problem p = make_problem(8, 300, 40, 1);  // K not a multiple of the 256 tile
  auto H = hessian_of(p, pool, 4);
  for (int i = 0; i < p.K; i += 37)
    for (int j = 0; j < p.K; j += 41) {
      double s = 0;
      for (int r = 0; r < p.rows; ++r) s += double(p.X[size_t(r) * p.K + i]) * p.X[size_t(r) * p.K + j];
      EXPECT_NEAR(H[size_t(i) * p.K + j], 2.0 / 4 * s, 1e-4 * (1 + std::fabs(s))) << i << "," << j;
    }
}

struct TwinCase {
  int N, K, block, group;
  bool act_order, static_groups, sym;
};

class GptqTwin : public ::testing::TestWithParam<TwinCase> {};

TEST_P(GptqTwin, BlockedSweepMatchesNaiveReference) {
  openblas_set_num_threads(1);
  const TwinCase tc = GetParam();
  ThreadPool pool(2);
  Problem p = make_problem(tc.N, tc.K, 3 * tc.K, 7 + unsigned(tc.K), 11);
  QuantConfig c;
  c.block_size = tc.block;
  c.group_size = tc.group;
  c.act_order = tc.act_order;
  c.static_groups = tc.static_groups;
  c.sym = tc.sym;
  auto H = hessian_of(p, pool, 3);
  std::vector<double> Hd(H.begin(), H.end());
  Twin want = twin_gptq(p.W, p.N, p.K, Hd, c);
  QuantizedLinear got = gptq_quantize(p.W.data(), p.N, p.K, H, c, pool, 2);
  size_t same = 0;
  for (size_t i = 0; i < want.codes.size(); ++i) same += want.codes[i] == got.codes[i];
  // The sweeps differ only in summation order (blocked sgemm, float vs double inverse), which
  // flips an occasional rounding; the loss must agree closely.
  EXPECT_GE(double(same) / double(want.codes.size()), 0.99);
  EXPECT_NEAR(got.loss, want.loss, 0.01 * want.loss);
  EXPECT_EQ(got.dead_columns, (tc.K + 7) / 11);
  // g_idx: trivial unless act-order with dynamic groups, where each group still has gs members.
  std::vector<int> count(size_t(got.n_groups), 0);
  for (int k = 0; k < p.K; ++k) ++count[size_t(got.g_idx[size_t(k)])];
  for (int n : count) EXPECT_EQ(n, got.group_size);
  bool trivial = true;
  for (int k = 0; k < p.K; ++k) trivial = trivial && got.g_idx[size_t(k)] == k / got.group_size;
  EXPECT_EQ(trivial, !(tc.act_order && tc.group > 0 && !tc.static_groups));
}

INSTANTIATE_TEST_SUITE_P(Shapes, GptqTwin,
                         ::testing::Values(TwinCase{37, 96, 32, -1, false, false, false},
                                           TwinCase{40, 96, 32, 32, false, false, false},
                                           TwinCase{33, 96, 64, 24, true, false, false},  // groups start mid-block
                                           TwinCase{40, 160, 32, 32, true, false, true},
                                           TwinCase{300, 64, 128, 16, true, true, false},  // > one row chunk
                                           TwinCase{21, 128, 48, 32, true, true, true}));

TEST(Gptq, WithoutCorrelationItIsRoundToNearest) {
  ThreadPool pool(2);
  Problem p = make_problem(24, 64, 1, 3);
  QuantConfig c;
  c.group_size = 16;
  std::vector<float> H(size_t(64) * 64, 0.0f);
  for (int k = 0; k < 64; ++k) H[size_t(k) * 64 + k] = 1.0f;
  QuantizedLinear g = gptq_quantize(p.W.data(), 24, 64, H, c, pool);
  QuantizedLinear r = rtn_quantize(p.W.data(), 24, 64, c, pool);
  EXPECT_EQ(g.codes, r.codes);
  EXPECT_EQ(g.zeros, r.zeros);
  EXPECT_EQ(g.scales, r.scales);
}

TEST(Gptq, BeatsRoundToNearestOnTheOutputError) {
  openblas_set_num_threads(1);
  ThreadPool pool(2);
  Problem p = make_problem(64, 128, 512, 5);
  for (int group : {-1, 32}) {
    QuantConfig c;
    c.group_size = group;
    c.act_order = true;
    auto H = hessian_of(p, pool, 2);
    const auto Hkeep = H;
    QuantizedLinear g = gptq_quantize(p.W.data(), 64, 128, H, c, pool);
    QuantConfig rc;
    rc.group_size = group;
    QuantizedLinear r = rtn_quantize(p.W.data(), 64, 128, rc, pool);
    auto out_err = [&](const QuantizedLinear& q) {  // tr(dW H dW^T)
      std::vector<float> Wq(p.W.size());
      dequantize(q, false, Wq.data());
      double e = 0;
      for (int n = 0; n < 64; ++n)
        for (int i = 0; i < 128; ++i)
          for (int j = 0; j < 128; ++j)
            e += double(p.W[size_t(n) * 128 + i] - Wq[size_t(n) * 128 + i]) * Hkeep[size_t(i) * 128 + j] *
                 double(p.W[size_t(n) * 128 + j] - Wq[size_t(n) * 128 + j]);
      return e;
    };
    EXPECT_LT(out_err(g), 0.8 * out_err(r)) << "group " << group;
  }
}

// ---- packing ------------------------------------------------------------------------------------

QuantizedLinear sample_linear(int N, int K, int gs, bool shuffled_groups) {
  QuantizedLinear q;
  q.n_out = N;
  q.n_in = K;
  q.group_size = gs;
  q.n_groups = K / gs;
  std::mt19937 rng(9);
  for (int i = 0; i < N * K; ++i) q.codes.push_back(uint8_t(rng() % 16));
  for (int i = 0; i < q.n_groups * N; ++i) {
    q.scales.push_back(0.001f * float(1 + rng() % 1000));
    q.zeros.push_back(uint8_t(1 + rng() % 15));
  }
  std::vector<int32_t> order(static_cast<size_t>(K));
  std::iota(order.begin(), order.end(), 0);
  if (shuffled_groups) std::shuffle(order.begin(), order.end(), rng);
  q.g_idx.resize(size_t(K));
  for (int p = 0; p < K; ++p) q.g_idx[size_t(order[size_t(p)])] = p / gs;
  return q;
}

TensorStore store_of(const std::vector<OwnedTensor>& ts) {
  TensorStore s;
  for (const auto& t : ts) s.add(TensorView{t.name, t.dtype, t.shape, t.data.data(), t.data.size(), "test"});
  return s;
}

TEST(Pack, G2LayoutFollowsTheSpecAndRoundTrips) {
  QuantizedLinear q = sample_linear(64, 96, 32, true);
  auto ts = pack_linear(q, "x", PackFormat::kG2, 4);
  TensorStore s = store_of(ts);
  const TensorView& qw = s.get("x.qweight");
  const TensorView& qz = s.get("x.qzeros");
  EXPECT_EQ(qw.shape, (std::vector<int64_t>{12, 64}));
  EXPECT_EQ(qz.shape, (std::vector<int64_t>{3, 8}));
  EXPECT_EQ(s.get("x.scales").dtype, DType::F16);
  EXPECT_EQ(s.get("x.g_idx").shape, (std::vector<int64_t>{96}));
  EXPECT_FALSE(s.find("x.bias"));
  for (int k : {0, 5, 13, 95})
    for (int n : {0, 7, 63})
      EXPECT_EQ((qw.as<uint32_t>()[(k / 8) * 64 + n] >> (4 * (k % 8))) & 0xF, q.codes[size_t(k) * 64 + size_t(n)]);
  for (int g = 0; g < 3; ++g)
    for (int n : {0, 9, 63})
      EXPECT_EQ(((qz.as<uint32_t>()[g * 8 + n / 8] >> (4 * (n % 8))) & 0xF) + 1, q.zeros[size_t(g) * 64 + size_t(n)]);
  QuantizedLinear u = unpack_linear(s, "x", 4, true);
  EXPECT_EQ(u.codes, q.codes);
  EXPECT_EQ(u.zeros, q.zeros);
  EXPECT_EQ(u.g_idx, q.g_idx);
  for (size_t i = 0; i < q.scales.size(); ++i) EXPECT_EQ(u.scales[i], fp16_to_f32(f32_to_fp16(q.scales[i])));
  // Dequantized weights equal the fp16-scale dequantization of the original.
  std::vector<float> a(64 * 96), b(64 * 96);
  dequantize(q, true, a.data());
  dequantize(u, false, b.data());
  EXPECT_EQ(a, b);
}

TEST(Pack, GptqV2AndG1Layouts) {
  QuantizedLinear q = sample_linear(32, 64, 32, false);
  q.zeros[3] = 0;  // representable only without the zero-1 offset
  auto v2 = pack_linear(q, "x", PackFormat::kGptqV2, 4);
  TensorStore s2 = store_of(v2);
  EXPECT_EQ(unpack_linear(s2, "x", 4, false).zeros, q.zeros);
  try {
    pack_linear(q, "x", PackFormat::kG2, 4);
    FAIL() << "zero point 0 accepted for g2";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("zero point 0"), std::string::npos);
  }
  q.zeros[3] = 5;
  auto g1 = pack_linear(q, "x", PackFormat::kG1, 4);
  TensorStore s1 = store_of(g1);
  EXPECT_FALSE(s1.find("x.g_idx"));
  EXPECT_EQ(s1.get("x.scales").dtype, DType::F32);
  EXPECT_EQ(s1.get("x.bias").shape, (std::vector<int64_t>{32}));
  QuantizedLinear u = unpack_linear(s1, "x", 4, true);
  EXPECT_EQ(u.codes, q.codes);
  EXPECT_EQ(u.scales, q.scales);
  EXPECT_EQ(u.g_idx, q.g_idx);
  QuantizedLinear shuffled = sample_linear(32, 64, 32, true);
  EXPECT_THROW(pack_linear(shuffled, "x", PackFormat::kG1, 4), Error);
  EXPECT_FALSE(packable(172, 64));
  EXPECT_FALSE(packable(64, 172));
  EXPECT_TRUE(packable(704, 256));
}

}  // namespace
}  // namespace metharme::quant
