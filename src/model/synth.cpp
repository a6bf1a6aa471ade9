#include "model/synth.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "formats/ggml_quants.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "kernels/dense.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/half.h"
#include "util/progress.h"
#include "util/thread_pool.h"

namespace metharme {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr float kWeightStd = 0.02f;
constexpr float kUniformNibbleStd = 4.61f;   // std of a uniform code in 0..15
constexpr float kUniformInt8Std = 73.9f;     // std of a uniform int8
constexpr size_t kShardBytes = size_t(4) << 30;
constexpr size_t kChunkBytes = size_t(64) << 20;

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t s = a ^ (b * 0xD1B54A32D192ED03ull);
  return splitmix(s);
}
uint64_t name_seed(uint64_t seed, const std::string& name) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  return mix(seed, h);
}

// Sum of four uniform 16-bit values, centred and scaled to unit variance (Irwin-Hall).
inline float approx_normal(uint64_t r) {
  int s = int(r & 0xFFFF) + int((r >> 16) & 0xFFFF) + int((r >> 32) & 0xFFFF) + int(r >> 48) - 2 * 65535;
  return float(s) * (1.0f / 37837.2f);
}
inline float uniform01(uint64_t r) { return float(r >> 40) * (1.0f / 16777216.0f); }

// Fills units [u0, u0 + n) of a tensor; `seed` is the piece's own seed.
using Gen = std::function<void(uint8_t* dst, int64_t u0, int64_t n, uint64_t seed)>;

struct Planned {
  std::string name;
  DType dtype = DType::F16;            // safetensors tensors
  GgmlType gtype = GgmlType::kF16;     // GGUF tensors
  std::vector<int64_t> shape;          // safetensors shape, or GGUF dims (innermost first)
  int64_t units = 0;                   // elements or blocks
  size_t unit_bytes = 0;
  Gen gen;
  size_t bytes() const { return size_t(units) * unit_bytes; }
};

Gen f16_normal(float std) {
  return [std](uint8_t* dst, int64_t, int64_t n, uint64_t seed) {
    float tmp[1024];
    auto* out = reinterpret_cast<uint16_t*>(dst);
    for (int64_t i = 0; i < n; i += 1024) {
      int64_t m = std::min<int64_t>(1024, n - i);
      for (int64_t j = 0; j < m; ++j) tmp[j] = std * approx_normal(splitmix(seed));
      kernels::dense_kernels().from_f32(kernels::WType::kF16, tmp, out + i, m);
    }
  };
}

Gen f16_const(float v) {
  return [h = f32_to_fp16(v)](uint8_t* dst, int64_t, int64_t n, uint64_t) {
    for (int64_t i = 0; i < n; ++i) std::memcpy(dst + 2 * i, &h, 2);
  };
}

Gen f32_const(float v) {
  return [v](uint8_t* dst, int64_t, int64_t n, uint64_t) {
    for (int64_t i = 0; i < n; ++i) std::memcpy(dst + 4 * i, &v, 4);
  };
}

Gen random_bytes() {
  return [](uint8_t* dst, int64_t, int64_t n, uint64_t seed) {
    for (int64_t i = 0; i < n; i += 8) {
      uint64_t r = splitmix(seed);
      std::memcpy(dst + i, &r, size_t(std::min<int64_t>(8, n - i)));
    }
  };
}

