#include "formats/gguf_llama.h"

#include <cmath>
#include <limits>
#include <utility>

#include "util/error.h"

namespace metharme {

namespace {

int positive_int(const GgufFile& f, const std::string& key, int64_t def = -1) {
  if (def < 0 && !f.has(key)) fail(f.path(), ": missing GGUF metadata '", key, "'");
  const uint64_t v = f.get_uint(key, uint64_t(def < 0 ? 0 : def));
  if (v == 0 || v > (1u << 30)) fail(f.path(), ": metadata '", key, "' = ", v, " is out of range");
  return int(v);
}

double rope_float(const GgufFile& f, const std::string& key, double def, double lo, double hi) {
  const double x = f.get_float(key, def);
  if (!(x >= lo && x <= hi)) fail(f.path(), ": metadata '", key, "' = ", x, " is out of range (", lo, " to ", hi, ")");
  return x;
}

// llama.rope.scaling.* as llama.cpp reads them: the factor applies as linear scaling unless the
// type is yarn (a missing type or "none" with a factor still scales positions there).
RopeScaling gguf_rope_scaling(const GgufFile& f) {
  RopeScaling s;
  const std::string type = f.get_str("llama.rope.scaling.type", "linear");
  if (type != "none" && type != "linear" && type != "yarn")
    fail(f.path(), ": llama.rope.scaling.type '", type, "' is not supported (none, linear or yarn)");
  const std::string fkey = f.has("llama.rope.scaling.factor") ? "llama.rope.scaling.factor" : "llama.rope.scale_linear";
  const double factor = f.has(fkey) ? f.get_float(fkey, 0) : 0.0;  // 0: no scaling, as in llama.cpp
  if (factor != 0 && !(factor >= kMinRopeFactor && factor <= kMaxRopeFactor))
    fail(f.path(), ": metadata '", fkey, "' = ", factor, " is out of range (", kMinRopeFactor, " to ", kMaxRopeFactor,
         ")");
  // Keys whose non-neutral values change the rotation in ways not implemented here
  // (yarn_ext_factor: llama.cpp's -1 means "the scheme's own", 1 for YaRN).
  const std::pair<const char*, double> neutral[] = {{"llama.rope.scaling.attn_factor", 1.0},
                                                    {"llama.rope.scaling.yarn_attn_factor", 1.0},
                                                    {"llama.rope.scaling.yarn_ext_factor", 1.0},
                                                    {"llama.rope.scaling.yarn_log_multiplier", 0.0}};
  for (const auto& [key, v] : neutral) {
    const double x = f.has(key) ? f.get_float(key, v) : v;
    if (x != v && !(v == 1.0 && x == -1.0 && std::string(key).ends_with("ext_factor")))
      fail(f.path(), ": metadata '", key, "' = ", x, " is not supported (only ", v, ")");
  }
  if (type == "yarn") {
    s.kind = RopeKind::kYarn;
    s.factor = factor == 0 ? 1.0 : factor;
    s.beta_fast = rope_float(f, "llama.rope.scaling.yarn_beta_fast", 32, 1e-3, 1e4);
    s.beta_slow = rope_float(f, "llama.rope.scaling.yarn_beta_slow", 1, 1e-3, 1e4);
  } else if (factor != 0 && factor != 1) {
    s.kind = RopeKind::kLinear;
    s.factor = factor;
  }
  if (f.has("llama.rope.scaling.original_context_length"))
    s.original_max_positions = positive_int(f, "llama.rope.scaling.original_context_length");
  return s;
}

}  // namespace

std::string gguf_blk(int layer, const std::string& what) { return cat("blk.", layer, ".", what, ".weight"); }

LlamaConfig gguf_llama_config(const GgufFile& f) {
  const std::string arch = f.get_str("general.architecture", "");
  if (arch != "llama") fail(f.path(), ": general.architecture is '", arch, "'; only 'llama' models are supported");
  LlamaConfig c;
  c.hidden_size = positive_int(f, "llama.embedding_length");
  c.intermediate_size = positive_int(f, "llama.feed_forward_length");
  c.num_hidden_layers = positive_int(f, "llama.block_count");
  c.num_attention_heads = positive_int(f, "llama.attention.head_count");
  c.num_key_value_heads = positive_int(f, "llama.attention.head_count_kv", c.num_attention_heads);
  c.max_position_embeddings = positive_int(f, "llama.context_length", 2048);
  if (c.hidden_size % c.num_attention_heads != 0)
    fail(f.path(), ": llama.embedding_length ", c.hidden_size, " is not a multiple of llama.attention.head_count ",
         c.num_attention_heads);
  c.head_dim = c.hidden_size / c.num_attention_heads;
  for (const char* k : {"llama.attention.key_length", "llama.attention.value_length", "llama.rope.dimension_count"})
    if (f.has(k) && f.get_uint(k) != uint64_t(c.head_dim))
      fail(f.path(), ": metadata '", k, "' = ", f.get_uint(k), " differs from the head size ", c.head_dim,
           " (not supported)");
  if (c.head_dim % 2) fail(f.path(), ": head size ", c.head_dim, " must be even for RoPE");
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    fail(f.path(), ": llama.attention.head_count ", c.num_attention_heads,
         " is not a multiple of llama.attention.head_count_kv ", c.num_key_value_heads);
  if (f.get_uint("llama.expert_count", 0) > 0)
    fail(f.path(), ": llama.expert_count: mixture-of-experts models are not supported");
  if (!f.has("llama.attention.layer_norm_rms_epsilon"))
    fail(f.path(), ": missing GGUF metadata 'llama.attention.layer_norm_rms_epsilon'");
  c.rms_norm_eps = f.get_float("llama.attention.layer_norm_rms_epsilon", 0);
  if (!(c.rms_norm_eps > 0 && c.rms_norm_eps < 1))
    fail(f.path(), ": llama.attention.layer_norm_rms_epsilon = ", c.rms_norm_eps, " is out of range");
  c.rope_theta = f.get_float("llama.rope.freq_base", 10000.0);
  if (!(c.rope_theta > 1 && std::isfinite(c.rope_theta)))
    fail(f.path(), ": llama.rope.freq_base = ", c.rope_theta, " is out of range");
  c.rope_scaling = gguf_rope_scaling(f);
  if (f.find_tensor("rope_freqs.weight"))
    fail(f.path(), ": tensor 'rope_freqs.weight' (Llama 3.1 style RoPE frequency scaling) is not supported");
  // Vocabulary size: the token list, else llama.vocab_size, else the embedding's rows.
  int64_t vocab = 0;
  if (const GgufValue* t = f.find("tokenizer.ggml.tokens"); t && t->type == GgufType::kArr) vocab = int64_t(t->count);
  if (!vocab) vocab = int64_t(f.get_uint("llama.vocab_size", 0));
  if (const GgufTensorInfo* e = f.find_tensor("token_embd.weight"); e && e->dims.size() == 2) {
    if (vocab && e->dims[1] != vocab)
      fail(f.path(), ": token_embd.weight has ", e->dims[1], " rows but the vocabulary has ", vocab, " tokens");
    vocab = e->dims[1];
  }
  if (vocab <= 0 || vocab > (1 << 30)) fail(f.path(), ": cannot tell the vocabulary size (no tokenizer.ggml.tokens)");
  c.vocab_size = int(vocab);
  c.tie_word_embeddings = f.find_tensor("output.weight") == nullptr;
  c.bos_token_id = int(f.get_int("tokenizer.ggml.bos_token_id", 1));
  c.eos_token_ids = {int(f.get_int("tokenizer.ggml.eos_token_id", 2))};
  c.torch_dtype = "gguf";
  c.raw = nlohmann::json{{"architectures", {"LlamaForCausalLM"}}, {"gguf", f.path()}};
  return c;
}

}  // namespace metharme
