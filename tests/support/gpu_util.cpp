#include "support/gpu_util.h"

#ifdef METHARME_HAVE_VULKAN
#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "ops/i8_linear.h"
#include "util/error.h"
#include "util/half.h"

namespace metharme::test {

int prefer_lavapipe() {
  const char* lvp = "/usr/share/vulkan/icd.d/lvp_icd.x86_64.json";
  if (std::filesystem::exists(lvp)) setenv("VK_ICD_FILENAMES", lvp, /*overwrite=*/0);
  const char* d = std::getenv("METHARME_TEST_GPU_DEVICE");
  return d ? std::atoi(d) : 0;
}

std::unique_ptr<gpu::Context> open_test_gpu(std::string* why) {
  const int index = prefer_lavapipe();
  try {
    return gpu::Context::open(index);
  } catch (const Error& e) {
    *why = e.what();
    return nullptr;
  }
}

Gptq::Gptq(int N, int K, int gs, bool act_order, std::mt19937& rng) {
  const int G = (K + gs - 1) / gs;
  std::uniform_int_distribution<uint32_t> word;
  qweight.resize(size_t((K + 7) / 8) * N);
  for (auto& w : qweight) w = word(rng);
  qzeros.resize(size_t(G) * ((N + 7) / 8));
  for (auto& w : qzeros) w = word(rng) & 0xEEEEEEEEu;
  std::uniform_real_distribution<float> sd(1e-3f, 2e-2f);
  scales.resize(size_t(G) * N);
  for (auto& s : scales) s = f32_to_fp16(sd(rng));
  src.n = N;
  src.k = K;
  src.n_groups = G;
  src.group_size = gs;
  src.qweight = qweight.data();
  src.qzeros = qzeros.data();
  src.scales = scales.data();
  src.name = "gpu test";
  if (act_order) {
    for (int k = 0; k < K; ++k) g_idx.push_back(k / gs);
    std::shuffle(g_idx.begin(), g_idx.end(), rng);
    src.g_idx = g_idx.data();
  }
}

ops::Linear random_i8_linear(int n, int k, int sb, bool adds, int lo, int hi, std::mt19937& rng) {
  auto w = ops::i8_alloc(n, k, sb, adds, "gpu test");
  std::uniform_int_distribution<int> code(lo, hi);
  std::uniform_real_distribution<float> sd(1e-3f, 2e-2f);
  for (int r = 0; r < n; ++r)
    for (int i = 0; i < k; ++i) {
      ops::i8_set_code(*w, r, i, int8_t(code(rng)));
      if (i % sb == 0) ops::i8_scale(*w, r, i) = sd(rng);
      if (adds && i % 32 == 0) ops::i8_add(*w, r, i) = -sd(rng) * 4;
    }
  ops::i8_finish(*w);
  ops::Linear l;
  l.kind = ops::Linear::Kind::kI8;
  l.n_out = n;
  l.n_in = k;
  l.i8 = w;
  return l;
}

}  // namespace metharme::test
#endif