// A GGUF quantized block type: random payload with a positive fp16 scale `d` at `d_offset`.
Gen gguf_blocks(GgmlType t, float d) {
  return [t, d](uint8_t* dst, int64_t, int64_t n, uint64_t seed) {
    const size_t bb = ggml_block_bytes(t);
    for (int64_t b = 0; b < n; ++b) {
      uint8_t* blk = dst + size_t(b) * bb;
      for (size_t i = 0; i < bb; i += 8) {
        uint64_t r = splitmix(seed);
        std::memcpy(blk + i, &r, std::min<size_t>(8, bb - i));
      }
      uint16_t h = f32_to_fp16(d * (0.75f + 0.5f * uniform01(splitmix(seed))));
      if (t == GgmlType::kQ4_K) {
        // 6-bit scales 1..8 with mins of 7.5 steps (dmin = d), so each sub-block is centred on 0.
        std::memcpy(blk + 2, &h, 2);
        for (int j = 0; j < 8; ++j) {
          const uint8_t sc = uint8_t(1 + (blk[16 + j] & 7));
          ggml_k4_put_scale_min(j, sc, uint8_t(std::lround(7.5 * sc)), blk + 4);
        }
      }
      if (t == GgmlType::kQ6_K) {
        for (int i = 0; i < 16; ++i) blk[192 + i] = uint8_t(1 + (blk[192 + i] & 7));  // int8 sub-block scales 1..8
        std::memcpy(blk + 208, &h, 2);
      } else {
        std::memcpy(blk, &h, 2);
      }
    }
  };
}

void check_shape(const SynthOptions& o, size_t tok_vocab) {
  const SynthShape& s = o.shape;
  MH_CHECK(s.hidden > 0 && s.intermediate > 0 && s.layers > 0 && s.heads > 0 && s.kv_heads > 0 && s.vocab > 0,
           "synth: every dimension must be positive");
  MH_CHECK(s.hidden % s.heads == 0, "synth: --hidden ", s.hidden, " is not a multiple of --heads ", s.heads);
  MH_CHECK((s.hidden / s.heads) % 2 == 0, "synth: head size ", s.hidden / s.heads, " must be even");
  MH_CHECK(s.heads % s.kv_heads == 0, "synth: --heads ", s.heads, " is not a multiple of --kv-heads ", s.kv_heads);
  MH_CHECK(size_t(s.vocab) >= tok_vocab, "synth: --vocab ", s.vocab, " is smaller than the tokenizer's ", tok_vocab,
           " pieces");
  MH_CHECK(s.hidden % 32 == 0 && s.intermediate % 32 == 0, "synth: --hidden and --intermediate must be multiples of 32");
  if (o.format == SynthFormat::kGptq) {
    MH_CHECK(o.bits == 4, "synth: --bits ", o.bits, ": only 4-bit GPTQ is supported");
    MH_CHECK(o.group_size == -1 || o.group_size >= 8, "synth: --group-size ", o.group_size, " must be -1 or >= 8");
  }
  if (o.format == SynthFormat::kGgufQ4_0)
    MH_CHECK(s.hidden % 256 == 0, "synth: GGUF Q4_0 models need --hidden a multiple of 256 (Q6_K output)");
  if (o.format == SynthFormat::kGgufQ4_K_M)
    MH_CHECK(s.hidden % 256 == 0 && s.intermediate % 256 == 0,
             "synth: GGUF Q4_K_M models need --hidden and --intermediate multiples of 256");
}

// ---- plans ----------------------------------------------------------------------------------------

