#include "model/gguf_loader.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <set>

#include "formats/ggml_quants.h"
#include "formats/gguf_llama.h"
#include "model/gguf_i8.h"
#include "model/gguf_q4.h"
#include "util/error.h"
#include "util/half.h"
#include "util/mapped_file.h"
#include "util/thread_pool.h"

namespace metharme {

namespace {

using kernels::WType;

struct Ctx {
  const GgufFile& f;
  ThreadPool& pool;
  std::vector<std::string>& used;
};

const GgufTensorInfo& expect(Ctx& c, const std::string& name, std::vector<int64_t> dims) {
  const GgufTensorInfo& t = c.f.tensor(name);
  if (t.dims != dims) {
    std::vector<int64_t> got(t.dims.rbegin(), t.dims.rend()), want(dims.rbegin(), dims.rend());
    fail(c.f.path(), ": tensor '", name, "' has shape ", shape_str(got), ", expected ", shape_str(want));
  }
  c.used.push_back(name);
  return t;
}

bool is_float(GgmlType t) { return t == GgmlType::kF32 || t == GgmlType::kF16 || t == GgmlType::kBF16; }
WType wtype(GgmlType t) { return t == GgmlType::kF32 ? WType::kF32 : t == GgmlType::kF16 ? WType::kF16 : WType::kBF16; }

// Source row of output row n (identity, or the Q/K reordering with heads of `qk_head_dim`).
int src_row(int n, int qk_head_dim) { return qk_head_dim ? hf_qk_row_to_gguf(n, qk_head_dim) : n; }

// Rows of t (a [N][K] matrix in GGUF order) into `out` in HF order: float types keep their bytes,
// quantized types are dequantized and rounded to f16. Returns the stored type.
WType rows_to(Ctx& c, const GgufTensorInfo& t, int N, int K, int qk_head_dim, uint8_t* out) {
  const size_t src_bytes = t.nbytes / size_t(N);
  const WType wt = is_float(t.type) ? wtype(t.type) : WType::kF16;
  const size_t dst_bytes = size_t(K) * (wt == WType::kF32 ? 4 : 2);
  c.pool.parallel_for(
      N, 1,
      [&](int64_t n0, int64_t n1, int) {
        std::vector<float> tmp(is_float(t.type) ? 0 : size_t(K));
        for (int64_t n = n0; n < n1; ++n) {
          const uint8_t* src = t.data + size_t(src_row(int(n), qk_head_dim)) * src_bytes;
          uint8_t* dst = out + size_t(n) * dst_bytes;
          if (is_float(t.type)) {
            std::memcpy(dst, src, dst_bytes);
            continue;
          }
          ggml_dequantize(t.type, src, K, tmp.data());
          for (int k = 0; k < K; ++k) {
            const uint16_t h = f32_to_fp16(tmp[size_t(k)]);
            std::memcpy(dst + 2 * size_t(k), &h, 2);
          }
        }
      },
      4);
  return wt;
}

// A matrix in the kernels' layout: repacked (then the file's pages of it leave this process's
// resident set: they are page cache, but would count in RSS beside the copy), or zero-copy.
ops::Linear linear(Ctx& c, const std::string& name, int N, int K, int qk_head_dim = 0) {
  const GgufTensorInfo& t = expect(c, name, {K, N});
  const size_t esz = t.type == GgmlType::kF32 ? 4 : 2;
  if (is_float(t.type) && !qk_head_dim && reinterpret_cast<uintptr_t>(t.data) % esz == 0)
    return ops::make_dense_linear(wtype(t.type), t.data, N, K);  // zero-copy
  ops::Linear l;
  if (gguf_q4_type(t.type)) {
    l = gguf_q4_linear(t, N, K, qk_head_dim, c.pool, c.f.path());
  } else if (gguf_i8_type(t.type)) {
    l = gguf_i8_linear(t, N, K, qk_head_dim, c.pool, c.f.path());
  } else {
    std::vector<uint8_t> owned(size_t(N) * size_t(K) * (is_float(t.type) ? esz : 2));
    const WType wt = rows_to(c, t, N, K, qk_head_dim, owned.data());
    l = ops::make_dense_linear(wt, nullptr, N, K);
    l.owned = std::move(owned);
    l.dense.data = l.owned.data();
  }
  drop_mapped_pages(t.data, t.nbytes);
  return l;
}

std::vector<float> vec(Ctx& c, const std::string& name, int n) {
  const GgufTensorInfo& t = expect(c, name, {n});
  std::vector<float> v(static_cast<size_t>(n));
  ggml_dequantize(t.type, t.data, n, v.data());
  return v;
}

// The embedding table as a float TensorView: in place, or dequantized to f16 (kept by the store).
TensorView embedding(Ctx& c, ModelWeights& m, int vocab, int d) {
  const GgufTensorInfo& t = expect(c, "token_embd.weight", {d, vocab});
  const size_t esz = t.type == GgmlType::kF32 ? 4 : 2;
  if (is_float(t.type) && reinterpret_cast<uintptr_t>(t.data) % esz == 0) return c.f.view(t);
  auto buf = std::make_shared<std::vector<uint8_t>>(size_t(vocab) * size_t(d) * (is_float(t.type) ? esz : 2));
  const WType wt = rows_to(c, t, vocab, d, 0, buf->data());
  TensorView v;
  v.name = t.name;
  v.dtype = wt == WType::kF32 ? DType::F32 : wt == WType::kF16 ? DType::F16 : DType::BF16;
  v.shape = {vocab, d};
  v.data = buf->data();
  v.nbytes = buf->size();
  v.source = c.f.path();
  m.store.keep(buf);
  return v;
}

void warn_unused(const GgufFile& f, const std::vector<std::string>& used) {
  std::set<std::string> u(used.begin(), used.end());
  std::vector<std::string> unknown;
  for (const auto& t : f.tensors())
    if (!u.count(t.name)) unknown.push_back(t.name);
  if (unknown.empty()) return;
  std::string list;
  for (size_t i = 0; i < unknown.size() && i < 5; ++i) list += (i ? ", " : "") + unknown[i];
  if (unknown.size() > 5) list += cat(", ... (", unknown.size() - 5, " more)");
  std::fprintf(stderr, "warning: %s: ignoring %zu unknown tensor(s): %s\n", f.path().c_str(), unknown.size(),
               list.c_str());
}

std::string type_summary(const GgufFile& f) {
  std::map<std::string, int> count;
  for (const auto& t : f.tensors())
    if (t.dims.size() == 2) ++count[ggml_type_name(uint32_t(t.type))];
  std::string s = "gguf";
  for (const auto& [name, n] : count) s += cat(" ", name, "x", n);
  return s;
}

}  // namespace

std::unique_ptr<ModelWeights> load_gguf_weights(const std::string& path, const LoadOptions& opt) {
  auto file = std::make_shared<GgufFile>(path);
  const GgufFile& f = *file;
  auto m = std::make_unique<ModelWeights>();
  m->dir = path;
  m->config = gguf_llama_config(f);
  m->store.keep(file);
  m->store.add_file(path);
  const LlamaConfig& cfg = m->config;
  const int d = cfg.hidden_size, hd = cfg.head_dim, ffn = cfg.intermediate_size;
  std::vector<std::string> used;
  ThreadPool pool(default_thread_count());
  Ctx c{f, pool, used};
  m->embed = embedding(c, *m, cfg.vocab_size, d);
  m->final_norm = vec(c, "output_norm.weight", d);
  if (cfg.tie_word_embeddings) {
    m->lm_head = ops::make_dense_linear(wtype_of(m->embed), m->embed.data, cfg.vocab_size, d);
  } else {
    m->lm_head = linear(c, "output.weight", cfg.vocab_size, d);
  }
  if (m->lm_head.kind == ops::Linear::Kind::kDense) {  // huge-page copy, as for HF folders
    const size_t bytes = m->lm_head.weight_bytes();
    m->lm_head_copy = PageBuffer(bytes);
    m->lm_head_copy.advise_huge_pages();
    std::memcpy(m->lm_head_copy.data(), m->lm_head.dense.data, bytes);
    m->lm_head.owned.clear();
    m->lm_head.owned.shrink_to_fit();
    m->lm_head.dense.data = m->lm_head_copy.data();
  }
  m->layers.resize(size_t(cfg.num_hidden_layers));
  for (int i = 0; i < cfg.num_hidden_layers; ++i) {
    LayerWeights& l = m->layers[size_t(i)];
    l.attn_norm = vec(c, gguf_blk(i, "attn_norm"), d);
    l.ffn_norm = vec(c, gguf_blk(i, "ffn_norm"), d);
    l.wq = linear(c, gguf_blk(i, "attn_q"), cfg.q_dim(), d, hd);
    l.wk = linear(c, gguf_blk(i, "attn_k"), cfg.kv_dim(), d, hd);
    l.wv = linear(c, gguf_blk(i, "attn_v"), cfg.kv_dim(), d);
    l.wo = linear(c, gguf_blk(i, "attn_output"), d, cfg.q_dim());
    l.w_gate = linear(c, gguf_blk(i, "ffn_gate"), ffn, d);
    l.w_up = linear(c, gguf_blk(i, "ffn_up"), ffn, d);
    l.w_down = linear(c, gguf_blk(i, "ffn_down"), d, ffn);
  }
  m->format = type_summary(f);
  m->file_tensors = f.tensors().size();
  if (opt.warn_unknown && !opt.quiet) warn_unused(f, used);
  return m;
}

}  // namespace metharme
