// Self-test of the int4 kernels (kernels/selftest.h): one fixed matrix of 40 columns (the last
// tile partial) x 128 rows in 2 groups of 64, random codes, scales (fp16, and fp32 off the fp16
// grid) and zero points from a fixed generator, and one of 40 x 256 in Q4_K's layout (8 groups of
// 32, 6-bit scales and mins); activation rows 1 (the decode path), 2, 5 and 7 (the batched paths'
// row groups).
#include <cmath>
#include <cstdio>
#include <vector>

#include "kernels/q4.h"
#include "kernels/selftest.h"
#include "util/half.h"

namespace metharme::kernels {

namespace {

constexpr int kN = 40, kKp = 128, kGs = 64, kGroups = kKp / kGs, kTiles = (kN + kQ4TileCols - 1) / kQ4TileCols;

// xorshift32: the same numbers on every machine.
struct Rand {
  uint32_t s = 0x9E3779B9u;
  uint32_t next() {
    s ^= s << 13;
    s ^= s >> 17;
    s ^= s << 5;
    return s;
  }
  float uniform() { return float(next() >> 8) * (1.0f / 16777216.0f); }  // [0, 1)
};

struct Problem {
  std::vector<uint8_t> qs, zeros, ksc, kmin;
  std::vector<uint16_t> scales, kd, kdmin;
  std::vector<float> scales_f32;
  Q4Matrix m;  // points into the vectors above
  Problem(const Problem&) = delete;

  // GGUF Q4_K's layout: K = 256 (one super-block), groups of 32.
  explicit Problem(Rand r) {
    m.n = kN;
    m.kp = 256;
    m.gs = 32;
    m.n_groups = 8;
    m.n_tiles = kTiles;
    qs.resize(size_t(kTiles) * m.tile_qs_bytes());
    for (auto& b : qs) b = uint8_t(r.next());
    const size_t ns = size_t(kTiles) * 8 * kQ4TileCols, nd = size_t(kTiles) * kQ4TileCols;
    ksc.resize(ns);
    kmin.resize(ns);
    for (size_t i = 0; i < ns; ++i) ksc[i] = uint8_t(r.next() % 64), kmin[i] = uint8_t(r.next() % 64);
    kd.resize(nd);
    kdmin.resize(nd);
    for (size_t i = 0; i < nd; ++i) {
      kd[i] = f32_to_fp16(0.0002f + 0.001f * r.uniform());
      kdmin[i] = f32_to_fp16(0.0002f + 0.001f * r.uniform());
    }
    m.qs = qs.data();
    m.ksc = ksc.data();
    m.kmin = kmin.data();
    m.kd = kd.data();
    m.kdmin = kdmin.data();
    m.uniform_zero = 0;
  }