void plan_gptq_linear(std::vector<Planned>& v, const std::string& p, int N, int K, const SynthOptions& o,
                      uint64_t seed) {
  const int gs = o.group_size < 0 ? K : std::min(o.group_size, K);
  const int G = (K + gs - 1) / gs;
  v.push_back({p + ".qweight", DType::I32, GgmlType::kF32, {K / 8, N}, int64_t(K / 8) * N, 4, random_bytes()});
  v.push_back({p + ".qzeros", DType::I32, GgmlType::kF32, {G, N / 8}, int64_t(G) * (N / 8), 4,
               [](uint8_t* dst, int64_t, int64_t n, uint64_t s) {
                 for (int64_t i = 0; i < n; ++i) {
                   uint64_t r = splitmix(s);
                   uint32_t w = 0;
                   for (int j = 0; j < 8; ++j) w |= uint32_t(6 + (r >> (8 * j)) % 3) << (4 * j);  // zero 7..9, stored - 1
                   std::memcpy(dst + 4 * i, &w, 4);
                 }
               }});
  const float base = kWeightStd / kUniformNibbleStd;
  v.push_back({p + ".scales", DType::F16, GgmlType::kF32, {G, N}, int64_t(G) * N, 2,
               [base](uint8_t* dst, int64_t, int64_t n, uint64_t s) {
                 for (int64_t i = 0; i < n; ++i) {
                   uint16_t h = f32_to_fp16(base * (0.75f + 0.5f * uniform01(splitmix(s))));
                   std::memcpy(dst + 2 * i, &h, 2);
                 }
               }});
  // g_idx: k / gs, or with act-order groups of consecutive positions in a random row order.
  std::vector<int32_t> g_idx(static_cast<size_t>(K));
  if (o.act_order) {
    std::vector<int32_t> perm(static_cast<size_t>(K));
    for (int k = 0; k < K; ++k) perm[size_t(k)] = k;
    uint64_t s = mix(seed, 0x6964787ull);
    for (int k = K - 1; k > 0; --k) std::swap(perm[size_t(k)], perm[size_t(splitmix(s) % uint64_t(k + 1))]);
    for (int pos = 0; pos < K; ++pos) g_idx[size_t(perm[size_t(pos)])] = pos / gs;
  } else {
    for (int k = 0; k < K; ++k) g_idx[size_t(k)] = k / gs;
  }
  v.push_back({p + ".g_idx", DType::I32, GgmlType::kF32, {K}, K, 4,
               [g = std::move(g_idx)](uint8_t* dst, int64_t u0, int64_t n, uint64_t) {
                 std::memcpy(dst, g.data() + u0, size_t(n) * 4);
               }});
}

std::vector<Planned> plan_folder(const SynthOptions& o) {
  const SynthShape& s = o.shape;
  const int d = s.hidden, ffn = s.intermediate, hd = s.hidden / s.heads, kvd = s.kv_heads * hd;
  std::vector<Planned> v;
  v.push_back({"model.embed_tokens.weight", DType::F16, GgmlType::kF16, {s.vocab, d}, int64_t(s.vocab) * d, 2,
               f16_normal(kWeightStd)});
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = cat("model.layers.", l, ".");
    v.push_back({p + "input_layernorm.weight", DType::F16, GgmlType::kF16, {d}, d, 2, f16_const(1.0f)});
    v.push_back({p + "post_attention_layernorm.weight", DType::F16, GgmlType::kF16, {d}, d, 2, f16_const(1.0f)});
    const std::pair<std::string, std::pair<int, int>> lins[] = {
        {"self_attn.q_proj", {d, d}},     {"self_attn.k_proj", {kvd, d}}, {"self_attn.v_proj", {kvd, d}},
        {"self_attn.o_proj", {d, d}},     {"mlp.gate_proj", {ffn, d}},    {"mlp.up_proj", {ffn, d}},
        {"mlp.down_proj", {d, ffn}}};
    for (const auto& [name, nk] : lins) {
      const int N = nk.first, K = nk.second;
      if (o.format == SynthFormat::kGptq) {
        plan_gptq_linear(v, p + name, N, K, o, name_seed(o.seed, p + name));
      } else {
        v.push_back({p + name + ".weight", DType::F16, GgmlType::kF16, {N, K}, int64_t(N) * K, 2, f16_normal(kWeightStd)});
      }
    }
  }
  v.push_back({"model.norm.weight", DType::F16, GgmlType::kF16, {d}, d, 2, f16_const(1.0f)});
  v.push_back({"lm_head.weight", DType::F16, GgmlType::kF16, {s.vocab, d}, int64_t(s.vocab) * d, 2,
               f16_normal(kWeightStd)});
  return v;
}

