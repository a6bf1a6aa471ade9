// metharme quantize end to end: losses and logits against GPTQ-for-LLaMa's own checkpoints of the
// same model and calibration, a real trained model (stories260k), resume after SIGKILL, bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "formats/npy.h"
#include "ops/elementwise.h"
#include "ops/q4_linear.h"
#include "quant/driver.h"
#include "quant/layer_quant.h"
#include "quant/pack.h"
#include "support/model_util.h"
#include "support/test_util.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/fs.h"

namespace metharme {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr ops::Linear LayerWeights::*kMembers[quant::kNumLinears] = {
    &LayerWeights::wq, &LayerWeights::wk, &LayerWeights::wv, &LayerWeights::wo,
    &LayerWeights::w_gate, &LayerWeights::w_up, &LayerWeights::w_down};

// The base model with every linear that `qdir` holds in GPTQ form replaced by its dequantized
// weights (read with quant::unpack_linear; the runtime's own GPTQ loader is issue 3's).
std::unique_ptr<ModelWeights> with_dequantized(const std::string& base, const std::string& qdir, bool zero_minus_one = true) {
  LoadOptions lo;
  lo.quiet = true;
  auto m = load_weights(base, lo);
  TensorStore qs = TensorStore::open_folder(qdir);
  for (int l = 0; l < m->config.num_hidden_layers; ++l)
    for (int i = 0; i < quant::kNumLinears; ++i) {
      std::string p = cat("model.layers.", l, ".", quant::linear_name(i));
      if (!qs.find(p + ".qweight")) continue;
      quant::QuantizedLinear q = quant::unpack_linear(qs, p, 4, zero_minus_one);
      ops::Linear lin = ops::make_dense_linear(kernels::WType::kF32, nullptr, q.n_out, q.n_in);
      lin.owned.resize(size_t(q.n_out) * size_t(q.n_in) * 4);
      // The scales as the file stores them: fp16, or fp32 kept exact by the runtime (G1).
      const bool fp16 = qs.get(p + ".scales").dtype == DType::F16;
      quant::dequantize(q, fp16, reinterpret_cast<float*>(lin.owned.data()));
      lin.dense.data = lin.owned.data();
      m->layers[size_t(l)].*kMembers[i] = std::move(lin);
    }
  return m;
}

std::vector<float> logits_of(const ModelWeights& w, const std::vector<int>& ids) {
  RuntimeOptions ro;
  ro.n_threads = 2;
  ro.n_ctx = 512;
  LlamaRuntime rt(w, ro);
  return test::all_logits(rt, ids);
}

double rms_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += double(a[i] - b[i]) * double(a[i] - b[i]);
  return std::sqrt(s / double(a.size()));
}

std::string slurp(const std::string& p) { return read_text_file(p); }

// Logits of a folder loaded by the runtime itself (its GPTQ loader and int4 kernels, fp32
// activations: exact up to fp32 rounding) next to the same weights dequantized here.
void expect_runtime_loads(const std::string& base, const std::string& qdir, const std::vector<int>& ids, float tol,
                          bool zero_minus_one = true) {
  ops::set_q4_act(ops::Q4Act::kF32);
  auto direct = test::load_model(qdir);
  ops::set_q4_act(ops::Q4Act::kAuto);
  EXPECT_EQ(direct.weights->layers[0].wq.kind, ops::Linear::Kind::kQ4) << qdir;
  ops::set_q4_act(ops::Q4Act::kF32);
  auto got = test::all_logits(*direct.rt, ids);
  ops::set_q4_act(ops::Q4Act::kAuto);
  auto want = logits_of(*with_dequantized(base, qdir, zero_minus_one), ids);
  EXPECT_LE(test::max_abs_diff(got.data(), want.data(), got.size()), tol) << qdir;
}

quant::QuantizeOptions base_options(const std::string& model, const std::string& out) {
  quant::QuantizeOptions o;
  o.model_dir = model;
  o.out_dir = out;
  o.threads = 2;
  o.progress = false;
  return o;
}

// ---- the five GPTQ-for-LLaMa variants of llama-rand-h256 ----------------------------------------

struct Variant {
  const char* dir;
  int group;
  bool act_order, true_sequential;
};

class ReferenceVariant : public ::testing::TestWithParam<Variant> {};

