#include "quant/gguf_export.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "formats/ggml_quants.h"
#include "formats/gguf.h"
#include "formats/gguf_llama.h"
#include "formats/hf_config.h"
#include "formats/tensor_store.h"
#include "model/gptq_loader.h"
#include "ops/q4_linear.h"
#include "tokenizer/sp_model.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/half.h"
#include "util/thread_pool.h"

namespace metharme {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// One tensor to write: GGUF name, type, dims (innermost first) and a producer of its bytes.
struct Planned {
  std::string name;
  GgmlType type;
  std::vector<int64_t> dims;
  std::function<std::vector<uint8_t>(GgufTensorReport&)> make;
};

struct Ctx {
  const std::string& dir;
  const LlamaConfig& cfg;
  const TensorStore& store;
  const GgufExportOptions& opt;
  ThreadPool& pool;
};

// Source row of GGUF row r (Q/K rows reordered for llama.cpp's RoPE).
int hf_row(int r, int qk_head_dim) { return qk_head_dim ? gguf_qk_row_to_hf(r, qk_head_dim) : r; }

// Float rows [N][K] (HF order) to `type` in GGUF row order, with the max error of the round trip.
// For Q4_K, `hints` ([N][K/32] scales, then [N][K/32] mins, HF row order) are the wanted sub-block
// scale and min (a GPTQ group's s and s*z); empty: each sub-block's min/max.
std::vector<uint8_t> encode_rows(Ctx& c, const std::vector<float>& w, int N, int K, int qk, GgmlType type,
                                 GgufTensorReport& rep, const std::vector<float>& hints = {}) {
  const size_t row_bytes = ggml_tensor_bytes(type, {K});
  std::vector<uint8_t> out(row_bytes * size_t(N));
  std::vector<double> err(size_t(c.pool.size()), 0.0);
  c.pool.parallel_for(
      N, 1,
      [&](int64_t r0, int64_t r1, int th) {
        std::vector<float> back(static_cast<size_t>(K));
        for (int64_t r = r0; r < r1; ++r) {
          const float* src = w.data() + size_t(hf_row(int(r), qk)) * size_t(K);
          uint8_t* dst = out.data() + size_t(r) * row_bytes;
          if (type == GgmlType::kQ4_K && !hints.empty()) {
            const size_t h = size_t(hf_row(int(r), qk)) * size_t(K / 32);
            ggml_quantize_q4_k(src, K, dst, hints.data() + h, hints.data() + size_t(N) * size_t(K / 32) + h);
          } else {
            ggml_quantize(type, src, K, dst);
          }
          ggml_dequantize(type, dst, K, back.data());
          for (int k = 0; k < K; ++k)
            err[size_t(th)] = std::max(err[size_t(th)], double(std::fabs(back[size_t(k)] - src[k])));
        }
      },
      4);
  rep.max_err = *std::max_element(err.begin(), err.end());
  rep.exact = rep.max_err == 0;
  return out;
}

// A GPTQ linear as Q4_1 with its codes: possible when every 32-wide block of every row lies in
// one group (same scale and zero). Returns false (and leaves out empty) otherwise.
bool gptq_to_q4_1(Ctx& c, const ops::Q4Weight& q, int qk, std::vector<uint8_t>& out, GgufTensorReport& rep) {
  const int N = q.n_out, K = q.n_in;
  if (K % 32) return false;
  const std::vector<int32_t> krow = ops::q4_kernel_rows(q);
  const size_t row_bytes = size_t(K / 32) * 20;
  out.assign(row_bytes * size_t(N), 0);
  std::atomic<bool> ok{true};
  std::vector<double> err(size_t(c.pool.size()), 0.0);
  c.pool.parallel_for(
      N, 1,
      [&](int64_t r0, int64_t r1, int th) {
        for (int64_t r = r0; r < r1 && ok; ++r) {
          const int n = hf_row(int(r), qk);
          for (int b = 0; b < K / 32; ++b) {
            uint8_t* blk = out.data() + size_t(r) * row_bytes + size_t(b) * 20;
            const ops::Q4Entry e0 = ops::q4_entry(q, n, krow[size_t(32 * b)]);
            const float s = e0.scale;  // fp16 in GPTQ files with f16 scales, so d = s exactly
            const uint16_t dh = f32_to_fp16(s), mh = f32_to_fp16(-s * float(e0.zero));
            std::memcpy(blk, &dh, 2);
            std::memcpy(blk + 2, &mh, 2);
            const float dq = fp16_to_f32(dh), mq = fp16_to_f32(mh);
            for (int j = 0; j < 32; ++j) {
              const ops::Q4Entry e = ops::q4_entry(q, n, krow[size_t(32 * b + j)]);
              if (e.scale != e0.scale || e.zero != e0.zero) {
                ok = false;
                return;
              }
              blk[4 + j % 16] |= uint8_t(e.code << (j < 16 ? 0 : 4));
              const float want = s * float(int(e.code) - int(e.zero)), got = dq * float(e.code) + mq;
              err[size_t(th)] = std::max(err[size_t(th)], double(std::fabs(got - want)));
            }
          }
        }
      },
      4);
  if (!ok) {
    out.clear();
    return false;
  }
  rep.codes_kept = true;
  rep.max_err = *std::max_element(err.begin(), err.end());
  rep.exact = rep.max_err == 0;
  return true;
}

GgmlType float_type(const std::string& t) { return t == "f32" ? GgmlType::kF32 : GgmlType::kF16; }

bool k_quant(const std::string& t) { return t == "q4_k" || t == "q4_k_m"; }

// llama.cpp's Q4_K_M mix gives attn_v and ffn_down 6 bits in these layers (about half of them).
bool more_bits(int layer, int n_layers) {
  return layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2;
}

// Q4_K hints of a GPTQ linear (see encode_rows): each sub-block's group scale and s*z when its 32
// rows share one group, else its min/max.
std::vector<float> gptq_q4_k_hints(const ops::Q4Weight& q, const std::vector<float>& w) {
  const int N = q.n_out, K = q.n_in, B = K / 32;
  const std::vector<int32_t> krow = ops::q4_kernel_rows(q);
  std::vector<float> h(2 * size_t(N) * size_t(B));
  for (int n = 0; n < N; ++n)
    for (int b = 0; b < B; ++b) {
      const ops::Q4Entry e0 = ops::q4_entry(q, n, krow[size_t(32 * b)]);
      bool one = true;
      float lo = 0, hi = w[size_t(n) * size_t(K) + size_t(32 * b)];
      for (int j = 0; j < 32; ++j) {
        const ops::Q4Entry e = ops::q4_entry(q, n, krow[size_t(32 * b + j)]);
        one = one && e.scale == e0.scale && e.zero == e0.zero;
        const float v = w[size_t(n) * size_t(K) + size_t(32 * b + j)];
        lo = std::min(lo, v), hi = std::max(hi, v);
      }
      const size_t i = size_t(n) * size_t(B) + size_t(b);
      h[i] = one ? e0.scale : (hi - lo) / 15.0f;
      h[size_t(N) * size_t(B) + i] = one ? e0.scale * float(e0.zero) : -lo;
    }
  return h;
}

// A linear [N][K] from `prefix` (dense .weight or GPTQ): the plan entry.
Planned plan_linear(Ctx& c, const std::string& prefix, const std::string& name, int N, int K, int qk, int layer) {
  const bool gptq = has_gptq_linear(c.store, prefix);
  const std::string& t = c.opt.type;
  GgmlType type;
  if (k_quant(t)) {
    const bool six = t == "q4_k_m" &&
                     (name.find("attn_v") != std::string::npos || name.find("ffn_down") != std::string::npos) &&
                     more_bits(layer, c.cfg.num_hidden_layers);
    type = six ? GgmlType::kQ6_K : GgmlType::kQ4_K;
    if (K % 256) type = GgmlType::kQ8_0;  // as llama-quantize, a row of partial super-blocks takes another type
  } else if (t == "f16" || t == "f32")
    type = float_type(t);
  else if (t == "q8_0")
    type = GgmlType::kQ8_0;
  else if (t == "q4_1" || gptq)
    type = GgmlType::kQ4_1;  // auto: decided per tensor below for GPTQ
  else
    type = GgmlType::kF16;
  // Rows that do not fill whole blocks stay F16, as llama.cpp's converter does.
  if (K % ggml_block_elems(type)) type = GgmlType::kF16;
  Planned p{name, type, {K, N}, nullptr};
  if (gptq && type == GgmlType::kQ4_1) {
    // Whether the codes can be kept decides the declared type (auto falls back to Q8_0), so the
    // linear is read once here for the verdict and again when written (memory stays one tensor).
    auto read = [&c, prefix, N, K] {
      std::vector<std::string> used;
      return load_gptq_linear(c.store, c.cfg, prefix, N, K, used);
    };
    std::vector<uint8_t> probe;
    GgufTensorReport probe_rep;
    const bool keep = gptq_to_q4_1(c, *read().q4, qk, probe, probe_rep);
    if (!keep && t == "auto") p.type = GgmlType::kQ8_0;
    p.make = [&c, read, keep, N, K, qk, type = p.type](GgufTensorReport& r) {
      const ops::Linear lin = read();
      std::vector<uint8_t> out;
      if (keep && gptq_to_q4_1(c, *lin.q4, qk, out, r)) return out;
      return encode_rows(c, ops::q4_dequantize(*lin.q4), N, K, qk, type, r);
    };
    return p;
  }
  p.make = [&c, prefix, N, K, qk, gptq, type](GgufTensorReport& r) {
    std::vector<float> w;
    if (gptq) {
      std::vector<std::string> used;
      const ops::Linear lin = load_gptq_linear(c.store, c.cfg, prefix, N, K, used);
      w = ops::q4_dequantize(*lin.q4);
      if (type == GgmlType::kQ4_K) return encode_rows(c, w, N, K, qk, type, r, gptq_q4_k_hints(*lin.q4, w));
    } else {
      w = tensor_to_f32(c.store.get(prefix + ".weight"));
    }
    return encode_rows(c, w, N, K, qk, type, r);
  };
  return p;
}

// A float matrix or vector copied (or quantized) as is: embedding, output, norms.
Planned plan_dense(Ctx& c, const std::string& src, const std::string& name, std::vector<int64_t> shape, GgmlType type) {
  const TensorView& t = c.store.get(src);
  if (t.shape != shape)
    fail(c.dir, ": tensor '", src, "' has shape ", shape_str(t.shape), ", expected ", shape_str(shape));
  std::vector<int64_t> dims(shape.rbegin(), shape.rend());
  if (dims[0] % ggml_block_elems(type)) type = GgmlType::kF16;
  return {name, type, dims, [&c, src, shape, type](GgufTensorReport& r) {
            const int N = shape.size() == 2 ? int(shape[0]) : 1, K = int(shape.back());
            return encode_rows(c, tensor_to_f32(c.store.get(src)), N, K, 0, type, r);
          }};
}

std::vector<Planned> plan_tensors(Ctx& c) {
  const LlamaConfig& cfg = c.cfg;
  const int d = cfg.hidden_size, ffn = cfg.intermediate_size, hd = cfg.head_dim, V = cfg.vocab_size;
  const std::string& t = c.opt.type;
  const GgmlType big = t == "q8_0" ? GgmlType::kQ8_0 : float_type(t);
  // Q4_K files: output Q6_K, embedding Q4_K, or Q6_K when it is also the output (tied), as
  // llama-quantize writes them.
  const bool tied = cfg.tie_word_embeddings || !c.store.find("lm_head.weight");
  const GgmlType out_type = k_quant(t) ? GgmlType::kQ6_K : big;
  const GgmlType embed_type = k_quant(t) ? (tied ? GgmlType::kQ6_K : GgmlType::kQ4_K) : big;
  std::vector<Planned> v;
  v.push_back(plan_dense(c, "model.embed_tokens.weight", "token_embd.weight", {V, d}, embed_type));
  for (int i = 0; i < cfg.num_hidden_layers; ++i) {
    const std::string p = cat("model.layers.", i, ".");
    v.push_back(plan_dense(c, p + "input_layernorm.weight", gguf_blk(i, "attn_norm"), {d}, GgmlType::kF32));
    v.push_back(plan_linear(c, p + "self_attn.q_proj", gguf_blk(i, "attn_q"), cfg.q_dim(), d, hd, i));
    v.push_back(plan_linear(c, p + "self_attn.k_proj", gguf_blk(i, "attn_k"), cfg.kv_dim(), d, hd, i));
    v.push_back(plan_linear(c, p + "self_attn.v_proj", gguf_blk(i, "attn_v"), cfg.kv_dim(), d, 0, i));
    v.push_back(plan_linear(c, p + "self_attn.o_proj", gguf_blk(i, "attn_output"), d, cfg.q_dim(), 0, i));
    v.push_back(plan_dense(c, p + "post_attention_layernorm.weight", gguf_blk(i, "ffn_norm"), {d}, GgmlType::kF32));
    v.push_back(plan_linear(c, p + "mlp.gate_proj", gguf_blk(i, "ffn_gate"), ffn, d, 0, i));
    v.push_back(plan_linear(c, p + "mlp.up_proj", gguf_blk(i, "ffn_up"), ffn, d, 0, i));
    v.push_back(plan_linear(c, p + "mlp.down_proj", gguf_blk(i, "ffn_down"), d, ffn, 0, i));
  }
  v.push_back(plan_dense(c, "model.norm.weight", "output_norm.weight", {d}, GgmlType::kF32));
  if (!cfg.tie_word_embeddings && c.store.find("lm_head.weight")) {
    if (has_gptq_linear(c.store, "lm_head")) fail(c.dir, ": a GPTQ-quantized lm_head is not supported for export");
    v.push_back(plan_dense(c, "lm_head.weight", "output.weight", {V, d}, out_type));
  }
  return v;
}

bool tokenizer_flag(const std::string& dir, const char* key, bool def) {
  const fs::path p = fs::path(dir) / "tokenizer_config.json";
  if (!fs::exists(p)) return def;
  json j;
  try {
    j = json::parse(read_text_file(p.string()));
  } catch (const json::parse_error& e) {
    fail(p.string(), ": not valid JSON: ", e.what());
  }
  return j.is_object() && j.contains(key) && j[key].is_boolean() ? j[key].get<bool>() : def;
}

void write_metadata(GgufWriter& w, Ctx& c, uint32_t file_type) {
  const LlamaConfig& cfg = c.cfg;
  w.set_str("general.architecture", "llama");
  w.set_str("general.name", fs::path(c.dir).filename().string());
  w.set_u32("general.file_type", file_type);
  w.set_u32("general.quantization_version", 2);
  w.set_u32("llama.vocab_size", uint32_t(cfg.vocab_size));
  w.set_u32("llama.context_length", uint32_t(cfg.max_position_embeddings));
  w.set_u32("llama.embedding_length", uint32_t(cfg.hidden_size));
  w.set_u32("llama.block_count", uint32_t(cfg.num_hidden_layers));
  w.set_u32("llama.feed_forward_length", uint32_t(cfg.intermediate_size));
  w.set_u32("llama.rope.dimension_count", uint32_t(cfg.head_dim));
  w.set_u32("llama.attention.head_count", uint32_t(cfg.num_attention_heads));
  w.set_u32("llama.attention.head_count_kv", uint32_t(cfg.num_key_value_heads));
  w.set_f32("llama.attention.layer_norm_rms_epsilon", float(cfg.rms_norm_eps));
  w.set_f32("llama.rope.freq_base", float(cfg.rope_theta));
  // Tokenizer: tokenizer.model's pieces, padded to the model's vocabulary with unused pieces.
  const std::string tm = (fs::path(c.dir) / "tokenizer.model").string();
  SpVocab v = sp_vocab_parse(read_text_file(tm), tm);
  if (!v.bpe) fail(tm, ": only BPE SentencePiece models (LLaMA's) can be exported");
  if (int(v.pieces.size()) > cfg.vocab_size)
    fail(tm, ": ", v.pieces.size(), " pieces but the model's vocab_size is ", cfg.vocab_size);
  for (int i = int(v.pieces.size()); i < cfg.vocab_size; ++i) {
    v.pieces.push_back(cat("[PAD", i, "]"));
    v.scores.push_back(-1000.0f);
    v.types.push_back(int32_t(SpPieceType::kUnused));
  }
  w.set_str("tokenizer.ggml.model", "llama");
  w.set_str_array("tokenizer.ggml.tokens", v.pieces);
  w.set_f32_array("tokenizer.ggml.scores", v.scores);
  w.set_i32_array("tokenizer.ggml.token_type", v.types);
  w.set_u32("tokenizer.ggml.bos_token_id", uint32_t(v.bos_id >= 0 ? v.bos_id : cfg.bos_token_id));
  w.set_u32("tokenizer.ggml.eos_token_id", uint32_t(v.eos_id >= 0 ? v.eos_id : cfg.eos_token_ids.at(0)));
  w.set_u32("tokenizer.ggml.unknown_token_id", uint32_t(v.unk_id));
  if (v.pad_id >= 0) w.set_u32("tokenizer.ggml.padding_token_id", uint32_t(v.pad_id));
  w.set_bool("tokenizer.ggml.add_bos_token", tokenizer_flag(c.dir, "add_bos_token", true));
  w.set_bool("tokenizer.ggml.add_eos_token", tokenizer_flag(c.dir, "add_eos_token", false));
}

}  // namespace