std::vector<Planned> plan_gguf(const SynthOptions& o) {
  const SynthShape& s = o.shape;
  const int d = s.hidden, ffn = s.intermediate, hd = s.hidden / s.heads, kvd = s.kv_heads * hd;
  const GgmlType wt = o.format == SynthFormat::kGgufQ4_0   ? GgmlType::kQ4_0
                      : o.format == SynthFormat::kGgufQ4_K_M ? GgmlType::kQ4_K
                                                             : GgmlType::kQ8_0;
  // llama-quantize keeps the output matrix at Q6_K in Q4_0 and Q4_K_M files and at Q8_0 in Q8_0 files.
  const GgmlType out_t = wt == GgmlType::kQ8_0 ? GgmlType::kQ8_0 : GgmlType::kQ6_K;
  // Q4_K_M: attn_v and ffn_down at Q6_K in the layers llama-quantize's use_more_bits picks (about half).
  auto six = [&](int l) {
    const int n = s.layers;
    return wt == GgmlType::kQ4_K && (l < n / 8 || l >= 7 * n / 8 || (l - n / 8) % 3 == 2) ? GgmlType::kQ6_K : wt;
  };
  auto quant = [&](const std::string& name, GgmlType t, int rows, int cols) {
    float dscale = t == GgmlType::kQ4_0 ? kWeightStd / kUniformNibbleStd
                   : t == GgmlType::kQ8_0 ? kWeightStd / kUniformInt8Std
                   : t == GgmlType::kQ4_K ? kWeightStd / (4.5f * kUniformNibbleStd)
                                          : kWeightStd / (18.5f * 4.5f);
    int64_t units = int64_t(rows) * cols / ggml_block_elems(t);
    return Planned{name, DType::U8, t, {cols, rows}, units, ggml_block_bytes(t), gguf_blocks(t, dscale)};
  };
  auto norm = [&](const std::string& name) {
    return Planned{name, DType::F32, GgmlType::kF32, {d}, d, 4, f32_const(1.0f)};
  };
  std::vector<Planned> v;
  v.push_back(quant("token_embd.weight", wt, s.vocab, d));
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = cat("blk.", l, ".");
    v.push_back(norm(p + "attn_norm.weight"));
    v.push_back(quant(p + "attn_q.weight", wt, d, d));
    v.push_back(quant(p + "attn_k.weight", wt, kvd, d));
    v.push_back(quant(p + "attn_v.weight", six(l), kvd, d));
    v.push_back(quant(p + "attn_output.weight", wt, d, d));
    v.push_back(norm(p + "ffn_norm.weight"));
    v.push_back(quant(p + "ffn_gate.weight", wt, ffn, d));
    v.push_back(quant(p + "ffn_up.weight", wt, ffn, d));
    v.push_back(quant(p + "ffn_down.weight", six(l), d, ffn));
  }
  v.push_back(norm("output_norm.weight"));
  v.push_back(quant("output.weight", out_t, s.vocab, d));
  return v;
}

// ---- streaming ------------------------------------------------------------------------------------

class Streamer {
 public:
  Streamer(const SynthOptions& o, size_t total)
      : seed_(o.seed),
        pool_(o.n_threads > 0 ? o.n_threads : default_thread_count()),
        progress_("synth", int64_t((total + (1 << 20) - 1) >> 20), "MB", o.progress),
        buf_(kChunkBytes) {}

  // Generates `t` chunk by chunk (pieces of about 1 MiB with their own seeds, so the bytes do not
  // depend on the thread count) and hands each chunk to `sink`.
  void stream(const Planned& t, const std::function<void(const void*, size_t)>& sink) {
    const int64_t piece = std::max<int64_t>(1, int64_t(1 << 20) / int64_t(t.unit_bytes));
    const int64_t chunk = std::max<int64_t>(piece, int64_t(kChunkBytes / t.unit_bytes) / piece * piece);
    const uint64_t tseed = name_seed(seed_, t.name);
    for (int64_t c0 = 0; c0 < t.units; c0 += chunk) {
      const int64_t n = std::min(chunk, t.units - c0);
      if (buf_.size() < size_t(n) * t.unit_bytes) buf_.resize(size_t(n) * t.unit_bytes);
      const int n_pieces = int((n + piece - 1) / piece);
      pool_.run(n_pieces, [&](int i, int) {
        const int64_t u0 = c0 + int64_t(i) * piece, m = std::min(piece, c0 + n - u0);
        t.gen(buf_.data() + size_t(u0 - c0) * t.unit_bytes, u0, m, mix(tseed, uint64_t(u0 / piece)));
      });
      sink(buf_.data(), size_t(n) * t.unit_bytes);
      done_ += size_t(n) * t.unit_bytes;
      progress_.update(int64_t(done_ >> 20));
    }
  }
  void finish() { progress_.finish(); }

