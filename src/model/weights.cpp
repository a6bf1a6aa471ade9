#include "model/weights.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <set>

#include "formats/gguf_reader.h"
#include "model/gguf_loader.h"
#include "model/gptq_loader.h"
#include "util/error.h"
#include "util/mapped_file.h"

namespace metharme {

namespace {

void check_shape(const TensorView& t, std::vector<int64_t> want) {
  if (t.shape != want)
    fail(t.source, ": tensor '", t.name, "' has shape ", shape_str(t.shape), ", expected ", shape_str(want));
}

std::vector<float> load_vector(const TensorStore& s, const std::string& name, int n, std::vector<std::string>& used) {
  const TensorView& t = s.get(name);
  check_shape(t, {n});
  wtype_of(t);
  used.push_back(name);
  return tensor_to_f32(t);
}

}  // namespace

kernels::WType wtype_of(const TensorView& t) {
  switch (t.dtype) {
    case DType::F32: return kernels::WType::kF32;
    case DType::F16: return kernels::WType::kF16;
    case DType::BF16: return kernels::WType::kBF16;
    default: fail(t.source, ": tensor '", t.name, "' has dtype ", dtype_name(t.dtype), ", expected F32, F16 or BF16");
  }
}

ops::Linear load_linear(const ModelWeights& m, const std::string& prefix, int n_out, int n_in,
                        std::vector<std::string>& used) {
  if (const TensorView* t = m.store.find(prefix + ".weight")) {
    check_shape(*t, {n_out, n_in});
    used.push_back(t->name);
    return ops::make_dense_linear(wtype_of(*t), t->data, n_out, n_in);
  }
  if (has_gptq_linear(m.store, prefix)) return load_gptq_linear(m.store, m.config, prefix, n_out, n_in, used);
  fail("missing tensor '", prefix, ".weight' (neither a dense weight nor GPTQ qweight/qzeros/scales)");
}

size_t ModelWeights::linear_bytes() const {
  size_t b = 0;
  for (const auto& l : layers)
    for (const ops::Linear* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) b += w->weight_bytes();
  return b;
}

size_t ModelWeights::bytes_per_token() const {
  return linear_bytes() + lm_head.weight_bytes() + size_t(config.hidden_size) * dtype_size(embed.dtype);
}

std::unique_ptr<ModelWeights> load_weights(const std::string& dir, const LoadOptions& opt) {
  if (is_gguf_file(dir)) return load_gguf_weights(dir, opt);
  auto m = std::make_unique<ModelWeights>();
  m->dir = dir;
  m->config = load_llama_config(dir);
  m->store = TensorStore::open_folder(dir);
  const LlamaConfig& c = m->config;
  const int d = c.hidden_size;
  std::vector<std::string> used;
  try {
    m->embed = m->store.get("model.embed_tokens.weight");
    check_shape(m->embed, {c.vocab_size, d});
    wtype_of(m->embed);
    used.push_back(m->embed.name);
    m->final_norm = load_vector(m->store, "model.norm.weight", d, used);
    if (c.tie_word_embeddings || !m->store.find("lm_head.weight")) {
      if (!c.tie_word_embeddings) fail("missing tensor 'lm_head.weight' (and tie_word_embeddings is false)");
      m->lm_head = ops::make_dense_linear(wtype_of(m->embed), m->embed.data, c.vocab_size, d);
    } else {
      m->lm_head = load_linear(*m, "lm_head", c.vocab_size, d, used);
    }
    if (m->lm_head.kind == ops::Linear::Kind::kDense) {
      // Decode streams the whole matrix every token; from a file mapping it comes in 4 KiB pages,
      // which hardware prefetchers do not cross. A copy on huge pages reads ~20% faster and costs
      // no extra resident memory (the file's pages are dropped).
      const size_t bytes = m->lm_head.weight_bytes();
      m->lm_head_copy = PageBuffer(bytes);
      m->lm_head_copy.advise_huge_pages();
      std::memcpy(m->lm_head_copy.data(), m->lm_head.dense.data, bytes);
      if (!c.tie_word_embeddings) drop_mapped_pages(m->lm_head.dense.data, bytes);
      m->lm_head.dense.data = m->lm_head_copy.data();
    }
    m->layers.resize(size_t(c.num_hidden_layers));
    for (int i = 0; i < c.num_hidden_layers; ++i) {
      std::string p = cat("model.layers.", i, ".");
      LayerWeights& l = m->layers[size_t(i)];
      l.attn_norm = load_vector(m->store, p + "input_layernorm.weight", d, used);
      l.ffn_norm = load_vector(m->store, p + "post_attention_layernorm.weight", d, used);
      l.wq = load_linear(*m, p + "self_attn.q_proj", c.q_dim(), d, used);
      l.wk = load_linear(*m, p + "self_attn.k_proj", c.kv_dim(), d, used);
      l.wv = load_linear(*m, p + "self_attn.v_proj", c.kv_dim(), d, used);
      l.wo = load_linear(*m, p + "self_attn.o_proj", d, c.q_dim(), used);
      l.w_gate = load_linear(*m, p + "mlp.gate_proj", c.intermediate_size, d, used);
      l.w_up = load_linear(*m, p + "mlp.up_proj", c.intermediate_size, d, used);
      l.w_down = load_linear(*m, p + "mlp.down_proj", d, c.intermediate_size, used);
    }
  } catch (const Error& e) {
    fail(dir, ": ", e.what());
  }
  // Describe the format by the first layer's linears.
  if (!m->layers.empty()) {
    std::set<std::string> kinds;
    for (const ops::Linear* w : {&m->layers[0].wq, &m->layers[0].w_down}) kinds.insert(w->describe());
    for (const auto& k : kinds) m->format += (m->format.empty() ? "" : "+") + k;
  }
  if (opt.warn_unknown && !opt.quiet) {
    std::set<std::string> u(used.begin(), used.end());
    std::vector<std::string> unknown;
    for (const auto& n : m->store.names())
      if (!u.count(n) && n.find("rotary_emb.inv_freq") == std::string::npos) unknown.push_back(n);
    if (!unknown.empty()) {
      std::string list;
      for (size_t i = 0; i < unknown.size() && i < 5; ++i) list += (i ? ", " : "") + unknown[i];
      if (unknown.size() > 5) list += cat(", ... (", unknown.size() - 5, " more)");
      std::fprintf(stderr, "warning: %s: ignoring %zu unknown tensor(s): %s\n", dir.c_str(), unknown.size(),
                   list.c_str());
    }
  }
  return m;
}

}  // namespace metharme