TEST_P(ReferenceVariant, LossAndLogitsAsGoodAsGptqForLlama) {
  const Variant v = GetParam();
  const std::string base = test::fixture("models/llama-rand-h256"), ref = test::fixture(cat("gptq/", v.dir));
  test::TempDir tmp;
  auto o = base_options(base, tmp / "q");
  o.calib.path = test::fixture("gptq/calibration_ids.npy");
  o.qc.group_size = v.group;
  o.qc.act_order = v.act_order;
  o.true_sequential = v.true_sequential;
  quant::run_quantize(o);
  const std::string out = tmp / "q";

  // Per-linear loss: the reference's own printed error, for all 28 linears.
  json ours = test::read_json(out + "/quant_log.json")["per_module"];
  json theirs = test::read_json(ref + "/gptq_log.json")["per_module"];
  ASSERT_EQ(ours.size(), 28u);
  double worst = 0;
  for (auto it = theirs.begin(); it != theirs.end(); ++it) {
    ASSERT_TRUE(ours.contains(it.key())) << it.key();
    double r = it.value()["gptq_error_reported"].get<double>(), q = ours[it.key()]["loss"].get<double>();
    EXPECT_LE(q, 1.05 * r) << it.key();
    EXPECT_EQ(ours[it.key()]["quantization_order"], it.value()["quantization_order"]) << it.key();
    worst = std::max(worst, q / r);
  }
  std::printf("worst loss ratio ours/reference: %.4f\n", worst);

  // Layer 0 sees identical inputs in both tools: the integer codes and grids should agree.
  TensorStore qs = TensorStore::open_folder(out), rs = TensorStore::open_folder(ref);
  size_t same = 0, total = 0;
  for (int i = 0; i < quant::kNumLinears; ++i) {
    std::string p = cat("model.layers.0.", quant::linear_name(i));
    auto a = quant::unpack_linear(qs, p, 4, true), b = quant::unpack_linear(rs, p, 4, true);
    EXPECT_EQ(a.g_idx, b.g_idx) << p;
    for (size_t k = 0; k < a.codes.size(); ++k) same += a.codes[k] == b.codes[k];
    total += a.codes.size();
  }
  EXPECT_GE(double(same) / double(total), 0.99);

  // Logits: our checkpoint is as close to the fp16 model as the reference checkpoint.
  LoadOptions lo;
  lo.quiet = true;
  auto fp16 = load_weights(base, lo);
  auto mine = with_dequantized(base, out), refm = with_dequantized(base, ref);
  json golden = test::read_json(base + "/golden_logits.json");
  double d_ours = 0, d_ref = 0;
  for (const auto& p : golden["prompts"]) {
    auto ids = p["input_ids"].get<std::vector<int>>();
    auto f = logits_of(*fp16, ids), a = logits_of(*mine, ids), b = logits_of(*refm, ids);
    d_ours += rms_diff(a, f);
    d_ref += rms_diff(b, f);
  }
  std::printf("rms logit difference to fp16: ours %.4f, reference %.4f\n", d_ours / 3, d_ref / 3);
  EXPECT_LE(d_ours, 1.10 * d_ref);
  // The dequantization used here reproduces the reference checkpoint's own goldens.
  auto ids0 = golden["prompts"][0]["input_ids"].get<std::vector<int>>();
  auto last = logits_of(*refm, ids0);
  auto want = read_npy(ref + "/golden_last_logits_prompt0.npy").to_f32();
  EXPECT_LE(test::max_abs_diff(last.data() + (ids0.size() - 1) * 32000, want.data(), 32000), 1e-3f);

  expect_runtime_loads(base, out, ids0, 1e-3f);

  // The folder: configs, tokenizer files, untouched tensors bit-identical.
  json cfg = test::read_json(out + "/config.json");
  const json& qc = cfg["quantization_config"];
  EXPECT_EQ(qc["quant_method"], "gptq");
  EXPECT_EQ(qc["bits"], 4);
  EXPECT_EQ(qc["group_size"], v.group);
  EXPECT_EQ(qc["desc_act"], v.act_order);
  EXPECT_EQ(qc["true_sequential"], v.true_sequential);
  EXPECT_EQ(qc["sym"], false);
  EXPECT_EQ(qc["checkpoint_format"], "gptq");
  EXPECT_FALSE(qc.contains("modules_not_quantized"));
  EXPECT_EQ(cfg["hidden_size"], 256);
  json qcj = test::read_json(out + "/quantize_config.json");
  EXPECT_EQ(qcj["group_size"], v.group);
  EXPECT_EQ(qcj["model_file_base_name"], "model");
  for (const char* f : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"})
    EXPECT_EQ(slurp(out + "/" + f), slurp(base + "/" + f)) << f;
  TensorStore bs = TensorStore::open_folder(base);
  for (const char* n : {"model.layers.2.input_layernorm.weight", "model.norm.weight", "model.embed_tokens.weight"}) {
    const TensorView &a = qs.get(n), &b = bs.get(n);
    ASSERT_EQ(a.nbytes, b.nbytes);
    EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes), 0) << n;
  }
  EXPECT_EQ(qs.size(), 1 + 1 + 4 * (2 + 7 * 4));  // embed, norm, per layer 2 norms + 7 x 4 tensors
  EXPECT_FALSE(fs::exists(out + ".partial"));
}

