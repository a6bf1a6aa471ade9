#include "support/gpu_util.h"

#ifdef METHARME_HAVE_VULKAN
#include <algorithm>
#include <cstdlib>
#include <filesystem>

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

}  // namespace metharme::test
#endif
