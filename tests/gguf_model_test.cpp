// Running GGUF models: every supported tensor type against a reference "dequantize, then run the
// fp32 forward of a Hugging Face folder holding those values", the Q/K row order against
// convert_hf_to_gguf.py's permutation, and export (metharme convert --to gguf) round trips.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <tuple>

#include "formats/ggml_quants.h"
#include "formats/gguf.h"
#include "formats/gguf_llama.h"
#include "formats/safetensors.h"
#include "ops/q4_linear.h"
#include "quant/gguf_export.h"
#include "support/model_util.h"
#include "support/test_util.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/half.h"
#include "util/thread_pool.h"

namespace metharme {
namespace {

struct ActF32 {
  ActF32() { ops::set_q4_act(ops::Q4Act::kF32); }
  ~ActF32() { ops::set_q4_act(ops::Q4Act::kAuto); }
};

// convert_hf_to_gguf.py's permute(): w.reshape(n_head, 2, hd/2, K).swapaxes(1, 2).reshape(N, K),
// written out literally: output row (h, i, two) takes input row (h, two, i).
std::vector<int> hf_rows_in_gguf_order(int n_rows, int hd) {
  std::vector<int> order;
  for (int h = 0; h < n_rows / hd; ++h)
    for (int i = 0; i < hd / 2; ++i)
      for (int two = 0; two < 2; ++two) order.push_back(h * hd + two * (hd / 2) + i);
  return order;
}

TEST(GgufModel, QkRowOrderIsConvertersPermutation) {
  for (int hd : {4, 32, 128}) {
    const std::vector<int> order = hf_rows_in_gguf_order(3 * hd, hd);
    for (int r = 0; r < 3 * hd; ++r) {
      EXPECT_EQ(gguf_qk_row_to_hf(r, hd), order[size_t(r)]) << "hd " << hd << " row " << r;
      EXPECT_EQ(hf_qk_row_to_gguf(order[size_t(r)], hd), r);
    }
  }
}

// A tiny random LLaMA (GQA) whose matrices all have ggml type T, and the same values dequantized
// into a Hugging Face folder (rounded to f16 where the loader stores f16).
struct Synth {
  int d = 256, ffn = 512, heads = 4, kv_heads = 2, layers = 2, vocab = 384;
  std::mt19937 rng{99};

  std::vector<uint8_t> blocks(GgmlType t, int64_t n) {
    if (t == GgmlType::kF32 || t == GgmlType::kF16 || t == GgmlType::kBF16) {
      std::normal_distribution<float> nd(0.0f, 0.05f);
      std::vector<float> x(static_cast<size_t>(n));
      for (float& v : x) v = nd(rng);
      std::vector<uint8_t> b(ggml_tensor_bytes(t, {n}));
      ggml_quantize(t, x.data(), n, b.data());
      return b;
    }
    std::vector<uint8_t> b(ggml_tensor_bytes(t, {n}));
    for (auto& x : b) x = uint8_t(rng());
    const size_t bb = ggml_block_bytes(t);
    std::uniform_real_distribution<float> u(0.5f, 1.5f);
    auto put = [&](size_t at, float v) {
      const uint16_t h = f32_to_fp16(v * u(rng));
      std::memcpy(&b[at], &h, 2);
    };
    for (size_t off = 0; off < b.size(); off += bb) {
      switch (t) {
        case GgmlType::kQ4_0:
          put(off, 0.01f);
          break;
        case GgmlType::kQ4_1:
          put(off, 0.01f), put(off + 2, -0.08f);
          break;
        case GgmlType::kQ5_0:
          put(off, 0.005f);
          break;
        case GgmlType::kQ5_1:
          put(off, 0.005f), put(off + 2, -0.08f);
          break;
        case GgmlType::kQ8_0:
          put(off, 0.0005f);
          break;
        case GgmlType::kQ2_K:
          put(off + 80, 0.002f), put(off + 82, 0.002f);
          break;
        case GgmlType::kQ3_K:
          put(off + 108, 0.0008f);
          break;
        case GgmlType::kQ4_K:
          put(off, 0.0001f), put(off + 2, 0.0001f);
          break;
        case GgmlType::kQ5_K:
          put(off, 0.00005f), put(off + 2, 0.0001f);
          break;
        case GgmlType::kQ6_K:
          put(off + 208, 0.00002f);
          break;
        default:
          break;
      }
    }
    return b;
  }

