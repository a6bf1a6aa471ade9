// config.json text through the same parse and validation as a model folder's.
#include "formats/hf_config.h"
#include "util/error.h"
#include "util/json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace metharme;
  try {
    nlohmann::json j = parse_json(std::string_view(reinterpret_cast<const char*>(data), size), "config.json");
    LlamaConfig c = parse_llama_config(j, "config.json");
    // The products the model code sizes buffers with must not overflow.
    if (c.q_dim() <= 0 || c.kv_dim() <= 0 || c.head_dim <= 0) __builtin_trap();
  } catch (const Error&) {
  }
  return 0;
}