GgufExportReport export_gguf(const std::string& dir, const std::string& out_path, const GgufExportOptions& opt) {
  static const char* const types[] = {"auto", "q4_1", "q4_k", "q4_k_m", "q8_0", "f16", "f32"};
  if (std::find(std::begin(types), std::end(types), opt.type) == std::end(types))
    fail("--type '", opt.type, "' is not one of auto, q4_1, q4_k, q4_k_m, q8_0, f16, f32");
  const LlamaConfig cfg = load_llama_config(dir);
  const TensorStore store = TensorStore::open_folder(dir);
  ThreadPool pool(default_thread_count());
  Ctx c{dir, cfg, store, opt, pool};
  std::vector<Planned> plan = plan_tensors(c);
  bool any_q4 = false, any_q8 = false;
  for (const auto& p : plan) any_q4 |= p.type == GgmlType::kQ4_1, any_q8 |= p.type == GgmlType::kQ8_0;
  // llama_ftype: ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q4_1 3, MOSTLY_Q8_0 7, MOSTLY_Q4_K_S 14, MOSTLY_Q4_K_M 15.
  const uint32_t ftype = opt.type == "q4_k_m" ? 15
                         : opt.type == "q4_k" ? 14
                         : any_q4             ? 3
                         : any_q8             ? 7
                         : opt.type == "f32"  ? 0
                                              : 1;
  GgufExportReport report;
  report.path = out_path;
  GgufWriter w(out_path);
  write_metadata(w, c, ftype);
  for (const auto& p : plan) w.declare(p.name, p.type, p.dims);
  for (auto& p : plan) {
    GgufTensorReport r;
    r.name = p.name;
    r.type = ggml_type_name(uint32_t(p.type));
    std::vector<uint8_t> bytes = p.make(r);
    w.write(bytes.data(), bytes.size());
    report.tensors.push_back(r);
  }
  report.bytes = w.data_bytes();
  w.commit();
  return report;
}

}  // namespace metharme
