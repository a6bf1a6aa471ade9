// Opening a Vulkan device for the GPU tests. Unless VK_ICD_FILENAMES is already set, Mesa's
// lavapipe (software Vulkan on the CPU) is chosen, so the tests run alike on every machine;
// set VK_ICD_FILENAMES (and METHARME_TEST_GPU_DEVICE, default 0) to test a real GPU instead.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ops/linear.h"
#include "ops/q4_linear.h"

#ifdef METHARME_HAVE_VULKAN
#include "gpu/device.h"

namespace metharme::test {

// The test device, or null with *why saying why there is none (the caller skips).
std::unique_ptr<gpu::Context> open_test_gpu(std::string* why);
// Points the Vulkan loader at lavapipe when nothing else was chosen; returns the device index to use.
int prefer_lavapipe();

// A random GPTQ linear (codes, zeros, fp16 scales, optional shuffled g_idx) in checkpoint form.
struct Gptq {
  std::vector<uint32_t> qweight, qzeros;
  std::vector<uint16_t> scales;
  std::vector<int32_t> g_idx;
  ops::GptqSource src;
  Gptq(int N, int K, int gs, bool act_order, std::mt19937& rng);
};

// A random int8-code linear (ops/i8_linear.h): codes uniform in [lo, hi], a scale per sb rows,
// and per-32 adds when `adds`.
ops::Linear random_i8_linear(int n, int k, int sb, bool adds, int lo, int hi, std::mt19937& rng);

}  // namespace metharme::test
#endif