INSTANTIATE_TEST_SUITE_P(GptqForLlama, ReferenceVariant,
                         ::testing::Values(Variant{"gptq-4bit", -1, false, false}, Variant{"gptq-4bit-g32", 32, false, false},
                                           Variant{"gptq-4bit-actorder", -1, true, false},
                                           Variant{"gptq-4bit-actorder-g32", 32, true, false},
                                           Variant{"gptq-4bit-ts-actorder", -1, true, true}),
                         [](const auto& info) {
                           std::string s = info.param.dir;
                           for (char& c : s)
                             if (c == '-') c = '_';
                           return s;
                         });

// ---- stories260k: a trained model --------------------------------------------------------------

struct Eval {
  double ppl, kl;
};

// GPTQ-for-LLaMa-style perplexity over windows, and the mean KL(base || model) per position.
Eval evaluate(const ModelWeights& base, const ModelWeights& m, const std::vector<std::vector<int>>& windows) {
  double nll_sum = 0, kl = 0;
  size_t kl_n = 0;
  for (const auto& w : windows) {
    auto p = logits_of(base, w), q = logits_of(m, w);
    const int V = 512;
    double nll = 0;
    for (size_t t = 0; t + 1 < w.size(); ++t) {
      const float* lq = q.data() + t * V;
      const float* lp = p.data() + t * V;
      double zq = ops::logsumexp(lq, V), zp = ops::logsumexp(lp, V);
      nll += zq - lq[w[t + 1]];
      for (int v = 0; v < V; ++v) {
        double lpv = lp[v] - zp;
        kl += std::exp(lpv) * (lpv - (lq[v] - zq));
      }
      ++kl_n;
    }
    nll_sum += nll / double(w.size() - 1);
  }
  return {std::exp(nll_sum / double(windows.size())), kl / double(kl_n)};
}

