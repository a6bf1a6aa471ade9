// `metharme synth` (GPTQ, fp16 and GGUF random models), the GGUF writer's file structure, and
// `metharme bench` (its JSON report and bandwidth probe).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "formats/gguf.h"
#include "kernels/bandwidth.h"
#include "model/llama.h"
#include "ops/q4_linear.h"
#include "support/test_util.h"

namespace metharme {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

const std::string kSmallShape[] = {"--shape", "tiny", "--hidden", "128", "--intermediate", "256", "--layers", "2",
                                   "--heads", "4", "--kv-heads", "2"};

// synth on the small shape; options in `extra` replace the shape's values of the same name.
std::vector<std::string> synth_args(const std::string& out, std::vector<std::string> extra) {
  std::vector<std::string> a = {"synth", "-o", out, "--tokenizer", test::fixture("models/stories260k/tokenizer.model")};
  std::vector<std::string> shape(std::begin(kSmallShape), std::end(kSmallShape));
  for (size_t i = 0; i + 1 < extra.size(); ++i) {
    auto it = std::find(shape.begin(), shape.end(), extra[i]);
    if (extra[i].rfind("--", 0) == 0 && it != shape.end()) {
      *(it + 1) = extra[i + 1];
      extra.erase(extra.begin() + long(i), extra.begin() + long(i) + 2);
      --i;
    }
  }
  a.insert(a.end(), shape.begin(), shape.end());
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

std::string slurp(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(Synth, GptqFolderLoadsAndRuns) {
  test::TempDir tmp;
  auto r = test::run_cli(synth_args(tmp / "m", {"--group-size", "64", "--seed", "7"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* f : {"config.json", "quantize_config.json", "tokenizer.model", "model.safetensors"})
    EXPECT_TRUE(fs::exists(tmp / (std::string("m/") + f))) << f;
  auto qc = test::read_json(tmp / "m/quantize_config.json");
  EXPECT_EQ(qc["bits"], 4);
  EXPECT_EQ(qc["group_size"], 64);
  EXPECT_EQ(qc["desc_act"], false);
  LoadOptions lo;
  lo.quiet = true;
  auto w = load_weights(tmp / "m", lo);
  EXPECT_EQ(w->config.hidden_size, 128);
  EXPECT_EQ(w->config.num_key_value_heads, 2);
  EXPECT_EQ(w->config.vocab_size, 512);
  EXPECT_EQ(w->format, "q4 g64");
  EXPECT_EQ(w->layers[1].w_down.q4->mat.n_groups, 4);  // K = 256
  EXPECT_EQ(w->layers[0].wk.n_out, 64);
  LlamaRuntime rt(*w, RuntimeOptions{64, 1, 64, 1});
  std::vector<int> ids = {1, 50, 60, 70};
  const float* l = rt.eval(ids, 0);
  double sumsq = 0;
  for (int i = 0; i < 512; ++i) {
    ASSERT_TRUE(std::isfinite(l[i]));
    sumsq += double(l[i]) * l[i];
  }
  EXPECT_GT(sumsq, 0.0);
}

TEST(Synth, SameSeedSameBytesWhateverTheThreads) {
  test::TempDir tmp;
  ASSERT_EQ(test::run_cli(synth_args(tmp / "a", {"--seed", "3", "-t", "1", "--act-order", "--group-size", "32"})).exit_code, 0);
  ASSERT_EQ(test::run_cli(synth_args(tmp / "b", {"--seed", "3", "-t", "2", "--act-order", "--group-size", "32"})).exit_code, 0);
  ASSERT_EQ(test::run_cli(synth_args(tmp / "c", {"--seed", "4", "-t", "2", "--act-order", "--group-size", "32"})).exit_code, 0);
  EXPECT_EQ(slurp(tmp / "a/model.safetensors"), slurp(tmp / "b/model.safetensors"));
  EXPECT_NE(slurp(tmp / "a/model.safetensors"), slurp(tmp / "c/model.safetensors"));
  LoadOptions lo;
  lo.quiet = true;
  auto w = load_weights(tmp / "a", lo);
  EXPECT_TRUE(w->layers[0].wq.q4->act_order);
  EXPECT_EQ(w->layers[0].wq.q4->perm.size(), 128u);
}

TEST(Synth, Fp16FolderIsDense) {
  test::TempDir tmp;
  auto r = test::run_cli(synth_args(tmp / "m", {"--fp16"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(fs::exists(tmp / "m/quantize_config.json"));
  LoadOptions lo;
  lo.quiet = true;
  auto w = load_weights(tmp / "m", lo);
  EXPECT_EQ(w->format, "f16");
  EXPECT_EQ(w->layers[1].w_up.kind, ops::Linear::Kind::kDense);
  // Weights are ~N(0, 0.02).
  const auto* h = static_cast<const uint16_t*>(w->layers[1].w_up.dense.data);
  std::vector<float> v(256 * 128);
  kernels::dense_kernels_scalar().to_f32(kernels::WType::kF16, h, v.data(), int64_t(v.size()));
  double s = 0, s2 = 0;
  for (float x : v) {
    s += x;
    s2 += double(x) * x;
  }
  const double mean = s / double(v.size()), sd = std::sqrt(s2 / double(v.size()) - mean * mean);
  EXPECT_NEAR(mean, 0.0, 1e-3);
  EXPECT_NEAR(sd, 0.02, 1e-3);
}

TEST(Synth, BadOptionsAreOneLineErrors) {
  test::TempDir tmp;
  struct Case {
    std::vector<std::string> extra;
    std::string want;
  };
  for (const Case& c : {Case{{"--bits", "3"}, "only 4-bit GPTQ"},
                        Case{{"--hidden", "112"}, "must be multiples of 32"},
                        Case{{"--hidden", "130"}, "not a multiple of --heads"},
                        Case{{"--heads", "8", "--kv-heads", "3"}, "not a multiple of --kv-heads"},
                        Case{{"--vocab", "100"}, "smaller than the tokenizer's 512"},
                        Case{{"--fp16", "--gguf", "q4_0"}, "exclude each other"}}) {
    auto r = test::run_cli(synth_args(tmp / "x", c.extra));
    EXPECT_EQ(r.exit_code, 1) << c.want;
    EXPECT_NE(r.err.find(c.want), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

// ---- GGUF -----------------------------------------------------------------------------------------

// A minimal GGUF reader for checking what the writer produced.
struct GgufFile {
  uint32_t version = 0;
  std::map<std::string, json> kv;
  struct T {
    std::vector<uint64_t> dims;
    uint32_t type;
    uint64_t offset;
  };
  std::map<std::string, T> tensors;
  std::vector<std::string> order;
  size_t data_start = 0, file_size = 0;

  explicit GgufFile(const std::string& path) {
    std::string b = slurp(path);
    file_size = b.size();
    size_t p = 0;
    auto get = [&](auto& v) {
      if (p + sizeof v > b.size()) throw std::runtime_error("truncated");
      std::memcpy(&v, b.data() + p, sizeof v);
      p += sizeof v;
    };
    auto str = [&] {
      uint64_t n;
      get(n);
      std::string s = b.substr(p, n);
      p += n;
      return s;
    };
    std::function<json(uint32_t)> value = [&](uint32_t t) -> json {
      switch (t) {
        case 4: { uint32_t v; get(v); return v; }
        case 5: { int32_t v; get(v); return v; }
        case 6: { float v; get(v); return v; }
        case 7: { uint8_t v; get(v); return v != 0; }
        case 8: return str();
        case 9: {
          uint32_t et;
          uint64_t n;
          get(et);
          get(n);
          json a = json::array();
          for (uint64_t i = 0; i < n; ++i) a.push_back(value(et));
          return a;
        }
      }
      throw std::runtime_error("unexpected GGUF type " + std::to_string(t));
    };
    if (b.compare(0, 4, "GGUF") != 0) throw std::runtime_error("bad magic");
    p = 4;
    get(version);
    uint64_t nt, nkv;
    get(nt);
    get(nkv);
    for (uint64_t i = 0; i < nkv; ++i) {
      std::string k = str();
      uint32_t t;
      get(t);
      kv[k] = value(t);
    }
    for (uint64_t i = 0; i < nt; ++i) {
      std::string name = str();
      uint32_t nd;
      get(nd);
      T t;
      t.dims.resize(nd);
      for (auto& d : t.dims) get(d);
      get(t.type);
      get(t.offset);
      tensors[name] = t;
      order.push_back(name);
    }
    data_start = (p + 31) / 32 * 32;
  }
};

TEST(Synth, GgufFilesHaveLlamaCppStructure) {
  test::TempDir tmp;
  for (const std::string q : {"q4_0", "q8_0"}) {
    SCOPED_TRACE(q);
    // Q4_0 files carry a Q6_K output matrix, whose rows need a multiple of 256.
    auto args = synth_args(tmp / (q + ".gguf"), {"--gguf", q, "--hidden", "256"});
    auto r = test::run_cli(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    GgufFile g(tmp / (q + ".gguf"));
    EXPECT_EQ(g.version, 3u);
    EXPECT_EQ(g.kv["general.architecture"], "llama");
    EXPECT_EQ(g.kv["llama.embedding_length"], 256);
    EXPECT_EQ(g.kv["llama.block_count"], 2);
    EXPECT_EQ(g.kv["llama.attention.head_count_kv"], 2);
    EXPECT_EQ(g.kv["llama.rope.dimension_count"], 64);
    EXPECT_EQ(g.kv["tokenizer.ggml.tokens"].size(), 512u);
    EXPECT_EQ(g.kv["tokenizer.ggml.tokens"][1], "<s>");
    EXPECT_EQ(g.kv["tokenizer.ggml.token_type"][3], 6);  // <0x00> is a byte piece
    EXPECT_EQ(g.tensors.size(), 2u + 9u * 2u + 1u);
    const uint32_t wt = q == "q4_0" ? 2 : 8;
    EXPECT_EQ(g.tensors["blk.1.ffn_down.weight"].type, wt);
    EXPECT_EQ(g.tensors["blk.1.ffn_down.weight"].dims, (std::vector<uint64_t>{256, 256}));
    EXPECT_EQ(g.tensors["blk.0.attn_k.weight"].dims, (std::vector<uint64_t>{256, 128}));
    EXPECT_EQ(g.tensors["output.weight"].type, q == "q4_0" ? 14u : 8u);
    EXPECT_EQ(g.tensors["output_norm.weight"].type, 0u);
    // Offsets are aligned and ordered, and the file ends with the last tensor.
    uint64_t end = 0;
    for (const auto& n : g.order) {
      const auto& t = g.tensors[n];
      EXPECT_EQ(t.offset % 32, 0u) << n;
      EXPECT_GE(t.offset, end) << n;
      std::vector<int64_t> dims(t.dims.begin(), t.dims.end());
      end = t.offset + ggml_tensor_bytes(GgmlType(t.type), dims);
    }
    EXPECT_EQ(g.data_start + end, g.file_size);
  }
}

// --gguf q4_k_m: llama-quantize's mix (Q4_K; Q6_K output, and attn_v / ffn_down in the layers its
// use_more_bits picks: of 2 layers, layer 1), and the file runs (Q4_K on the int4 kernels, Q6_K on
// the int8-code kernels).
TEST(Synth, GgufQ4KMMix) {
  test::TempDir tmp;
  const std::string f = tmp / "km.gguf";
  auto r = test::run_cli(synth_args(f, {"--gguf", "q4_k_m", "--hidden", "256", "--intermediate", "512"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  GgufFile g(f);
  EXPECT_EQ(g.kv["general.file_type"], 15);
  for (const char* t : {"token_embd", "blk.0.attn_q", "blk.0.attn_v", "blk.0.ffn_down", "blk.1.ffn_up"})
    EXPECT_EQ(g.tensors[std::string(t) + ".weight"].type, 12u) << t;  // Q4_K
  for (const char* t : {"output", "blk.1.attn_v", "blk.1.ffn_down"})
    EXPECT_EQ(g.tensors[std::string(t) + ".weight"].type, 14u) << t;  // Q6_K
  EXPECT_NE(test::run_cli(synth_args(tmp / "bad.gguf", {"--gguf", "q4_k_m", "--hidden", "256", "--intermediate", "352"}))
                .exit_code,
            0)
      << "352 is no whole number of 256-value super-blocks";
  auto gen = test::run_cli({"generate", "-m", f, "-p", "Hello", "-n", "3", "--temp", "0"});
  EXPECT_EQ(gen.exit_code, 0) << gen.err;
  auto info = test::run_cli({"info", "-m", f});
  EXPECT_NE(info.out.find("q6_k (int8 codes)"), std::string::npos) << info.out;
}

// ---- bench ----------------------------------------------------------------------------------------

TEST(Bench, JsonReportOnASynthModel) {
  test::TempDir tmp;
  ASSERT_EQ(test::run_cli(synth_args(tmp / "m", {})).exit_code, 0);
  auto r = test::run_cli({"bench", "-m", tmp / "m", "-p", "16", "-n", "4", "-r", "2", "-t", "1", "--probe-mb", "64",
                          "--kv", "f16", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j["threads"], 1);
  EXPECT_EQ(j["kv_type"], "f16");
  EXPECT_EQ(j["pp"]["tokens"], 16);
  EXPECT_EQ(j["pp"]["runs"].size(), 2u);
  EXPECT_GT(j["pp"]["tok_s"].get<double>(), 0.0);
  EXPECT_EQ(j["tg"]["runs"].size(), 2u);
  EXPECT_GT(j["tg"]["tok_s"].get<double>(), 0.0);
  EXPECT_GT(j["read_bandwidth_gbps"].get<double>(), 0.0);
  EXPECT_GT(j["peak_rss_bytes"].get<double>(), 0.0);
  // Bytes per token: the int4 layers (repacked) plus the f16 lm_head and one embedding row.
  LoadOptions lo;
  lo.quiet = true;
  auto w = load_weights(tmp / "m", lo);
  EXPECT_EQ(j["bytes_per_token"].get<size_t>(), w->bytes_per_token());
  EXPECT_EQ(w->lm_head.weight_bytes(), 512u * 128u * 2u);
  const double gbps = j["tg"]["weights_gbps"].get<double>();
  EXPECT_NEAR(gbps, double(w->bytes_per_token()) * j["tg"]["tok_s"].get<double>() / 1e9, 1e-9 + gbps * 1e-9);
  EXPECT_NEAR(j["tg"]["bandwidth_fraction"].get<double>(), gbps / j["read_bandwidth_gbps"].get<double>(), 1e-9);
}

TEST(Bench, MissingModelIsAnError) {
  auto r = test::run_cli({"bench", "-m", "/nonexistent/model", "--no-probe"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("error: /nonexistent/model: model folder does not exist"), std::string::npos) << r.err;
}

TEST(Bandwidth, ProbeMeasuresSomething) {
  auto r = kernels::measure_read_bandwidth(1, size_t(64) << 20, 3);
  ASSERT_EQ(r.passes.size(), 3u);
  EXPECT_GT(r.median_gbps, 0.1);
  EXPECT_GE(r.best_gbps, r.median_gbps);
  std::vector<uint8_t> buf(4096);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = uint8_t(i);
  EXPECT_EQ(kernels::read_sum_scalar(buf.data(), buf.size()), kernels::isa_supported(kernels::Isa::kAvx2)
                                                                    ? kernels::read_sum_avx2(buf.data(), buf.size())
                                                                    : kernels::read_sum_scalar(buf.data(), buf.size()));
}

}  // namespace
}  // namespace metharme
