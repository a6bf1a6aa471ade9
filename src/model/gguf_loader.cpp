#include "model/gguf_loader.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <set>

#include "formats/ggml_quants.h"
#include "formats/gguf_llama.h"
#include "model/gguf_i8.h"
#include "ops/q4_linear.h"
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

// One 32-value sub-block of a 4-bit GGUF type: w[j] = scale * code[j] + add.
struct SubBlock {
  float scale, add;
  uint8_t code[32];
};

// Sub-block g of a row of Q4_0 (w = d*(q - 8)), Q4_1 (w = d*q + m) or Q4_K (w = d*sc*q - dmin*mn).
SubBlock sub_block(GgmlType t, const uint8_t* row, int g) {
  SubBlock sb;
  if (t == GgmlType::kQ4_K) {
    const uint8_t* b = row + size_t(g / 8) * 144;
    const int j = g % 8;
    uint8_t sc, mn;
    ggml_k4_scale_min(j, b + 4, &sc, &mn);
    uint16_t dh, mh;
    std::memcpy(&dh, b, 2);
    std::memcpy(&mh, b + 2, 2);
    sb.scale = fp16_to_f32(dh) * float(sc);
    sb.add = -(fp16_to_f32(mh) * float(mn));
    const uint8_t* qs = b + 16 + 32 * (j / 2);
    for (int l = 0; l < 32; ++l) sb.code[l] = uint8_t((qs[l] >> (4 * (j % 2))) & 15);
    return sb;
  }
  const bool q41 = t == GgmlType::kQ4_1;
  const uint8_t* b = row + size_t(g) * (q41 ? 20 : 18);
  uint16_t dh, mh = 0;
  std::memcpy(&dh, b, 2);
  if (q41) std::memcpy(&mh, b + 2, 2);
  sb.scale = fp16_to_f32(dh);
  sb.add = q41 ? fp16_to_f32(mh) : -8.0f * sb.scale;
  const uint8_t* qs = b + (q41 ? 4 : 2);
  for (int l = 0; l < 16; ++l) sb.code[l] = qs[l] & 15, sb.code[l + 16] = uint8_t(qs[l] >> 4);
  return sb;
}

// Q4_K keeps its own scales (kernels/q4.h): the 6-bit scales and mins of each 32-row block and
// the fp16 factors of each 256-row super-block, copied from the file's blocks into tile order.
void set_q4_k_scales(Ctx& c, const GgufTensorInfo& t, ops::Q4Weight& w, int qk_head_dim) {
  const int N = w.n_out, G = w.mat.n_groups, S = G / 8;
  const size_t cells = size_t(w.mat.n_tiles) * size_t(G) * kernels::kQ4TileCols, row_bytes = t.nbytes / size_t(N);
  std::vector<uint8_t> ksc(cells, 0), kmin(cells, 0);
  std::vector<uint16_t> kd(cells / 8, 0), kdmin(cells / 8, 0);
  c.pool.parallel_for(N, 8, [&](int64_t n0, int64_t n1, int) {
    for (int64_t n = n0; n < n1; ++n) {
      const uint8_t* row = t.data + size_t(src_row(int(n), qk_head_dim)) * row_bytes;
      const size_t tile = size_t(n) / kernels::kQ4TileCols, col = size_t(n) % kernels::kQ4TileCols;
      for (int sb = 0; sb < S; ++sb) {
        const uint8_t* b = row + size_t(sb) * 144;
        const size_t si = (tile * size_t(S) + size_t(sb)) * kernels::kQ4TileCols + col;
        std::memcpy(&kd[si], b, 2);
        std::memcpy(&kdmin[si], b + 2, 2);
        for (int j = 0; j < 8; ++j) {
          const size_t gi = (tile * size_t(G) + size_t(8 * sb + j)) * kernels::kQ4TileCols + col;
          ggml_k4_scale_min(j, b + 4, &ksc[gi], &kmin[gi]);
        }
      }
    }
  });
  ops::q4_set_k_scales(w, std::move(ksc), std::move(kmin), std::move(kd), std::move(kdmin));
}

// Q4_0, Q4_1 and Q4_K -> the int4 layout through a GPTQ-shaped source, codes unchanged, groups of
// 32: scale s, the zero point z in 0..15 nearest to -add/s (the int8-activation design applies it
// exactly with the activations' integer sums), and the remainder add + s*z as the weight's
// per-block offset (zero for Q4_0, whose z is 8). Exact up to fp32 rounding.
ops::Linear q4_linear(Ctx& c, const GgufTensorInfo& t, int N, int K, int qk_head_dim) {
  const int G = K / 32;
  std::vector<uint32_t> qweight(size_t(K / 8) * size_t(N), 0);
  std::vector<float> scales(size_t(G) * size_t(N)), offsets(size_t(G) * size_t(N));
  const size_t zw = size_t((N + 7) / 8);  // qzeros words per group
  std::vector<uint32_t> qzeros(size_t(G) * zw, 0);
  const size_t row_bytes = t.nbytes / size_t(N);
  std::atomic<bool> any_offset{false};
  c.pool.parallel_for(N, 8, [&](int64_t n0, int64_t n1, int) {
    for (int64_t n = n0; n < n1; ++n) {
      const uint8_t* row = t.data + size_t(src_row(int(n), qk_head_dim)) * row_bytes;
      for (int g = 0; g < G; ++g) {
        const SubBlock sb = sub_block(t.type, row, g);
        const float zf = sb.scale != 0 ? std::nearbyint(-sb.add / sb.scale) : 0.0f;
        const int z = std::isfinite(zf) ? int(std::clamp(zf, 0.0f, 15.0f)) : 0;
        scales[size_t(g) * size_t(N) + size_t(n)] = sb.scale;
        qzeros[size_t(g) * zw + size_t(n / 8)] |= uint32_t(z) << (4 * (n % 8));
        const float off = sb.add + sb.scale * float(z);
        offsets[size_t(n) * size_t(G) + size_t(g)] = off;
        if (off != 0) any_offset = true;
        for (int j = 0; j < 32; ++j) {
          const int k = 32 * g + j;
          qweight[size_t(k / 8) * size_t(N) + size_t(n)] |= uint32_t(sb.code[j]) << (4 * (k % 8));
        }
      }
    }
  });
  ops::GptqSource s;
  s.name = cat(c.f.path(), ": ", t.name);
  s.n = N;
  s.k = K;
  s.n_groups = G;
  s.group_size = 32;
  s.qweight = qweight.data();
  s.qzeros = qzeros.data();
  s.zero_offset = 0;
  s.scales = scales.data();
  s.scales_type = WType::kF32;  // kept as fp16 by the repack when every scale is an fp16 value
  ops::Linear l;
  l.kind = ops::Linear::Kind::kQ4;
  l.n_out = N;
  l.n_in = K;
  auto w = ops::q4_repack(s, c.pool.size());
  if (t.type == GgmlType::kQ4_K)
    set_q4_k_scales(c, t, *w, qk_head_dim);
  else if (any_offset)
    w->offsets = std::move(offsets);
  l.q4 = std::move(w);
  return l;
}

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
  if (t.type == GgmlType::kQ4_0 || t.type == GgmlType::kQ4_1 || t.type == GgmlType::kQ4_K) {
    l = q4_linear(c, t, N, K, qk_head_dim);
  } else if (gguf_i8_type(t.type)) {
    l = gguf_i8_linear(t, N, K, qk_head_dim, c.pool);
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