TEST(Stories260k, ActOrderWithGroupsWorksAndGptqBeatsRtn) {
  const std::string base = test::fixture("models/stories260k");
  test::TempDir tmp;
  auto run = [&](const std::string& name, bool gptq, int group, bool act_order) {
    auto o = base_options(base, tmp / name);
    o.method = gptq ? quant::QuantizeOptions::Method::kGptq : quant::QuantizeOptions::Method::kRtn;
    o.qc.group_size = group;
    o.qc.act_order = act_order;
    o.calib.path = test::shared("data/tinyshakespeare.txt");
    o.calib.nsamples = 32;
    o.calib.seqlen = 256;
    quant::run_quantize(o);
    return with_dequantized(base, tmp / name);
  };
  auto ao = run("ao", true, -1, true), ao32 = run("ao32", true, 32, true);
  auto rtn = run("rtn", false, -1, false), rtn32 = run("rtn32", false, 32, false);
  LoadOptions lo;
  lo.quiet = true;
  auto f32 = load_weights(base, lo);

  Tokenizer tok = Tokenizer::from_folder(base);
  auto ids = tok.encode(read_text_file(test::shared("data/wikitext2-test.txt")).substr(0, 200000), true);
  std::vector<std::vector<int>> windows;
  for (int i = 0; i < 8; ++i) windows.emplace_back(ids.begin() + i * 256, ids.begin() + (i + 1) * 256);
  Eval e_f = evaluate(*f32, *f32, windows), e_ao = evaluate(*f32, *ao, windows), e_ao32 = evaluate(*f32, *ao32, windows);
  Eval e_rtn = evaluate(*f32, *rtn, windows), e_rtn32 = evaluate(*f32, *rtn32, windows);
  std::printf("wikitext ppl: f32 %.3f, gptq act-order %.3f, act-order g32 %.3f, rtn %.3f, rtn g32 %.3f\n", e_f.ppl,
              e_ao.ppl, e_ao32.ppl, e_rtn.ppl, e_rtn32.ppl);
  std::printf("KL to f32: gptq act-order %.5f, act-order g32 %.5f, rtn %.5f, rtn g32 %.5f\n", e_ao.kl, e_ao32.kl,
              e_rtn.kl, e_rtn32.kl);
  EXPECT_LE(std::fabs(e_ao32.ppl / e_ao.ppl - 1), 0.02);
  EXPECT_LT(e_ao.kl, e_rtn.kl);
  EXPECT_LT(e_ao32.kl, e_rtn32.kl);
  EXPECT_GT(e_ao.kl, 0);

  // gate/up (172 outputs) and down (172 inputs) cannot be packed: kept as f32 and listed.
  TensorStore qs = TensorStore::open_folder(tmp / "ao32");
  EXPECT_TRUE(qs.find("model.layers.0.self_attn.q_proj.qweight"));
  EXPECT_EQ(qs.get("model.layers.0.mlp.down_proj.weight").dtype, DType::F32);
  EXPECT_FALSE(qs.find("model.layers.0.mlp.up_proj.qweight"));
  json qc = test::read_json(tmp / "ao32/config.json")["quantization_config"];
  EXPECT_EQ(qc["modules_in_block_to_quantize"],
            json::parse(R"([["self_attn.k_proj","self_attn.v_proj","self_attn.q_proj"],["self_attn.o_proj"]])"));
  EXPECT_EQ(qc["modules_not_quantized"].size(), 15u);
  EXPECT_EQ(qc["modules_not_quantized"][0], "model.layers.0.mlp.gate_proj");
  expect_runtime_loads(base, tmp / "ao32", windows[0], 1e-3f);
}

// ---- layouts -----------------------------------------------------------------------------------

TEST(Quantize, G1AndGptqV2FoldersHoldTheSameWeights) {
  const std::string base = test::fixture("models/llama-rand-h256");
  test::TempDir tmp;
  for (const char* f : {"g2", "gptq_v2", "g1"}) {
    auto o = base_options(base, tmp / f);
    o.method = quant::QuantizeOptions::Method::kRtn;
    o.qc.group_size = 64;
    o.format = quant::parse_pack_format(f);
    quant::run_quantize(o);
  }
  TensorStore g2 = TensorStore::open_folder(tmp / "g2"), v2 = TensorStore::open_folder(tmp / "gptq_v2"),
              g1 = TensorStore::open_folder(tmp / "g1");
  EXPECT_EQ(test::read_json(tmp / "gptq_v2/config.json")["quantization_config"]["checkpoint_format"], "gptq_v2");
  const std::string p = "model.layers.1.mlp.down_proj";
  auto a = quant::unpack_linear(g2, p, 4, true), b = quant::unpack_linear(v2, p, 4, false),
       c = quant::unpack_linear(g1, p, 4, true);
  EXPECT_EQ(a.codes, b.codes);
  EXPECT_EQ(a.zeros, b.zeros);
  EXPECT_EQ(a.codes, c.codes);
  EXPECT_EQ(a.zeros, c.zeros);
  // gptq_v2 stores each zero one higher: every qzeros word differs by 0x11111111.
  const TensorView &za = g2.get(p + ".qzeros"), &zb = v2.get(p + ".qzeros");
  for (int64_t i = 0; i < za.numel(); ++i) EXPECT_EQ(zb.as<uint32_t>()[i], za.as<uint32_t>()[i] + 0x11111111u);
  auto ids = test::read_json(base + "/golden_logits.json")["prompts"][1]["input_ids"].get<std::vector<int>>();
  expect_runtime_loads(base, tmp / "g2", ids, 1e-3f);
  expect_runtime_loads(base, tmp / "gptq_v2", ids, 1e-3f, false);
  expect_runtime_loads(base, tmp / "g1", ids, 1e-3f);
  EXPECT_FALSE(g1.find(p + ".g_idx"));
  EXPECT_EQ(g1.get(p + ".scales").dtype, DType::F32);
  EXPECT_TRUE(g1.find(p + ".bias"));
}

