// Opening a Vulkan device for the GPU tests. Unless VK_ICD_FILENAMES is already set, Mesa's
// lavapipe (software Vulkan on the CPU) is chosen, so the tests run alike on every machine;
// set VK_ICD_FILENAMES (and METHARME_TEST_GPU_DEVICE, default 0) to test a real GPU instead.
#pragma once

#include <memory>
#include <string>

#ifdef METHARME_HAVE_VULKAN
#include "gpu/device.h"

namespace metharme::test {

// The test device, or null with *why saying why there is none (the caller skips).
std::unique_ptr<gpu::Context> open_test_gpu(std::string* why);
// Points the Vulkan loader at lavapipe when nothing else was chosen; returns the device index to use.
int prefer_lavapipe();

}  // namespace metharme::test
#endif