 private:
  uint64_t seed_;
  ThreadPool pool_;
  Progress progress_;
  std::vector<uint8_t> buf_;
  size_t done_ = 0;
};

json config_json(const SynthShape& s) {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"hidden_size", s.hidden},
          {"intermediate_size", s.intermediate},
          {"num_attention_heads", s.heads},
          {"num_key_value_heads", s.kv_heads},
          {"num_hidden_layers", s.layers},
          {"vocab_size", s.vocab},
          {"max_position_embeddings", s.max_positions},
          {"rms_norm_eps", 1e-6},
          {"rope_theta", 10000.0},
          {"tie_word_embeddings", false},
          {"bos_token_id", 1},
          {"eos_token_id", 2},
          {"hidden_act", "silu"},
          {"torch_dtype", "float16"}};
}

void write_folder(const SynthOptions& o, const SynthVocab& vocab, const std::string& dir) {
  fs::create_directories(dir);
  write_file_atomic((fs::path(dir) / "config.json").string(), config_json(o.shape).dump(2) + "\n");
  if (o.format == SynthFormat::kGptq) {
    json qc = {{"bits", o.bits},          {"group_size", o.group_size},  {"desc_act", o.act_order},
               {"sym", false},            {"true_sequential", true},     {"damp_percent", 0.01},
               {"static_groups", false},  {"model_file_base_name", "model"}, {"quant_method", "gptq"},
               {"checkpoint_format", "gptq"}};
    write_file_atomic((fs::path(dir) / "quantize_config.json").string(), qc.dump(2) + "\n");
  }
  if (!vocab.model_file.empty()) {
    write_file_atomic((fs::path(dir) / "tokenizer.model").string(), read_text_file(vocab.model_file));
    json tc = {{"tokenizer_class", "LlamaTokenizer"}, {"add_bos_token", true}, {"add_eos_token", false},
               {"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}, {"legacy", true},
               {"model_max_length", o.shape.max_positions}};
    write_file_atomic((fs::path(dir) / "tokenizer_config.json").string(), tc.dump(2) + "\n");
    json sm = {{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}};
    write_file_atomic((fs::path(dir) / "special_tokens_map.json").string(), sm.dump(2) + "\n");
  }
  std::vector<Planned> plan = plan_folder(o);
  // Shards of at most kShardBytes, cut at tensor boundaries.
  std::vector<std::vector<size_t>> shards(1);
  size_t cur = 0, total = 0;
  for (size_t i = 0; i < plan.size(); ++i) {
    if (cur > 0 && cur + plan[i].bytes() > kShardBytes) {
      shards.emplace_back();
      cur = 0;
    }
    shards.back().push_back(i);
    cur += plan[i].bytes();
    total += plan[i].bytes();
  }
  Streamer st(o, total);
  json weight_map = json::object();
  for (size_t si = 0; si < shards.size(); ++si) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", si + 1, shards.size());
    const std::string file = shards.size() == 1 ? "model.safetensors" : name;
    SafetensorsWriter w((fs::path(dir) / file).string());
    w.set_metadata("format", "pt");
    for (size_t i : shards[si]) w.declare(plan[i].name, plan[i].dtype, plan[i].shape);
    for (size_t i : shards[si]) {
      st.stream(plan[i], [&](const void* p, size_t n) { w.write(p, n); });
      weight_map[plan[i].name] = file;
    }
    w.commit();
  }
  std::error_code ec;
  fs::remove(fs::path(dir) / (shards.size() == 1 ? "model.safetensors.index.json" : "model.safetensors"), ec);
  if (shards.size() > 1) {
    json idx = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    write_file_atomic((fs::path(dir) / "model.safetensors.index.json").string(), idx.dump(1) + "\n");
  }
  st.finish();
}