TEST(Quantize, StaticGroupsGiveTrivialGroupIndex) {
  const std::string base = test::fixture("models/llama-rand-h256");
  test::TempDir tmp;
  auto o = base_options(base, tmp / "q");
  o.calib.path = test::fixture("gptq/calibration_ids.npy");
  o.qc.group_size = 32;
  o.qc.act_order = true;
  o.qc.static_groups = true;
  o.qc.sym = true;
  quant::run_quantize(o);
  TensorStore qs = TensorStore::open_folder(tmp / "q");
  auto q = quant::unpack_linear(qs, "model.layers.3.mlp.down_proj", 4, true);
  for (int k = 0; k < q.n_in; ++k) ASSERT_EQ(q.g_idx[size_t(k)], k / 32);
  for (uint8_t z : q.zeros) ASSERT_EQ(z, 8);  // symmetric
  json qc = test::read_json(tmp / "q/quantize_config.json");
  EXPECT_EQ(qc["static_groups"], true);
  EXPECT_EQ(qc["sym"], true);
  EXPECT_EQ(qc["desc_act"], true);
}

// ---- through the CLI: resume after SIGKILL, bad input -----------------------------------------

std::vector<std::string> files_of(const std::string& dir) {
  std::vector<std::string> v;
  for (const auto& e : fs::directory_iterator(dir)) v.push_back(e.path().filename().string());
  std::sort(v.begin(), v.end());
  return v;
}

void expect_same_folder(const std::string& a, const std::string& b) {
  ASSERT_EQ(files_of(a), files_of(b));
  for (const auto& f : files_of(a)) EXPECT_TRUE(slurp(a + "/" + f) == slurp(b + "/" + f)) << f << " differs";
}

std::vector<std::string> resume_args(const std::string& out) {
  return {"quantize", "-m", test::fixture("models/llama-rand-h256"), "-o", out, "--calib",
          test::shared("data/tinyshakespeare.txt"), "--nsamples", "4", "--seqlen", "64", "--act-order",
          "--groupsize", "32", "--true-sequential", "-t", "2"};
}

test::RunResult run_killed_at(const std::string& where, std::vector<std::string> args) {
  ::setenv("METHARME_QUANT_TEST_KILL", where.c_str(), 1);
  auto r = test::run_cli(args);
  ::unsetenv("METHARME_QUANT_TEST_KILL");
  return r;
}

TEST(QuantizeCli, ResumeAfterKillGivesIdenticalBytes) {
  test::TempDir tmp;
  auto full = test::run_cli(resume_args(tmp / "full"));
  ASSERT_EQ(full.exit_code, 0) << full.err;
  // Not a terminal: plain progress lines, one per layer, and a summary.
  EXPECT_NE(full.err.find("quantize: layer 4/4 done in"), std::string::npos) << full.err;
  EXPECT_NE(full.err.find("quantize: wrote"), std::string::npos);

  for (const std::string where : {"1:end", "2:mid", "0:mid"}) {
    const std::string out = tmp / ("killed-" + where.substr(0, 1));
    auto k = run_killed_at(where, resume_args(out));
    EXPECT_EQ(k.exit_code, 128 + 9) << where << ": " << k.err;
    EXPECT_FALSE(fs::exists(out)) << where;
    ASSERT_TRUE(fs::exists(out + ".partial")) << where;
    auto again = test::run_cli(resume_args(out));  // without --resume: refused, nothing touched
    EXPECT_EQ(again.exit_code, 1);
    EXPECT_NE(again.err.find("--resume"), std::string::npos) << again.err;
    auto changed = resume_args(out);
    changed[13] = "64";  // --groupsize 64
    changed.push_back("--resume");
    auto bad = test::run_cli(changed);
    EXPECT_EQ(bad.exit_code, 1);
    EXPECT_NE(bad.err.find("setting 'group_size' was 32, now 64"), std::string::npos) << bad.err;
    auto args = resume_args(out);
    args.push_back("--resume");
    auto r = test::run_cli(args);
    ASSERT_EQ(r.exit_code, 0) << where << ": " << r.err;
    if (where == "1:end") {
      EXPECT_NE(r.err.find("resuming after layer 2"), std::string::npos) << r.err;
    }
    EXPECT_FALSE(fs::exists(out + ".partial"));
    expect_same_folder(tmp / "full", out);
  }
  // Another -t on resume: the interrupted run's count is kept (the bytes depend on it), with a note.
  const std::string out = tmp / "killed-t";
  auto k = run_killed_at("1:end", resume_args(out));
  EXPECT_EQ(k.exit_code, 128 + 9) << k.err;
  auto args = resume_args(out);
  args[16] = "1";  // -t 1
  args.push_back("--resume");
  auto r = test::run_cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("continues with the interrupted run's 2 threads, not -t 1"), std::string::npos) << r.err;
  expect_same_folder(tmp / "full", out);
}