  // f32_scales: scales kept in fp32 (values fp16 cannot hold) instead of fp16. uniform: every
  // zero point 8 and the matrix flagged so (GGUF Q4_0).
  Problem(bool f32_scales, bool uniform) {
    Rand r;
    m.n = kN;
    m.kp = kKp;
    m.gs = kGs;
    m.n_groups = kGroups;
    m.n_tiles = kTiles;
    qs.resize(size_t(kTiles) * m.tile_qs_bytes());
    for (auto& b : qs) b = uint8_t(r.next());
    const size_t ns = size_t(kTiles) * kGroups * kQ4TileCols;
    scales.resize(ns);
    scales_f32.resize(ns);
    zeros.resize(ns);
    for (size_t i = 0; i < ns; ++i) {
      const float s = 0.002f + 0.02f * r.uniform();
      scales[i] = f32_to_fp16(s);
      scales_f32[i] = s * 1.0001f;  // off the fp16 grid
      zeros[i] = uniform ? 8 : uint8_t(r.next() % 16);
    }
    m.qs = qs.data();
    m.scales = scales.data();
    m.zeros = zeros.data();
    if (f32_scales) m.scales_f32 = scales_f32.data();
    if (uniform) m.uniform_zero = 8;
  }
};

// M rows of activations with one large value per row, as real activations have.
std::vector<float> activations(int M, Rand& r, int kp = kKp) {
  std::vector<float> x(size_t(M) * size_t(kp));
  for (auto& v : x) v = 2.0f * r.uniform() - 1.0f;
  for (int m = 0; m < M; ++m) x[size_t(m) * size_t(kp) + size_t(17 + m)] = 9.0f;
  return x;
}

void check_rows(Isa isa, SelfTest& t, const Problem& p, int M, int block, Rand& r, const char* tag) {
  const Q4Kernels& opt = q4_kernels(isa);
  const Q4Kernels& ref = q4_kernels_scalar();
  const int kKp = p.m.kp, kGs = p.m.gs, kGroups = p.m.n_groups;  // this problem's shape
  const int nb = kKp / block;
  const std::vector<float> x = activations(M, r, kKp);
  std::vector<int8_t> qo(x.size()), qr(x.size());
  std::vector<float> dox(size_t(M) * nb), dr(dox.size());
  std::vector<int32_t> so(dox.size()), sr(dox.size());
  for (int m = 0; m < M; ++m) {
    const size_t a = size_t(m) * kKp, b = size_t(m) * nb;
    opt.quantize_q8(&x[a], kKp, block, &qo[a], &dox[b], &so[b]);
    ref.quantize_q8(&x[a], kKp, block, &qr[a], &dr[b], &sr[b]);
  }
  const std::string rows = std::string(tag) + " M=" + std::to_string(M);
  t.compare_exact("quantize_q8" + rows, qo.data(), qr.data(), qo.size());
  t.compare_exact("quantize_q8 scales" + rows, dox.data(), dr.data(), dox.size() * sizeof(float));
  // Both kernels get the scalar activations, so only the products are compared; tile 0 is
  // skipped, as a thread given a later range would.
  const Q8Act q8{qr.data(), dr.data(), sr.data(), kKp, block};
  std::vector<float> yo(size_t(M) * kN, -1.0f), yr(yo);
  opt.gemm_q8(p.m, q8, M, 1, kTiles, yo.data(), kN);
  ref.gemm_q8(p.m, q8, M, 1, kTiles, yr.data(), kN);
  t.compare("gemm_q8" + rows, yo.data(), yr.data(), yo.size(), 1e-5, 1e-5);
  std::vector<float> gsum(size_t(M) * kGroups, 0.0f);
  for (int m = 0; m < M; ++m)
    for (int k = 0; k < kKp; ++k) gsum[size_t(m) * kGroups + size_t(k / kGs)] += x[size_t(m) * kKp + size_t(k)];
  const F32Act f32{x.data(), gsum.data(), kKp, kGroups};
  std::fill(yo.begin(), yo.end(), -1.0f);
  std::fill(yr.begin(), yr.end(), -1.0f);
  opt.gemm_f32(p.m, f32, M, 0, kTiles, yo.data(), kN);
  ref.gemm_f32(p.m, f32, M, 0, kTiles, yr.data(), kN);
  t.compare("gemm_f32" + rows, yo.data(), yr.data(), yo.size(), 2e-5, 2e-5);
}

void run(Isa isa, SelfTest& t) {
  Rand r;
  for (int variant = 0; variant < 4; ++variant) {
    const bool f32_scales = variant == 1;
    const Problem p = variant == 3 ? Problem(r) : Problem(f32_scales, variant == 2);
    const char* tag = variant == 1   ? " (fp32 scales)"
                      : variant == 2 ? " (uniform zero)"
                      : variant == 3 ? " (q4_k)"
                                     : "";
    {
      const size_t n = size_t(kTiles) * kQ4TileCols * size_t(p.m.kp);
      std::vector<float> o(n), ref(n);
      q4_kernels(isa).dequant(p.m, 0, kTiles, o.data());
      q4_kernels_scalar().dequant(p.m, 0, kTiles, ref.data());
      t.compare_exact(std::string("dequant") + tag, o.data(), ref.data(), n * sizeof(float));
    }
    // Rows 1 (decode), 5 and 7 (AVX2: one 5-row group; groups of 4 and 3) and 2, at blocks of one
    // and of two 4-step chunks.
    const int b64 = p.m.gs >= 64 ? 64 : 32;  // activation blocks divide the group
    check_rows(isa, t, p, 1, b64, r, tag);
    check_rows(isa, t, p, 5, 32, r, tag);
    check_rows(isa, t, p, 7, b64, r, tag);
    check_rows(isa, t, p, 2, 32, r, tag);
    check_rows(isa, t, p, 8, 32, r, tag);  // AVX-512: one full 8-row tile
  }
}

// The AMX product against the scalar gemm_q8: 17 rows (one zero-padded 16-row block) and 40 (one
// full 32-row block and a partial one), 32- and 64-value blocks, both scale types, all tiles and
// from tile 1.
void run_amx(Isa isa, SelfTest& t) {
  if (isa != Isa::kAvx512 || !amx_supported()) return;  // no checks: reported as a failure
  Rand r;
  const Q4GemmQ8 amx = q4_gemm_q8_amx_unchecked();
  for (bool f32_scales : {false, true}) {
    const Problem p(f32_scales, false);
    for (int M : {17, 40})
      for (int block : {32, 64}) {
        const int nb = kKp / block;
        const std::vector<float> x = activations(M, r);
        std::vector<int8_t> q(x.size());
        std::vector<float> d(size_t(M) * nb);
        std::vector<int32_t> sum(d.size());
        for (int m = 0; m < M; ++m)
          q4_kernels_scalar().quantize_q8(&x[size_t(m) * kKp], kKp, block, &q[size_t(m) * kKp], &d[size_t(m) * nb],
                                          &sum[size_t(m) * nb]);
        const Q8Act q8{q.data(), d.data(), sum.data(), kKp, block};
        for (int t0 : {0, 1}) {
          std::vector<float> yo(size_t(M) * kN, -1.0f), yr(yo);
          amx(p.m, q8, M, t0, kTiles, yo.data(), kN);
          q4_kernels_scalar().gemm_q8(p.m, q8, M, t0, kTiles, yr.data(), kN);
          t.compare("gemm_q8 amx M=" + std::to_string(M) + " block=" + std::to_string(block) +
                        " t0=" + std::to_string(t0) + (f32_scales ? " (fp32 scales)" : ""),
                    yo.data(), yr.data(), yo.size(), 1e-5, 1e-5);
        }
      }
  }
}

}  // namespace

KernelFamily& q4_amx_family() {
  static KernelFamily f{"int4-amx", run_amx};
  return f;
}

Q4GemmQ8 q4_gemm_q8_amx() {
  // AMX sits above the int4 AVX-512 level: off where that level is capped or failed its self-test.
  if (!amx_enabled() || checked_isa(q4_family()) != Isa::kAvx512) return nullptr;
  static const bool ok = [] {
    KernelFamily& f = q4_amx_family();
    const FamilyReport rep = run_self_test(f, Isa::kAvx512, simulated_mismatch(f, Isa::kAvx512));
    if (!rep.pass) {
      const KernelCheck* bad = nullptr;
      for (const auto& c : rep.checks)
        if (!c.pass && !bad) bad = &c;
      std::fprintf(stderr,
                   "metharme: warning: the int4 AMX kernel failed its self-test against the scalar one (%s: max "
                   "error %.3g); using avx512-vnni instead\n",
                   bad ? bad->kernel.c_str() : "no checks", bad ? bad->max_err : 0.0);
    }
    f.verdict[int(Isa::kAvx512)].store(rep.pass ? 1 : 2);
    return rep.pass;
  }();
  return ok ? q4_gemm_q8_amx_unchecked() : nullptr;
}

KernelFamily& q4_family() {
  static KernelFamily f{"int4", run};
  return f;
}

}  // namespace metharme::kernels
