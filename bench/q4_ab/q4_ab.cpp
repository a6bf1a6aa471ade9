// In-process A/B of two versions of the AVX2 int4 kernel file (src/kernels/q4_avx2.cpp; with
// Q4_AB_AVX512, of src/kernels/q4_avx512.cpp, which borrows the AVX2 activation quantizer): both are
// compiled into this program (as VA and VB, each inside its own namespace) and their batched
// gemm_q8 calls alternate on the same data, one thread. On a shared VM whose speed drifts by
// 10-30% within minutes, comparing two binaries run one after the other mostly measures the
// drift; alternating single calls inside one process does not. Build and run with q4_ab.sh.
// Exit status: 0 when A and B agree, 1 when they differ by more than 1e-4 relative, 77 without AVX2.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/q4.h"

#ifdef Q4_AB_AVX512
#include "kernels/q4_avx2.cpp"  // the AVX2 table the AVX-512 one borrows from
#define Q4_AB_TABLE q4_kernels_avx512
#else
#define Q4_AB_TABLE q4_kernels_avx2
#endif

namespace va {
using namespace ::metharme::kernels;
#include VA
}  // namespace va
namespace vb {
using namespace ::metharme::kernels;
#include VB
}  // namespace vb

using metharme::kernels::Q4Matrix;
using metharme::kernels::Q8Act;

int main(int argc, char** argv) {
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") || !__builtin_cpu_supports("f16c")) {
    std::printf("q4_ab: this CPU lacks AVX2, FMA or F16C\n");
    return 77;
  }
#ifdef Q4_AB_AVX512
  if (!__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("avx512vnni")) {
    std::printf("q4_ab: this CPU lacks AVX-512 VNNI\n");
    return 77;
  }
#endif
  // q4_ab N K M ITERS: a random N x K matrix (groups of 128), M activation rows.
  const int N = argc > 1 ? std::atoi(argv[1]) : 2048, K = argc > 2 ? std::atoi(argv[2]) : 2048;
  const int M = argc > 3 ? std::atoi(argv[3]) : 8, iters = argc > 4 ? std::atoi(argv[4]) : 200;
  if (N <= 0 || K <= 0 || K % 128 != 0 || M <= 0 || iters <= 0) {
    std::fprintf(stderr, "usage: q4_ab N K M ITERS (K a multiple of 128)\n");
    return 2;
  }
  constexpr int gs = 128, block = 128;
  Q4Matrix w;
  w.n = N;
  w.kp = K;
  w.gs = gs;
  w.n_groups = K / gs;
  w.n_tiles = (N + 15) / 16;
  std::mt19937 rng(1);
  std::vector<uint8_t> qs(size_t(w.n_tiles) * w.tile_qs_bytes());
  for (auto& b : qs) b = uint8_t(rng());
  std::vector<uint16_t> sc(size_t(w.n_tiles) * size_t(w.n_groups) * 16);
  for (auto& s : sc) s = uint16_t(0x2000 + (rng() & 0x3ff));  // fp16 scales in [2^-7, 2^-6)
  std::vector<uint8_t> zp(sc.size());
  for (auto& z : zp) z = uint8_t(1 + rng() % 15);
  w.qs = qs.data();
  w.scales = sc.data();
  w.zeros = zp.data();
  std::vector<float> x(size_t(M) * size_t(K));
  std::normal_distribution<float> nd;
  for (auto& v : x) v = nd(rng);
  std::vector<int8_t> xq(x.size());
  std::vector<float> xd(size_t(M) * size_t(K / block));
  std::vector<int32_t> xs(xd.size());
  const auto& ka = va::metharme::kernels::Q4_AB_TABLE();
  const auto& kb = vb::metharme::kernels::Q4_AB_TABLE();
  for (int m = 0; m < M; ++m)
    ka.quantize_q8(x.data() + size_t(m) * size_t(K), K, block, xq.data() + size_t(m) * size_t(K),
                   xd.data() + size_t(m) * size_t(K / block), xs.data() + size_t(m) * size_t(K / block));
  const Q8Act a{xq.data(), xd.data(), xs.data(), K, block};
  std::vector<float> ya(size_t(M) * size_t(N)), yb(ya.size());
  ka.gemm_q8(w, a, M, 0, w.n_tiles, ya.data(), N);
  kb.gemm_q8(w, a, M, 0, w.n_tiles, yb.data(), N);
  double maxd = 0, maxv = 0;
  for (size_t i = 0; i < ya.size(); ++i) {
    maxd = std::max(maxd, double(std::fabs(ya[i] - yb[i])));
    maxv = std::max(maxv, double(std::fabs(ya[i])));
  }
  std::vector<double> ta, tb;
  for (int it = 0; it < iters; ++it)
    for (int v = 0; v < 2; ++v) {
      const auto t0 = std::chrono::steady_clock::now();
      (v ? kb : ka).gemm_q8(w, a, M, 0, w.n_tiles, (v ? yb : ya).data(), N);
      (v ? tb : ta).push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
  std::sort(ta.begin(), ta.end());
  std::sort(tb.begin(), tb.end());
  const double macs = double(M) * N * K;
  auto rate = [&](const std::vector<double>& t, size_t i) { return macs / t[i] / 1e9; };
  const size_t q1 = ta.size() / 4, q2 = ta.size() / 2;
  std::printf("N=%d K=%d M=%d  max |A-B| %.3g (max |A| %.3g)\n", N, K, M, maxd, maxv);
  std::printf("  G multiply-adds/s  A: best %.1f p25 %.1f median %.1f | B: best %.1f p25 %.1f median %.1f | B/A at p25 %.3f\n",
              rate(ta, 0), rate(ta, q1), rate(ta, q2), rate(tb, 0), rate(tb, q1), rate(tb, q2), ta[q1] / tb[q1]);
  return maxd <= 1e-4 * std::max(1.0, maxv) ? 0 : 1;
}