TEST(QuantizeCli, BadInputGivesOneLineErrorsAndNoOutput) {
  test::TempDir tmp;
  const std::string h256 = test::fixture("models/llama-rand-h256"), stories = test::fixture("models/stories260k");
  const std::string text = test::shared("data/tinyshakespeare.txt");
  std::ofstream(tmp / "empty.txt") << "";
  std::ofstream(tmp / "short.txt") << "To be, or not to be, that is the question.";
  std::ofstream(tmp / "file") << "x";
  fs::create_directory(tmp / "exists");
  struct Case {
    std::vector<std::string> args;
    std::string out, want;
  };
  const std::string o = tmp / "out";
  std::vector<Case> cases = {
      {{"-m", h256, "-o", o}, o, "no calibration text: pass --calib FILE"},
      {{"-m", h256, "-o", o, "--calib", tmp / "empty.txt"}, o, "no calibration text"},
      {{"-m", h256, "-o", o, "--calib", tmp / "short.txt", "--seqlen", "128"}, o, "shorter than one window"},
      {{"-m", h256, "-o", o, "--calib", tmp / "missing.txt"}, o, "does not exist"},
      {{"-m", stories, "-o", o, "--calib", text, "--seqlen", "1024"}, o, "beyond the model's max_position_embeddings (512)"},
      {{"-m", h256, "-o", o, "--calib", text, "--groupsize", "48"}, o, "--groupsize 48 does not divide the input size 256"},
      {{"-m", h256, "-o", tmp / "file/out", "--calib", text, "--nsamples", "2", "--seqlen", "32"}, tmp / "file/out",
       "cannot create"},
      {{"-m", h256, "-o", tmp / "exists", "--method", "rtn"}, "", "already exists (pass --force to replace it)"},
      {{"-m", h256, "-o", o, "--method", "rtn", "--act-order"}, o, "apply to --method gptq only"},
      {{"-m", h256, "-o", o, "--calib", text, "--format", "g1", "--act-order", "--groupsize", "32"}, o,
       "needs --static-groups"},
      {{"-m", tmp / "nomodel", "-o", o, "--method", "rtn"}, o, "does not exist"},
      {{"-m", test::fixture("gptq/gptq-4bit"), "-o", o, "--method", "rtn"}, o, "already quantized"},
      {{"-m", h256, "-o", o, "--method", "rtn", "--static-groups"}, o, "--static-groups needs --groupsize"},
  };
  for (auto& c : cases) {
    c.args.insert(c.args.begin(), "quantize");
    auto r = test::run_cli(c.args);
    std::string all;
    for (const auto& a : c.args) all += a + " ";
    EXPECT_EQ(r.exit_code, 1) << all << "\n" << r.err;
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << all << "\n" << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << all << "\n" << r.err;
    EXPECT_NE(r.err.find(c.want), std::string::npos) << all << "\n" << r.err;
    if (!c.out.empty()) {
      EXPECT_FALSE(fs::exists(c.out)) << all;
      EXPECT_FALSE(fs::exists(c.out + ".partial")) << all;
    }
  }
  EXPECT_TRUE(fs::is_empty(tmp / "exists"));
}

TEST(QuantizeCli, ForceReplacesAnExistingFolderOnlyWhenDone) {
  test::TempDir tmp;
  const std::string out = tmp / "q";
  fs::create_directory(out);
  std::ofstream(out + "/old.txt") << "old";
  auto r = test::run_cli({"quantize", "-q", "-m", test::fixture("models/llama-rand-h256"), "-o", out, "--method", "rtn",
                          "--force"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_FALSE(fs::exists(out + "/old.txt"));
  EXPECT_TRUE(fs::exists(out + "/model.safetensors"));
  EXPECT_EQ(files_of(tmp.path()), std::vector<std::string>{"q"});
}

}  // namespace
}  // namespace metharme
