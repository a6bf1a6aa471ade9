// Self-test of the dense kernels (kernels/selftest.h): products with f32, f16 and bf16 weights of
// odd shapes (K = 45: vector tails; columns 1..7 of 8: a partial range) for 1 and 5 rows, the
// transposed product of attention, the conversions both ways and the SwiGLU gate, on values
// from a fixed generator.
#include <cmath>
#include <vector>

#include "kernels/dense.h"
#include "kernels/selftest.h"

namespace metharme::kernels {

namespace {

constexpr int kN = 8, kK = 45, kLd = 48;

struct Rand {
  uint32_t s = 0x2545F491u;
  float next() {
    s ^= s << 13;
    s ^= s >> 17;
    s ^= s << 5;
    return float(s >> 8) * (2.0f / 16777216.0f) - 1.0f;  // [-1, 1)
  }
};

std::vector<float> values(size_t n, Rand& r) {
  std::vector<float> v(n);
  for (auto& x : v) x = r.next();
  return v;
}

const char* type_name(WType t) { return t == WType::kF32 ? "f32" : t == WType::kF16 ? "f16" : "bf16"; }

// Sums of |x w| bound the rounding of an fp32 product; the scalar one sums in fp64.
void check_products(Isa isa, SelfTest& t, WType wt, Rand& r) {
  const DenseKernels& opt = dense_kernels(isa);
  const DenseKernels& ref = dense_kernels_scalar();
  const std::vector<float> wf = values(size_t(kN) * kLd, r);
  std::vector<uint8_t> w(wf.size() * wtype_size(wt));
  ref.from_f32(wt, wf.data(), w.data(), int64_t(wf.size()));
  for (int M : {1, 5}) {
    const std::vector<float> x = values(size_t(M) * kLd, r);
    std::vector<float> yo(size_t(M) * kN, -1.0f), yr(yo);
    opt.gemm(wt, w.data(), kLd, x.data(), kLd, yo.data(), kN, M, kK, 1, kN);
    ref.gemm(wt, w.data(), kLd, x.data(), kLd, yr.data(), kN, M, kK, 1, kN);
    t.compare(std::string("gemm ") + type_name(wt) + " M=" + std::to_string(M), yo.data(), yr.data(), yo.size(), 1e-5,
              kK * 1e-6);
  }
  // Attention's weighted sum of value rows: 5 rows of 45 values.
  const std::vector<float> p = values(5, r);
  std::vector<float> yo = values(kK, r), yr = yo;
  opt.gemv_t(wt, w.data(), kLd, p.data(), 5, kK, yo.data());
  ref.gemv_t(wt, w.data(), kLd, p.data(), 5, kK, yr.data());
  t.compare(std::string("gemv_t ") + type_name(wt), yo.data(), yr.data(), yo.size(), 1e-5, 1e-5);
}

void check_conversions(Isa isa, SelfTest& t, Rand& r) {
  const DenseKernels& opt = dense_kernels(isa);
  const DenseKernels& ref = dense_kernels_scalar();
  std::vector<float> f = values(67, r);
  f[3] = 65504.0f;  // fp16 max
  f[4] = 1e-6f;     // an fp16 subnormal
  f[5] = 70000.0f;  // beyond fp16: inf
  f[6] = 0.0f;
  f[7] = -0.0f;
  for (WType wt : {WType::kF16, WType::kBF16}) {
    std::vector<uint16_t> ho(f.size()), hr(f.size());
    opt.from_f32(wt, f.data(), ho.data(), int64_t(f.size()));
    ref.from_f32(wt, f.data(), hr.data(), int64_t(f.size()));
    t.compare_exact(std::string("from_f32 ") + type_name(wt), ho.data(), hr.data(), ho.size() * 2);
    std::vector<float> fo(f.size()), fr(f.size());
    opt.to_f32(wt, hr.data(), fo.data(), int64_t(f.size()));
    ref.to_f32(wt, hr.data(), fr.data(), int64_t(f.size()));
    t.compare_exact(std::string("to_f32 ") + type_name(wt), fo.data(), fr.data(), fo.size() * 4);
  }
}

void run(Isa isa, SelfTest& t) {
  Rand r;
  for (WType wt : {WType::kF32, WType::kF16, WType::kBF16}) check_products(isa, t, wt, r);
  check_conversions(isa, t, r);
  std::vector<float> a = values(37, r), b = values(37, r);
  for (int i = 0; i < 37; i += 6) a[size_t(i)] *= 40.0f;  // the exp's edges
  std::vector<float> ao = a, ar = a;
  dense_kernels(isa).silu_mul(ao.data(), b.data(), 37);
  dense_kernels_scalar().silu_mul(ar.data(), b.data(), 37);
  t.compare("silu_mul", ao.data(), ar.data(), ao.size(), 1e-5, 1e-6);
}

}  // namespace

KernelFamily& dense_family() {
  static KernelFamily f{"dense", run};
  return f;
}

}  // namespace metharme::kernels
