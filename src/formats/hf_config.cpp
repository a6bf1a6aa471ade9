#include "formats/hf_config.h"

#include <filesystem>

#include "formats/gguf_llama.h"
#include "util/error.h"
#include "util/fs.h"

namespace metharme {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

int get_int(const json& j, const std::string& origin, const char* key, bool required, int def) {
  if (!j.contains(key) || j[key].is_null()) {
    if (required) fail(origin, ": missing required field '", key, "'");
    return def;
  }
  const json& v = j[key];
  if (!v.is_number_integer()) fail(origin, ": field '", key, "' must be an integer, got ", v.dump());
  int64_t x = v.get<int64_t>();
  if (x <= 0 || x > (1 << 30)) fail(origin, ": field '", key, "' = ", x, " is out of range");
  return int(x);
}

double get_num(const json& j, const std::string& origin, const char* key, double def) {
  if (!j.contains(key) || j[key].is_null()) return def;
  if (!j[key].is_number()) fail(origin, ": field '", key, "' must be a number, got ", j[key].dump());
  return j[key].get<double>();
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
  c.hidden_size = get_int(j, origin, "hidden_size", true, 0);
  c.intermediate_size = get_int(j, origin, "intermediate_size", true, 0);
  c.num_attention_heads = get_int(j, origin, "num_attention_heads", true, 0);
  c.num_hidden_layers = get_int(j, origin, "num_hidden_layers", true, 0);
  c.vocab_size = get_int(j, origin, "vocab_size", true, 0);
  c.num_key_value_heads = get_int(j, origin, "num_key_value_heads", false, c.num_attention_heads);
  c.max_position_embeddings = get_int(j, origin, "max_position_embeddings", false, 2048);
  if (c.hidden_size % c.num_attention_heads != 0)
    fail(origin, ": hidden_size ", c.hidden_size, " is not a multiple of num_attention_heads ", c.num_attention_heads);
  c.head_dim = get_int(j, origin, "head_dim", false, c.hidden_size / c.num_attention_heads);
  if (c.head_dim % 2) fail(origin, ": head_dim ", c.head_dim, " must be even for RoPE");
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    fail(origin, ": num_attention_heads ", c.num_attention_heads, " is not a multiple of num_key_value_heads ",
         c.num_key_value_heads);
  c.rms_norm_eps = get_num(j, origin, "rms_norm_eps", 1e-6);
  c.rope_theta = get_num(j, origin, "rope_theta", 10000.0);
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
    fail(origin, ": rope_scaling ", j["rope_scaling"].dump(), " is not supported");
  if (j.contains("tie_word_embeddings")) {
    if (!j["tie_word_embeddings"].is_boolean()) fail(origin, ": field 'tie_word_embeddings' must be a boolean");
    c.tie_word_embeddings = j["tie_word_embeddings"].get<bool>();
  }
  if (j.contains("bos_token_id") && j["bos_token_id"].is_number_integer()) c.bos_token_id = j["bos_token_id"].get<int>();
  if (j.contains("eos_token_id")) {
    const json& e = j["eos_token_id"];
    if (e.is_number_integer()) {
      c.eos_token_ids = {e.get<int>()};
    } else if (e.is_array()) {
      c.eos_token_ids.clear();
      for (const auto& x : e)
        if (x.is_number_integer()) c.eos_token_ids.push_back(x.get<int>());
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
  json j;
  try {
    j = json::parse(read_text_file(path));
  } catch (const json::parse_error& e) {
    fail(path, ": not valid JSON: ", e.what());
  }
  LlamaConfig c = parse_llama_config(j, path);
  std::string qc = (fs::path(dir) / "quantize_config.json").string();
  if (c.quantization_config.is_null() && fs::exists(qc)) {
    try {
      c.quantization_config = json::parse(read_text_file(qc));
    } catch (const json::parse_error& e) {
      fail(qc, ": not valid JSON: ", e.what());
    }
    if (!c.quantization_config.is_object()) fail(qc, ": not a JSON object");
  }
  return c;
}

}  // namespace metharme
