// The matmul shaders, plain against subgroup builds (gpu/subgroup.h), on one Vulkan device: two
// contexts, one opened with METHARME_VK_SUBGROUPS=0, the same random matrix uploaded to both
// (--type q4: act-order GPTQ, group size 128; i8: int8 codes with a scale per 32 rows, GGUF Q8_0's
// layout; f16: dense fp16). Each round times, for each row count M, a command
// buffer of
// --reps products on the plain context and then on the subgroup one (alternated, so the drift of
// a shared machine hits both alike) and prints the median round's time per product.
//
//   build/bench/vulkan_matmul_bench [--type q4|i8|f16] [--n 4096] [--k 4096] [--rows 1,8,64]
//                                   [--rounds 5] [--reps 4]
//
// Runs on the driver VK_ICD_FILENAMES selects (lavapipe, software Vulkan on the CPU, if unset):
// lavapipe's figures are CPU figures and say nothing about a graphics card.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#ifdef METHARME_HAVE_VULKAN
#include "gpu/ops.h"
#include "ops/i8_linear.h"
#include "support/gpu_util.h"
#include "util/half.h"

namespace metharme {
namespace {

struct Options {
  int n = 4096, k = 4096, rounds = 5, reps = 4;
  std::string type = "q4";
  std::vector<int> rows = {1, 8, 64};
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--type") o.type = v;
    if (a == "--n") o.n = std::atoi(v.c_str());
    if (a == "--k") o.k = std::atoi(v.c_str());
    if (a == "--rounds") o.rounds = std::atoi(v.c_str());
    if (a == "--reps") o.reps = std::atoi(v.c_str());
    if (a == "--rows") {
      o.rows.clear();
      for (size_t p = 0; p < v.size();) {
        o.rows.push_back(std::atoi(v.c_str() + p));
        p = v.find(',', p);
        p = p == std::string::npos ? v.size() : p + 1;
      }
    }
  }
  return o;
}

// Milliseconds per product for `reps` products of M rows recorded in one command buffer.
double time_products(gpu::Context& ctx, const gpu::DeviceLinear& d, gpu::Buffer x, gpu::Buffer y, int M, int reps) {
  const auto t0 = std::chrono::steady_clock::now();
  ctx.begin();
  for (int r = 0; r < reps; ++r) gpu::matmul(ctx, d, x, y, M);
  ctx.submit();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / reps;
}

int run(const Options& o) {
  std::string why;
  setenv("METHARME_VK_SUBGROUPS", "0", 1);
  auto plain = test::open_test_gpu(&why);
  unsetenv("METHARME_VK_SUBGROUPS");
  auto sg = plain ? test::open_test_gpu(&why) : nullptr;
  if (!sg) return std::fprintf(stderr, "no Vulkan device: %s\n", why.c_str()), 1;
  const gpu::DeviceInfo& info = sg->info();
  std::printf("device: %s, subgroups of %u; subgroup shaders %s%s\n", info.name.c_str(), info.subgroup_size,
              info.subgroup_shaders ? "used" : "NOT used: ", info.subgroup_shaders ? "" : info.subgroup_note.c_str());
  std::mt19937 rng(1);
  test::Gptq g(o.n, o.k, 128, true, rng);
  std::vector<uint16_t> w16(o.type == "f16" ? size_t(o.n) * o.k : 0);
  for (auto& w : w16) w = f32_to_fp16(0.02f * float(int(rng() % 201) - 100) / 100);
  ops::Linear l = ops::make_dense_linear(kernels::WType::kF16, w16.data(), o.n, o.k);
  if (o.type == "q4") {
    l.kind = ops::Linear::Kind::kQ4;
    l.q4 = ops::q4_repack(g.src, 2);
  } else if (o.type == "i8") {
    l.kind = ops::Linear::Kind::kI8;
    auto w = ops::i8_alloc(o.n, o.k, 32, false, "bench");
    for (int n = 0; n < o.n; ++n)
      for (int k = 0; k < o.k; ++k) {
        ops::i8_set_code(*w, n, k, int8_t(int(rng() % 256) - 128));
        if (k % 32 == 0) ops::i8_scale(*w, n, k) = 1e-3f;
      }
    ops::i8_finish(*w);
    l.i8 = w;
  }
  const int max_m = *std::max_element(o.rows.begin(), o.rows.end());
  std::vector<float> xs(size_t(max_m) * o.k);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& v : xs) v = nd(rng);
  struct Side {
    gpu::Context* ctx;
    gpu::DeviceLinear d;
    gpu::Buffer x, y;
  };
  Side sides[2];
  for (int s = 0; s < 2; ++s) {
    gpu::Context& c = s ? *sg : *plain;
    sides[s] = {&c, gpu::upload_linear(c, l, "bench"), c.alloc(xs.size() * 4, "x"),
                c.alloc(size_t(max_m) * o.n * 4, "y")};
    c.upload(sides[s].x, xs.data(), xs.size() * 4);
    c.reserve_staging(1 << 16);
    for (int M : o.rows) time_products(c, sides[s].d, sides[s].x, sides[s].y, M, 1);  // pipelines built
  }
  std::vector<std::vector<double>> ms(o.rows.size() * 2);
  for (int round = 0; round < o.rounds; ++round)
    for (size_t i = 0; i < o.rows.size(); ++i)
      for (int s = 0; s < 2; ++s)
        ms[i * 2 + size_t(s)].push_back(
            time_products(*sides[s].ctx, sides[s].d, sides[s].x, sides[s].y, o.rows[i], o.reps));
  std::printf("%s %dx%d (N x K); median of %d rounds of %d products\n",
              o.type == "q4"   ? "int4 act-order g128"
              : o.type == "i8" ? "int8 codes, scale per 32"
                               : "f16",
              o.n, o.k, o.rounds, o.reps);
  std::printf("| M | plain ms | subgroups ms | plain / subgroups |\n|---|---|---|---|\n");
  for (size_t i = 0; i < o.rows.size(); ++i) {
    double med[2];
    for (int s = 0; s < 2; ++s) {
      auto v = ms[i * 2 + size_t(s)];
      std::sort(v.begin(), v.end());
      med[s] = v[v.size() / 2];
    }
    std::printf("| %d | %.2f | %.2f | %.2f |\n", o.rows[i], med[0], med[1], med[0] / med[1]);
  }
  for (auto& s : sides) gpu::free_linear(*s.ctx, s.d);
  return 0;
}

}  // namespace
}  // namespace metharme

int main(int argc, char** argv) { return metharme::run(metharme::parse(argc, argv)); }
#else
int main() {
  std::puts("this build has no Vulkan support (METHARME_VULKAN=OFF)");
  return 0;
}
#endif
