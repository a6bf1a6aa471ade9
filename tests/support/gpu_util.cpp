#include "support/gpu_util.h"

#ifdef METHARME_HAVE_VULKAN
#include <cstdlib>
#include <filesystem>

#include "util/error.h"

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

}  // namespace metharme::test
#endif
