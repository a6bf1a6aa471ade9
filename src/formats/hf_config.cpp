#include "formats/hf_config.h"

#include <algorithm>
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

// rope_scaling.<key>: a finite number in [lo, hi], or def when absent or null.
double rope_num(const json& r, const std::string& origin, const char* key, double def, double lo, double hi) {
  if (!r.contains(key) || r[key].is_null()) return def;
  if (!r[key].is_number()) fail(origin, ": field 'rope_scaling.", key, "' must be a number, got ", r[key].dump());
  const double x = r[key].get<double>();
  if (!(x >= lo && x <= hi))
    fail(origin, ": field 'rope_scaling.", key, "' = ", r[key].dump(), " is out of range (", lo, " to ", hi, ")");
  return x;
}

RopeKind rope_kind_of(const json& r, const std::string& origin) {
  std::string type;
  for (const char* k : {"rope_type", "type"}) {
    if (!r.contains(k) || r[k].is_null()) continue;
    if (!r[k].is_string()) fail(origin, ": field 'rope_scaling.", k, "' must be a string, got ", r[k].dump());
    const std::string t = r[k].get<std::string>();
    if (!type.empty() && t != type)
      fail(origin, ": rope_scaling gives two schemes, rope_type '", type, "' and type '", t, "'");
    type = t;
  }
  if (type.empty()) fail(origin, ": rope_scaling has no 'rope_type' (or 'type')");
  for (RopeKind k : {RopeKind::kLinear, RopeKind::kDynamic, RopeKind::kYarn, RopeKind::kLlama3})
    if (type == rope_kind_name(k)) return k;
  if (type == "default") return RopeKind::kNone;
  fail(origin, ": rope_scaling type '", type, "' is not supported (default, linear, dynamic, yarn or llama3)");
}

}  // namespace

RopeScaling parse_rope_scaling(const json& r, const std::string& origin) {
  if (!r.is_object()) fail(origin, ": field 'rope_scaling' must be an object or null, got ", r.dump());
  RopeScaling s;
  s.kind = rope_kind_of(r, origin);
  // Keys each scheme reads; "finetuned" (YaRN checkpoints) is informational everywhere.
  std::vector<std::string> known = {"rope_type", "type", "finetuned", "factor", "original_max_position_embeddings"};
  if (s.kind == RopeKind::kYarn)
    known.insert(known.end(), {"beta_fast", "beta_slow", "attention_factor", "mscale", "mscale_all_dim", "truncate"});
  if (s.kind == RopeKind::kLlama3) known.insert(known.end(), {"low_freq_factor", "high_freq_factor"});
  for (const auto& [k, v] : r.items())
    if (std::find(known.begin(), known.end(), k) == known.end())
      fail(origin, ": field 'rope_scaling.", k, "' does not apply to rope_type '", rope_kind_name(s.kind), "'");
  if (s.kind == RopeKind::kNone) return s;
  if (!r.contains("factor") || r["factor"].is_null()) fail(origin, ": missing required field 'rope_scaling.factor'");
  s.factor = rope_num(r, origin, "factor", 1, kMinRopeFactor, kMaxRopeFactor);
  const bool need_orig = s.kind == RopeKind::kLlama3;
  if (r.contains("original_max_position_embeddings") || need_orig)
    s.original_max_positions =
        get_int(r, origin + ": rope_scaling", "original_max_position_embeddings", need_orig, 0, kMaxPositions);
  if (s.kind == RopeKind::kYarn) {
    s.beta_fast = rope_num(r, origin, "beta_fast", 32, 1e-3, 1e4);
    s.beta_slow = rope_num(r, origin, "beta_slow", 1, 1e-3, 1e4);
    s.attention_factor = rope_num(r, origin, "attention_factor", 0, 1e-3, 100);
    s.mscale = rope_num(r, origin, "mscale", 0, 0, 100);
    s.mscale_all_dim = rope_num(r, origin, "mscale_all_dim", 0, 0, 100);
    if (r.contains("truncate") && !r["truncate"].is_null()) {
      if (!r["truncate"].is_boolean()) fail(origin, ": field 'rope_scaling.truncate' must be a boolean");
      s.truncate = r["truncate"].get<bool>();
    }
  }
  if (s.kind == RopeKind::kLlama3) {
    for (const char* k : {"low_freq_factor", "high_freq_factor"})
      if (!r.contains(k) || r[k].is_null()) fail(origin, ": missing required field 'rope_scaling.", k, "'");
    s.low_freq_factor = rope_num(r, origin, "low_freq_factor", 1, 1e-3, 1e4);
    s.high_freq_factor = rope_num(r, origin, "high_freq_factor", 4, 1e-3, 1e4);
    if (!(s.high_freq_factor > s.low_freq_factor))
      fail(origin, ": rope_scaling.high_freq_factor (", s.high_freq_factor, ") must be above low_freq_factor (",
           s.low_freq_factor, ")");
  }
  return s;
}

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
    c.rope_scaling = parse_rope_scaling(j["rope_scaling"], origin);
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
