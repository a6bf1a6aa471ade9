#include "model/offload.h"

#include <cstdio>

#include "util/error.h"

namespace metharme {

std::string OffloadPlan::describe() const {
  auto mib = [](size_t b) { return cat(double(b * 10 / (1 << 20)) / 10, " MiB"); };
  return cat(n_layers - first_layer, "/", n_layers, " layers", head ? " + output head" : "",
             " on the GPU: ", mib(weight_bytes), " weights, ", mib(kv_bytes), " KV cache, ", mib(scratch_bytes),
             " scratch");
}

#ifndef METHARME_HAVE_VULKAN
std::unique_ptr<GpuOffload> make_gpu_offload(const ModelWeights&, const RuntimeOptions&, int, const ops::RopeTable&) {
  std::fprintf(stderr, "GPU offload: this build has no Vulkan support (METHARME_VULKAN=OFF); running on the CPU\n");
  return nullptr;
}
#endif

}  // namespace metharme
