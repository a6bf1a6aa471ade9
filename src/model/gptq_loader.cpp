#include "model/gptq_loader.h"

#include "util/error.h"

namespace metharme {

bool has_gptq_linear(const TensorStore& store, const std::string& prefix) {
  return store.find(prefix + ".qweight") != nullptr;
}

ops::Linear load_gptq_linear(const TensorStore&, const LlamaConfig&, const std::string& prefix, int, int,
                             std::vector<std::string>&) {
  fail(prefix, ": GPTQ checkpoints are not supported yet");
}

}  // namespace metharme