void write_gguf(const SynthOptions& o, const SynthVocab& vocab, const std::string& path) {
  const SynthShape& s = o.shape;
  if (fs::path(path).has_parent_path()) fs::create_directories(fs::path(path).parent_path());
  GgufWriter w(path);
  const bool q4 = o.format == SynthFormat::kGgufQ4_0, km = o.format == SynthFormat::kGgufQ4_K_M;
  w.set_str("general.architecture", "llama");
  w.set_str("general.name", cat("metharme synth ", s.layers, "x", s.hidden, q4 ? " Q4_0" : km ? " Q4_K_M" : " Q8_0"));
  w.set_u32("general.file_type", q4 ? 2 : km ? 15 : 7);  // llama_ftype MOSTLY_Q4_0 / Q4_K_M / Q8_0
  w.set_u32("llama.context_length", uint32_t(s.max_positions));
  w.set_u32("llama.embedding_length", uint32_t(s.hidden));
  w.set_u32("llama.block_count", uint32_t(s.layers));
  w.set_u32("llama.feed_forward_length", uint32_t(s.intermediate));
  w.set_u32("llama.rope.dimension_count", uint32_t(s.hidden / s.heads));
  w.set_u32("llama.attention.head_count", uint32_t(s.heads));
  w.set_u32("llama.attention.head_count_kv", uint32_t(s.kv_heads));
  w.set_f32("llama.attention.layer_norm_rms_epsilon", 1e-6f);
  w.set_f32("llama.rope.freq_base", 10000.0f);
  w.set_u32("llama.vocab_size", uint32_t(s.vocab));
  std::vector<std::string> pieces = vocab.pieces;
  std::vector<float> scores = vocab.scores;
  std::vector<int32_t> types = vocab.types;
  for (int i = int(pieces.size()); i < s.vocab; ++i) {  // a larger --vocab gets unused pieces
    pieces.push_back(cat("<unused", i, ">"));
    scores.push_back(0.0f);
    types.push_back(5);  // user defined
  }
  w.set_str("tokenizer.ggml.model", "llama");
  w.set_str_array("tokenizer.ggml.tokens", pieces);
  w.set_f32_array("tokenizer.ggml.scores", scores);
  w.set_i32_array("tokenizer.ggml.token_type", types);
  w.set_u32("tokenizer.ggml.bos_token_id", 1);
  w.set_u32("tokenizer.ggml.eos_token_id", 2);
  w.set_u32("tokenizer.ggml.unknown_token_id", 0);
  w.set_bool("tokenizer.ggml.add_bos_token", true);
  w.set_bool("tokenizer.ggml.add_eos_token", false);
  std::vector<Planned> plan = plan_gguf(o);
  size_t total = 0;
  for (const auto& t : plan) {
    w.declare(t.name, t.gtype, t.shape);
    total += t.bytes();
  }
  Streamer st(o, total);
  for (const auto& t : plan) st.stream(t, [&](const void* p, size_t n) { w.write(p, n); });
  w.commit();
  st.finish();
}

}  // namespace

SynthShape synth_shape(const std::string& name) {
  SynthShape s;
  if (name == "7b") {
    s = {4096, 11008, 32, 32, 32, 0, 2048};
  } else if (name == "1b") {
    s = {2048, 5632, 22, 32, 4, 0, 2048};
  } else if (name == "tiny") {
    s = {256, 704, 2, 8, 8, 0, 2048};
  } else {
    fail("synth: --shape '", name, "' is not one of 7b, 1b, tiny");
  }
  return s;
}

void synth_model(const SynthOptions& o, const SynthVocab& vocab, const std::string& out) {
  check_shape(o, vocab.pieces.size());
  if (o.format == SynthFormat::kGgufQ4_0 || o.format == SynthFormat::kGgufQ8_0 || o.format == SynthFormat::kGgufQ4_K_M) {
    write_gguf(o, vocab, out);
  } else {
    write_folder(o, vocab, out);
  }
}

}  // namespace metharme
