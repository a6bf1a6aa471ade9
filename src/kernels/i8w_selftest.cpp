// Self-test of the int8-code kernels (kernels/selftest.h): a fixed matrix of 24 columns (the last
// tile partial) x 256 rows from a fixed generator in the shapes the GGUF types use (Q8_0:
// full-range codes, scales per 32; Q6_K: |code| <= 32, scales per 16; Q5_K: codes 0..31, scales
// and adds per 32; Q6_K and Q5_K again in their own scale layout, i8w.h); activation rows 1
// (decode), 2, 5, 7 and 13 (the 4-, 2- and 1-row batch paths).
#include <cmath>
#include <string>
#include <vector>

#include "kernels/i8w.h"
#include "kernels/selftest.h"
#include "util/half.h"

namespace metharme::kernels {

namespace {

constexpr int kN = 24, kKp = 256, kTiles = (kN + kI8TileCols - 1) / kI8TileCols;

struct Rand {  // xorshift32: the same numbers on every machine
  uint32_t s = 0x2545F491u;
  uint32_t next() {
    s ^= s << 13;
    s ^= s >> 17;
    s ^= s << 5;
    return s;
  }
  float uniform() { return float(next() >> 8) * (1.0f / 16777216.0f); }
};

enum class Shape { kQ8_0, kQ6K, kQ5K, kQ6KScales, kQ5KScales };

struct Problem {
  std::vector<int8_t> qs, ksc;
  std::vector<uint8_t> kmin;
  std::vector<uint16_t> kd, kdmin;
  std::vector<float> scales, adds;
  I8Matrix m;  // points into the vectors above
  Problem(const Problem&) = delete;

  Problem(Shape shape, Rand& r) {
    const bool q6 = shape == Shape::kQ6K || shape == Shape::kQ6KScales;
    const bool q5 = shape == Shape::kQ5K || shape == Shape::kQ5KScales;
    m.n = kN;
    m.kp = kKp;
    m.n_tiles = kTiles;
    m.sb = q6 ? 16 : 32;
    m.small = shape != Shape::kQ8_0;
    qs.resize(size_t(kTiles) * kKp / kI8StepK * kI8StepBytes);
    for (auto& c : qs) {
      const uint32_t v = r.next();
      c = shape == Shape::kQ8_0 ? int8_t(v) : q6 ? int8_t(int(v % 64) - 32) : int8_t(v % 32);
    }
    m.qs = qs.data();
    const size_t ns = size_t(kTiles) * (kKp / m.sb) * kI8TileCols, nb = size_t(kTiles) * (kKp / 32) * kI8TileCols;
    if (shape == Shape::kQ6KScales || shape == Shape::kQ5KScales) {
      ksc.resize(ns);
      for (auto& v : ksc) v = q6 ? int8_t(int(r.next() % 255) - 127) : int8_t(r.next() % 64);
      kd.resize(size_t(kTiles) * (kKp / 256) * kI8TileCols);
      for (auto& v : kd) v = f32_to_fp16(0.0001f + 0.001f * r.uniform());
      m.ksc = ksc.data();
      m.kd = kd.data();
      if (q5) {
        kmin.resize(nb);
        for (auto& v : kmin) v = uint8_t(r.next() % 64);
        kdmin.resize(kd.size());
        for (auto& v : kdmin) v = f32_to_fp16(0.002f * r.uniform());
        m.kmin = kmin.data();
        m.kdmin = kdmin.data();
      }
      return;
    }
    scales.resize(ns);
    for (auto& s : scales) s = 0.001f + 0.01f * r.uniform();
    if (q5) {
      adds.resize(nb);
      for (auto& a : adds) a = -0.1f * r.uniform();
      m.adds = adds.data();
    }
    m.scales = scales.data();
  }
};

// Quantized activations as the ops layer makes them (ops/i8_linear.cpp), one large value per row.
struct Act {
  std::vector<int8_t> q;
  std::vector<float> d;
  std::vector<int32_t> s16;
  Act(int M, Rand& r) : q(size_t(M) * kKp), d(size_t(M) * kKp / 32), s16(size_t(M) * kKp / 16) {
    for (int m = 0; m < M; ++m) {
      for (int b = 0; b < kKp / 32; ++b) d[size_t(m) * (kKp / 32) + size_t(b)] = 0.01f + 0.05f * r.uniform();
      for (int k = 0; k < kKp; ++k) {
        const int v = k == 17 + m ? 127 : int(r.next() % 255) - 127;
        q[size_t(m) * kKp + size_t(k)] = int8_t(v);
        s16[size_t(m) * (kKp / 16) + size_t(k / 16)] += v;
      }
    }
  }
  I8Act view() const { return {q.data(), d.data(), s16.data(), kKp}; }
};

void run(Isa isa, SelfTest& t) {
  Rand r;
  const char* names[] = {" (q8_0)", " (q6_k)", " (q5_k)", " (q6_k scales)", " (q5_k scales)"};
  for (Shape shape : {Shape::kQ8_0, Shape::kQ6K, Shape::kQ5K, Shape::kQ6KScales, Shape::kQ5KScales}) {
    const Problem p(shape, r);
    for (int M : {1, 2, 5, 7, 13}) {
      const Act a(M, r);
      std::vector<float> yo(size_t(M) * kN, -1.0f), yr(yo);
      // Tile 0 is skipped, as a thread given a later range would.
      i8_kernels(isa).gemm(p.m, a.view(), M, 1, kTiles, yo.data(), kN);
      i8_kernels_scalar().gemm(p.m, a.view(), M, 1, kTiles, yr.data(), kN);
      t.compare("gemm M=" + std::to_string(M) + names[int(shape)], yo.data(), yr.data(), yo.size(), 1e-5, 1e-5);
    }
  }
}

}  // namespace

KernelFamily& i8_family() {
  static KernelFamily f{"int8w", run};
  return f;
}

}  // namespace metharme::kernels
