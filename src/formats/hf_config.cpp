#include "formats/hf_config.h"

#include <cstdint>
#include <filesystem>

#include "formats/gguf_llama.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"

namespace metharme {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

// Upper bounds well above every released LLaMA-family model; they keep products such as
// n_heads * head_dim and layer counts far from int overflow and refuse absurd allocations.
constexpr int64_t kMaxHidden = 1 << 17, kMaxFfn = 1 << 20, kMaxHeads = 1 << 12, kMaxLayers = 1 << 12;
constexpr int64_t kMaxVocab = 1 << 22, kMaxPositions = 1 << 24, kMaxHeadDim = 1024;  // RoPE handles <= 1024

int get_int(const json& j, const std::string& origin, const char* key, bool required, int def, int64_t max) {
  if (!j.contains(key) || j[key].is_null()) {
    if (required) fail(origin, ": missing required field '", key, "'");
    return def;
  }
  const json& v = j[key];
  if (!v.is_number_integer()) fail(origin, ": field '", key, "' must be an integer, got ", v.dump());
  if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(max))
    fail(origin, ": field '", key, "' = ", v.dump(), " is out of range (1 to ", max, ")");
  int64_t x = v.get<int64_t>();
  if (x <= 0 || x > max) fail(origin, ": field '", key, "' = ", x, " is out of range (1 to ", max, ")");
  return int(x);
}

// A finite number in (lo, hi].
double get_num(const json& j, const std::string& origin, const char* key, double def, double lo, double hi) {
  if (!j.contains(key) || j[key].is_null()) return def;
  if (!j[key].is_number()) fail(origin, ": field '", key, "' must be a number, got ", j[key].dump());
  double x = j[key].get<double>();
  if (!(x > lo && x <= hi)) fail(origin, ": field '", key, "' = ", j[key].dump(), " is out of range (", lo, " < value <= ", hi, ")");
  return x;
}

// A token id: an integer in [0, 2^31).
bool get_token_id(const json& v, const std::string& origin, const char* key, int* out) {
  if (!v.is_number_integer()) return false;
  if (v.is_number_unsigned() ? v.get<uint64_t>() > uint64_t(INT32_MAX) : v.get<int64_t>() < 0)
    fail(origin, ": field '", key, "' = ", v.dump(), " is not a valid token id");
  *out = int(v.get<int64_t>());
  return true;
}

}  // namespace

LlamaConfig parse_llama_config(const json& j, const std::string& origin) {
  if (!j.is_object()) fail(origin, ": not a JSON object");
  LlamaConfig c;
  c.raw = j;
  if (j.contains("architectures") && j["architectures"].is_array()) {
    bool ok = false;
    for (const auto& a : j["architectures"])
      if (a.is_string() && (a == "LlamaForCausalLM" || a == "LLaMAForCausalLM")) ok = true;
    if (!ok) fail(origin, ": architectures ", j["architectures"].dump(), " is not LlamaForCausalLM");
  }
  c.hidden_size = get_int(j, origin, "hidden_size", true, 0, kMaxHidden);
  c.intermediate_size = get_int(j, origin, "intermediate_size", true, 0, kMaxFfn);
  c.num_attention_heads = get_int(j, origin, "num_attention_heads", true, 0, kMaxHeads);
  c.num_hidden_layers = get_int(j, origin, "num_hidden_layers", true, 0, kMaxLayers);
  c.vocab_size = get_int(j, origin, "vocab_size", true, 0, kMaxVocab);
  c.num_key_value_heads = get_int(j, origin, "num_key_value_heads", false, c.num_attention_heads, kMaxHeads);
  c.max_position_embeddings = get_int(j, origin, "max_position_embeddings", false, 2048, kMaxPositions);
  if (c.hidden_size % c.num_attention_heads != 0)
    fail(origin, ": hidden_size ", c.hidden_size, " is not a multiple of num_attention_heads ", c.num_attention_heads);
  c.head_dim = get_int(j, origin, "head_dim", false, c.hidden_size / c.num_attention_heads, kMaxHeadDim);
  if (c.head_dim > kMaxHeadDim) fail(origin, ": head size ", c.head_dim, " is above the supported ", kMaxHeadDim);
  if (c.head_dim % 2) fail(origin, ": head_dim ", c.head_dim, " must be even for RoPE");
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    fail(origin, ": num_attention_heads ", c.num_attention_heads, " is not a multiple of num_key_value_heads ",
         c.num_key_value_heads);
  // Products used as sizes: q_dim() and kv_dim() must stay well inside int.
  if (int64_t(c.num_attention_heads) * c.head_dim > kMaxFfn)
    fail(origin, ": num_attention_heads ", c.num_attention_heads, " x head_dim ", c.head_dim, " is implausibly large");
  c.rms_norm_eps = get_num(j, origin, "rms_norm_eps", 1e-6, 0.0, 1.0);
  c.rope_theta = get_num(j, origin, "rope_theta", 10000.0, 0.0, 1e12);
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
    fail(origin, ": rope_scaling ", j["rope_scaling"].dump(), " is not supported");
  if (j.contains("tie_word_embeddings")) {
    if (!j["tie_word_embeddings"].is_boolean()) fail(origin, ": field 'tie_word_embeddings' must be a boolean");
    c.tie_word_embeddings = j["tie_word_embeddings"].get<bool>();
  }
  if (j.contains("bos_token_id")) get_token_id(j["bos_token_id"], origin, "bos_token_id", &c.bos_token_id);
  if (j.contains("eos_token_id")) {
    const json& e = j["eos_token_id"];
    int id = 0;
    if (get_token_id(e, origin, "eos_token_id", &id)) {
      c.eos_token_ids = {id};
    } else if (e.is_array()) {
      c.eos_token_ids.clear();
      for (const auto& x : e)
        if (get_token_id(x, origin, "eos_token_id", &id)) c.eos_token_ids.push_back(id);
    }
  }
  if (j.contains("torch_dtype") && j["torch_dtype"].is_string()) c.torch_dtype = j["torch_dtype"].get<std::string>();
  if (j.contains("quantization_config") && j["quantization_config"].is_object())
    c.quantization_config = j["quantization_config"];
  return c;
}

LlamaConfig load_llama_config(const std::string& dir) {
  if (!fs::exists(dir)) fail(dir, ": model folder does not exist");
  if (is_gguf_file(dir)) return gguf_llama_config(GgufFile(dir));
  if (!fs::is_directory(dir)) fail(dir, ": is not a folder or a GGUF file (pass the model folder, not a file inside it)");
  std::string path = (fs::path(dir) / "config.json").string();
  if (!fs::exists(path)) fail(dir, ": no config.json in the model folder");
  const json j = parse_json(read_text_file(path), path);
  LlamaConfig c = parse_llama_config(j, path);
  std::string qc = (fs::path(dir) / "quantize_config.json").string();
  if (c.quantization_config.is_null() && fs::exists(qc)) {
    c.quantization_config = parse_json(read_text_file(qc), qc);
    if (!c.quantization_config.is_object()) fail(qc, ": not a JSON object");
  }
  return c;
}

}  // namespace metharme