  // Writes `gguf` and the reference folder `ref`.
  void write(GgmlType t, const std::string& gguf, const std::string& ref) {
    const int hd = d / heads;
    GgufWriter w(gguf);
    w.set_str("general.architecture", "llama");
    w.set_u32("llama.context_length", 2048);
    w.set_u32("llama.embedding_length", uint32_t(d));
    w.set_u32("llama.block_count", uint32_t(layers));
    w.set_u32("llama.feed_forward_length", uint32_t(ffn));
    w.set_u32("llama.rope.dimension_count", uint32_t(hd));
    w.set_u32("llama.attention.head_count", uint32_t(heads));
    w.set_u32("llama.attention.head_count_kv", uint32_t(kv_heads));
    w.set_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
    w.set_f32("llama.rope.freq_base", 10000.0f);
    struct T {
      std::string gguf, hf;
      GgmlType type;
      int rows, cols;
      int qk;
      std::vector<uint8_t> bytes;
    };
    std::vector<T> ts;
    auto mat = [&](const std::string& g, const std::string& h, int rows, int cols, int qk = 0) {
      ts.push_back({g, h, t, rows, cols, qk, blocks(t, int64_t(rows) * cols)});
    };
    auto norm = [&](const std::string& g, const std::string& h) {
      std::vector<float> v(static_cast<size_t>(d));
      std::normal_distribution<float> nd(1.0f, 0.1f);
      for (float& x : v) x = nd(rng);
      std::vector<uint8_t> b(size_t(d) * 4);
      std::memcpy(b.data(), v.data(), b.size());
      ts.push_back({g, h, GgmlType::kF32, 1, d, 0, b});
    };
    mat("token_embd.weight", "model.embed_tokens.weight", vocab, d);
    for (int l = 0; l < layers; ++l) {
      const std::string p = cat("model.layers.", l, ".");
      norm(gguf_blk(l, "attn_norm"), p + "input_layernorm.weight");
      mat(gguf_blk(l, "attn_q"), p + "self_attn.q_proj.weight", d, d, hd);
      mat(gguf_blk(l, "attn_k"), p + "self_attn.k_proj.weight", kv_heads * hd, d, hd);
      mat(gguf_blk(l, "attn_v"), p + "self_attn.v_proj.weight", kv_heads * hd, d);
      mat(gguf_blk(l, "attn_output"), p + "self_attn.o_proj.weight", d, d);
      norm(gguf_blk(l, "ffn_norm"), p + "post_attention_layernorm.weight");
      mat(gguf_blk(l, "ffn_gate"), p + "mlp.gate_proj.weight", ffn, d);
      mat(gguf_blk(l, "ffn_up"), p + "mlp.up_proj.weight", ffn, d);
      mat(gguf_blk(l, "ffn_down"), p + "mlp.down_proj.weight", d, ffn);
    }
    norm("output_norm.weight", "model.norm.weight");
    mat("output.weight", "lm_head.weight", vocab, d);
    for (const auto& x : ts)
      w.declare(x.gguf, x.type, x.rows == 1 ? std::vector<int64_t>{x.cols} : std::vector<int64_t>{x.cols, x.rows});
    for (const auto& x : ts) w.write(x.bytes.data(), x.bytes.size());
    w.commit();

    fs_mkdir(ref);
    const bool exact_kind = t == GgmlType::kF32 || t == GgmlType::kF16 || t == GgmlType::kBF16;
    SafetensorsWriter sw(ref + "/model.safetensors");
    for (const auto& x : ts)
      sw.declare(x.hf, DType::F32, x.rows == 1 ? std::vector<int64_t>{x.cols} : std::vector<int64_t>{x.rows, x.cols});
    for (const auto& x : ts) {
      std::vector<float> v(size_t(x.rows) * size_t(x.cols));
      ggml_dequantize(x.type, x.bytes.data(), int64_t(v.size()), v.data());
      // The loader keeps Q4_0, Q4_1, Q4_K (int4 kernels), Q8_0, Q5_0, Q5_1, Q3_K, Q5_K and Q6_K
      // (int8-code kernels) linears exact and stores other quantized types as f16; the embedding of a quantized type is always f16.
      const bool q4_linear = (x.type == GgmlType::kQ4_0 || x.type == GgmlType::kQ4_1 || x.type == GgmlType::kQ4_K ||
                              x.type == GgmlType::kQ8_0 || x.type == GgmlType::kQ5_K || x.type == GgmlType::kQ6_K ||
                              x.type == GgmlType::kQ5_0 || x.type == GgmlType::kQ5_1 || x.type == GgmlType::kQ3_K) &&
                             x.gguf != "token_embd.weight";
      if (x.rows > 1 && !exact_kind && !q4_linear)
        for (float& f : v) f = fp16_to_f32(f32_to_fp16(f));
      std::vector<float> hf(v.size());
      const std::vector<int> order = x.qk ? hf_rows_in_gguf_order(x.rows, x.qk) : std::vector<int>();
      for (int r = 0; r < x.rows; ++r) {
        const int hr = x.qk ? order[size_t(r)] : r;
        std::memcpy(&hf[size_t(hr) * size_t(x.cols)], &v[size_t(r) * size_t(x.cols)], size_t(x.cols) * 4);
      }
      sw.write(hf.data(), hf.size() * 4);
    }
    sw.commit();
    write_file_atomic(ref + "/config.json", nlohmann::json{{"architectures", {"LlamaForCausalLM"}},
                                                           {"hidden_size", d},
                                                           {"intermediate_size", ffn},
                                                           {"num_attention_heads", heads},
                                                           {"num_key_value_heads", kv_heads},
                                                           {"num_hidden_layers", layers},
                                                           {"vocab_size", vocab},
                                                           {"rms_norm_eps", 1e-5},
                                                           {"rope_theta", 10000.0},
                                                           {"tie_word_embeddings", false}}
                                                .dump());
  }
  static void fs_mkdir(const std::string& p) { std::filesystem::create_directories(p); }
};

class GgufTypes : public ::testing::TestWithParam<GgmlType> {};

TEST_P(GgufTypes, LogitsEqualDequantizedReference) {
  ActF32 act;
  test::TempDir dir;
  Synth s;
  s.write(GetParam(), dir / "m.gguf", dir / "ref");
  test::Loaded g = test::load_model(dir / "m.gguf");
  test::Loaded r = test::load_model(dir / "ref");
  if (GetParam() == GgmlType::kQ4_0 || GetParam() == GgmlType::kQ4_1 || GetParam() == GgmlType::kQ4_K) {
    EXPECT_EQ(g.weights->layers[0].wq.kind, ops::Linear::Kind::kQ4);
  }
  if (GetParam() == GgmlType::kQ8_0 || GetParam() == GgmlType::kQ5_K || GetParam() == GgmlType::kQ6_K ||
      GetParam() == GgmlType::kQ5_0 || GetParam() == GgmlType::kQ5_1 || GetParam() == GgmlType::kQ3_K) {
    EXPECT_EQ(g.weights->layers[0].wq.kind, ops::Linear::Kind::kI8);
    EXPECT_EQ(g.weights->lm_head.kind, ops::Linear::Kind::kI8);
  }
  const std::vector<int> ids = {1, 17, 300, 42, 42, 7, 199, 383, 0, 250};
  const std::vector<float> a = test::all_logits(*g.rt, ids), b = test::all_logits(*r.rt, ids);
  float scale = 0;
  for (float x : b) scale = std::max(scale, std::fabs(x));
  ASSERT_GT(scale, 0.05f);
  EXPECT_LE(test::max_abs_diff(a.data(), b.data(), a.size()), 2e-5f * (1 + scale))
      << "type " << ggml_type_name(uint32_t(GetParam()));
}

// The int8-activation design on the int4 paths (Q4_0, Q4_1 with its offsets, Q4_K) and the
// int8-code paths (Q8_0, Q5_0, Q5_1, Q3_K, Q5_K, Q6_K) stays close to the exact reference (it
// quantizes activations, so not to fp32 rounding).
TEST(GgufModel, Q4TypesWithInt8Activations) {
  ops::set_q4_act(ops::Q4Act::kQ8);
  for (GgmlType t : {GgmlType::kQ4_0, GgmlType::kQ4_1, GgmlType::kQ4_K, GgmlType::kQ8_0, GgmlType::kQ5_0,
                     GgmlType::kQ5_1, GgmlType::kQ3_K, GgmlType::kQ5_K, GgmlType::kQ6_K}) {
    test::TempDir dir;
    Synth s;
    s.write(t, dir / "m.gguf", dir / "ref");
    test::Loaded g = test::load_model(dir / "m.gguf");
    test::Loaded r = test::load_model(dir / "ref");
    const std::vector<int> ids = {1, 5, 77, 300, 12};
    const std::vector<float> a = test::all_logits(*g.rt, ids), b = test::all_logits(*r.rt, ids);
    const std::vector<float> a1 = test::all_logits_incremental(*g.rt, ids);
    float scale = 0;
    for (float x : b) scale = std::max(scale, std::fabs(x));
    EXPECT_LT(test::max_abs_diff(a.data(), b.data(), a.size()), 0.015f * (1 + scale)) << ggml_type_name(uint32_t(t));
    EXPECT_LT(test::max_abs_diff(a1.data(), b.data(), a.size()), 0.015f * (1 + scale)) << ggml_type_name(uint32_t(t));
    std::printf("%s, int8 activations: max logit diff %.4f (max |logit| %.2f)\n", ggml_type_name(uint32_t(t)).c_str(),
                double(test::max_abs_diff(a.data(), b.data(), a.size())), double(scale));
  }
  ops::set_q4_act(ops::Q4Act::kAuto);
}

// The per-block offsets of a Q4_1-style int4 weight on odd shapes (N not a multiple of the 16-wide
// tiles, several rows M), fresh random data, both activation designs, against q4_dequantize's
// matrix times x in double.
TEST(GgufModel, Q4OffsetsOddShapes) {
  std::mt19937 rng(5);
  for (auto [N, K, M] : {std::tuple{37, 96, 1}, std::tuple{50, 64, 3}, std::tuple{17, 160, 9}}) {
    const int G = K / 32;
    std::vector<uint32_t> qw(size_t(K / 8) * size_t(N)), qz(size_t(G) * size_t((N + 7) / 8));
    std::vector<uint16_t> sc(size_t(G) * size_t(N));
    for (auto& v : qw) v = uint32_t(rng());
    for (auto& v : qz) v = uint32_t(rng());
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (auto& v : sc) v = f32_to_fp16(0.01f + 0.02f * std::fabs(u(rng)));
    ops::GptqSource s;
    s.name = "odd";
    s.n = N, s.k = K, s.n_groups = G, s.group_size = 32;
    s.qweight = qw.data(), s.qzeros = qz.data(), s.zero_offset = 0, s.scales = sc.data();
    auto w = ops::q4_repack(s, 2);
    w->offsets.resize(size_t(N) * size_t(G));
    for (auto& v : w->offsets) v = 0.05f * u(rng);
    const std::vector<float> W = ops::q4_dequantize(*w);
    std::vector<float> x(size_t(M) * size_t(K));
    for (auto& v : x) v = u(rng);
    ops::Linear lin;
    lin.kind = ops::Linear::Kind::kQ4;
    lin.n_out = N, lin.n_in = K, lin.q4 = w;
    ThreadPool pool(2);
    for (ops::Q4Act mode : {ops::Q4Act::kF32, ops::Q4Act::kQ8}) {
      ops::set_q4_act(mode);
      std::vector<float> y(size_t(M) * size_t(N));
      ops::linear(lin, x.data(), M, y.data(), pool);
      for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) {
          double want = 0;
          for (int k = 0; k < K; ++k)
            want += double(W[size_t(n) * size_t(K) + size_t(k)]) * x[size_t(m) * size_t(K) + size_t(k)];
          EXPECT_NEAR(y[size_t(m) * size_t(N) + size_t(n)], want, mode == ops::Q4Act::kF32 ? 1e-4 : 2e-2)
              << N << "x" << K << " row " << m << " col " << n;
        }
    }
    ops::set_q4_act(ops::Q4Act::kAuto);
  }
}

INSTANTIATE_TEST_SUITE_P(All, GgufTypes,
                         ::testing::Values(GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ4_0,
                                           GgmlType::kQ4_1, GgmlType::kQ5_0, GgmlType::kQ5_1, GgmlType::kQ8_0,
                                           GgmlType::kQ2_K, GgmlType::kQ3_K, GgmlType::kQ4_K, GgmlType::kQ5_K,
                                           GgmlType::kQ6_K),
                         [](const auto& info) { return ggml_type_name(uint32_t(info.param)); });

}  // namespace
}  // namespace metharme
