// GPU offload end to end on lavapipe (or the Vulkan driver VK_ICD_FILENAMES names): logits
// through full and partial offload against the CPU path on stories260k and every GPTQ fixture
// layout, greedy text, several sequences, context shift, f16 KV, the memory plan, device errors
// and a server with several slots.
//
// Tolerance: |logit_gpu - logit_cpu| <= 2e-3 + 1e-4 |logit_cpu|. The device runs the same fp32
// arithmetic as the CPU with the fp32 int4 path (ops::Q4Act::kF32), only summed in another order;
// reassociating an fp32 dot product of K terms moves it by at most ~K 2^-24 sum|terms|, i.e.
// <= 1e-4 relative for these widths (K <= 1024). Through a few layers (norms renormalize) this
// stays near 1e-5 relative on the logits (measured ~1e-6 to 1e-5 on lavapipe); the bound leaves a
// margin of ten or more for other drivers' exp/inversesqrt, and is still far below anything that
// could change a greedy choice between logits that are not near-tied.
#include <gtest/gtest.h>

#ifdef METHARME_HAVE_VULKAN
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>

#include "model/offload.h"
#include "ops/q4_linear.h"
#include "support/gpu_util.h"
#include "support/model_util.h"
#include "support/serve_util.h"
#include "support/test_util.h"
#include "util/error.h"

namespace metharme {
namespace {

class GpuOffloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    test::prefer_lavapipe();
    std::string why;
    if (gpu::list_devices(&why).empty()) GTEST_SKIP() << "no Vulkan device: " << why;
    saved_ = ops::q4_act();
    ops::set_q4_act(ops::Q4Act::kF32);  // the CPU twin of the device's fp32 int4 product
  }
  void TearDown() override {
    ops::set_q4_act(saved_);
    unsetenv("METHARME_VK_HEAP_BYTES");
    unsetenv("METHARME_VK_FAIL_SUBMIT");
    unsetenv("METHARME_VK_FAIL_SEQ");
  }
  ops::Q4Act saved_ = ops::Q4Act::kAuto;
};

std::vector<int> test_ids(int n, int vocab) {
  std::vector<int> ids = {1};
  for (int i = 1; i < n; ++i) ids.push_back(3 + (i * 37 + i * i) % (vocab - 3));
  return ids;
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, const std::string& what,
                  double abs_tol = 2e-3) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double(got[i]) - want[i]);
    worst = std::max(worst, err);
    ASSERT_LE(err, abs_tol + 1e-4 * std::fabs(want[i])) << what << " at " << i;
  }
  std::printf("%s: max |diff| %.3g\n", what.c_str(), worst);
}

int argmax(const float* x, int n) { return int(std::max_element(x, x + n) - x); }

TEST_F(GpuOffloadTest, Stories260kLogitsMatchCpuThroughFullAndPartialOffload) {
  const std::string dir = test::fixture("models/stories260k");
  auto cpu = test::load_model(dir, 2, 128);
  const auto ids = test_ids(12, cpu.rt->n_vocab());
  const auto want = test::all_logits(*cpu.rt, ids);
  const auto want_inc = test::all_logits_incremental(*cpu.rt, ids);
  for (int ngl : {2, 5, kGpuAll}) {
    auto g = test::load_model(dir, 2, 128, 1, 512, ngl);
    ASSERT_NE(g.rt->gpu(), nullptr);
    EXPECT_EQ(g.rt->gpu()->plan().first_layer, 5 - std::min(ngl, 5));
    EXPECT_EQ(g.rt->gpu()->plan().head, ngl > 5);
    expect_close(test::all_logits(*g.rt, ids), want, "prefill ngl " + std::to_string(ngl));
    expect_close(test::all_logits_incremental(*g.rt, ids, 0), want_inc, "decode ngl " + std::to_string(ngl));
  }
}

TEST_F(GpuOffloadTest, EveryGptqFixtureLayoutMatchesCpu) {
  int seen = 0;
  for (const auto& e : std::filesystem::directory_iterator(test::fixture("gptq"))) {
    if (!e.is_directory()) continue;
    auto cpu = test::load_model(e.path().string(), 2, 64);
    const auto ids = test_ids(8, cpu.rt->n_vocab());  // one 8-row block of the 32000-column head
    const auto want = test::all_logits(*cpu.rt, ids);
    const int L = cpu.weights->config.num_hidden_layers;
    for (int ngl : {1, kGpuAll}) {
      auto g = test::load_model(e.path().string(), 2, 64, 1, 512, ngl);
      ASSERT_NE(g.rt->gpu(), nullptr);
      EXPECT_EQ(g.rt->gpu()->plan().first_layer, ngl == 1 ? L - 1 : 0);
      expect_close(test::all_logits(*g.rt, ids), want, e.path().filename().string() + " ngl " + std::to_string(ngl));
    }
    ++seen;
  }
  EXPECT_GE(seen, 5) << "the GPTQ fixtures (plain, g32, act-order, act-order g32, true-sequential act-order)";
}

// n greedy tokens after prompt (sequence 0 from position 0).
std::vector<int> greedy(LlamaRuntime& rt, const std::vector<int>& prompt, int n) {
  std::vector<int> out;
  const float* l = rt.eval(prompt, 0);
  for (int i = 0; i < n; ++i) {
    const int t = argmax(l, rt.n_vocab());
    out.push_back(t);
    l = rt.eval(std::span<const int>(&t, 1), int(prompt.size()) + i);
  }
  return out;
}

TEST_F(GpuOffloadTest, GreedyTextIsIdentical) {
  const std::string dir = test::fixture("models/stories260k");
  auto cpu = test::load_model(dir, 2, 128);
  auto g = test::load_model(dir, 2, 128, 1, 512, kGpuAll);
  const std::vector<int> prompt = {1, 403, 407, 261, 378};
  EXPECT_EQ(greedy(*g.rt, prompt, 40), greedy(*cpu.rt, prompt, 40));
}

// Three sequences interleaved in one batch (as the server's slots are), then a context shift of
// one of them and a prefix copy into another: the device cache follows the CPU's.
TEST_F(GpuOffloadTest, SequencesShiftAndPrefixCopyMatchCpuWithF16Cache) {
  const std::string dir = test::fixture("models/stories260k");
  LoadOptions lo;
  lo.quiet = true;
  auto w = load_weights(dir, lo);
  RuntimeOptions ro;
  ro.n_threads = 2;
  ro.n_ctx = 64;
  ro.n_seq = 3;
  ro.kv_type_k = ro.kv_type_v = kernels::KvType::kF16;
  LlamaRuntime cpu(*w, ro);
  ro.gpu_layers = 3;
  LlamaRuntime g(*w, ro);
  ASSERT_NE(g.gpu(), nullptr);
  const auto ids = test_ids(30, cpu.n_vocab());
  std::vector<BatchToken> batch;
  for (int i = 0; i < 30; ++i)
    for (int s = 0; s < 3; ++s)
      if (i < 10 * (s + 1)) batch.push_back({ids[size_t((i + s) % 30)], i, s, true});
  std::vector<float> a(batch.size() * size_t(cpu.n_vocab())), b(a.size());
  cpu.forward(batch, a.data());
  g.forward(batch, b.data());
  expect_close(b, a, "3 sequences");
  for (LlamaRuntime* rt : {&cpu, &g}) {
    rt->kv().shift(2, 12, 4, 18, rt->rope());  // seq 2: drop positions 4..11
    rt->kv().copy_prefix(1, 0, 20);            // seq 0 := seq 1's 20 positions
  }
  std::vector<BatchToken> next = {{7, 22, 2, true}, {9, 20, 0, true}};
  std::vector<float> c(2 * size_t(cpu.n_vocab())), d(c.size());
  cpu.forward(next, c.data());
  g.forward(next, d.data());
  expect_close(d, c, "after shift and prefix copy");
}

// GGUF files as `metharme synth --gguf` writes them: q8_0 (every matrix in the int8-code layout,
// the head too), q4_0 (int4 layers, a Q6_K head) and q4_k_m (Q4_K as int4 with per-block
// offsets, Q6_K as int8 codes). Every layer and the head run on the device; logits equal the
// CPU's fp32 path within the tolerance above, through full and partial offload, and greedy text
// is identical.
TEST_F(GpuOffloadTest, GgufBlockTypesOffloadAndMatchCpu) {
  test::TempDir tmp;
  for (const std::string q : {"q8_0", "q4_0", "q4_k_m"}) {
    const std::string f = tmp / (q + ".gguf");
    auto r = test::run_cli({"synth",
                            "-o",
                            f,
                            "--tokenizer",
                            test::fixture("models/stories260k/tokenizer.model"),
                            "--shape",
                            "tiny",
                            "--hidden",
                            "256",
                            "--intermediate",
                            "512",
                            "--layers",
                            "2",
                            "--heads",
                            "4",
                            "--kv-heads",
                            "2",
                            "--gguf",
                            q,
                            "--seed",
                            "3"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto cpu = test::load_model(f, 2, 64);
    const auto ids = test_ids(10, cpu.rt->n_vocab());
    const auto want = test::all_logits(*cpu.rt, ids);
    const auto want_inc = test::all_logits_incremental(*cpu.rt, ids);
    for (int ngl : {1, kGpuAll}) {
      auto g = test::load_model(f, 2, 64, 1, 512, ngl);
      ASSERT_NE(g.rt->gpu(), nullptr) << q;
      EXPECT_EQ(g.rt->gpu()->plan().head, ngl == kGpuAll);
      expect_close(test::all_logits(*g.rt, ids), want, q + " prefill ngl " + std::to_string(ngl));
      expect_close(test::all_logits_incremental(*g.rt, ids, 0), want_inc, q + " decode ngl " + std::to_string(ngl));
      if (ngl == kGpuAll) {
        EXPECT_EQ(greedy(*g.rt, {1, 403, 407, 261}, 24), greedy(*cpu.rt, {1, 403, 407, 261}, 24)) << q;
      }
    }
  }
}

// q8 and q4 caches (and a q8/q4 pair) on the device. The device quantizes rows by the CPU's rule,
// so its cache holds the CPU's bytes but for a rare tie rounded the other way (gpu_ops_test
// checks the bytes); logits then equal the CPU's within the same tolerance, through prefill,
// decode, a context shift (keys decoded, turned and re-encoded) and a prefix copy.
TEST_F(GpuOffloadTest, QuantizedKvCacheOffloadMatchesCpu) {
  using kernels::KvType;
  const std::string dir = test::fixture("models/stories260k");
  LoadOptions lo;
  lo.quiet = true;
  auto w = load_weights(dir, lo);
  for (auto [tk, tv] : {std::pair{KvType::kQ8, KvType::kQ8}, std::pair{KvType::kQ4, KvType::kQ4},
                        std::pair{KvType::kQ8, KvType::kQ4}}) {
    const std::string tag = std::string(kernels::kv_type_name(tk)) + "/" + kernels::kv_type_name(tv);
    RuntimeOptions ro;
    ro.n_threads = 2;
    ro.n_ctx = 64;
    ro.n_seq = 2;
    ro.kv_type_k = tk;
    ro.kv_type_v = tv;
    LlamaRuntime cpu(*w, ro);
    ro.gpu_layers = kGpuAll;
    LlamaRuntime g(*w, ro);
    ASSERT_NE(g.gpu(), nullptr) << tag;
    const auto ids = test_ids(24, cpu.n_vocab());
    // A q4 row whose fp32 inputs differ in the last bits can put one value a whole q4 step (an
    // eighth of its block's largest magnitude) away: measured 7e-4 to 2.5e-3 in the logits, so
    // q4 caches get 1e-2 (the same order as attention_test's DecodeLogits q4 bound).
    const double tol = tk == KvType::kQ4 || tv == KvType::kQ4 ? 1e-2 : 2e-3;
    expect_close(test::all_logits(g, ids), test::all_logits(cpu, ids), tag + " prefill", tol);
    expect_close(test::all_logits_incremental(g, ids, 1), test::all_logits_incremental(cpu, ids, 1), tag + " decode",
                 tol);
    for (LlamaRuntime* rt : {&cpu, &g}) {
      rt->kv().shift(1, 10, 3, 14, rt->rope());  // seq 1: drop positions 3..9
      rt->kv().copy_prefix(1, 0, 17);
    }
    std::vector<BatchToken> next = {{7, 17, 1, true}, {9, 17, 0, true}};
    std::vector<float> c(2 * size_t(cpu.n_vocab())), d(c.size());
    cpu.forward(next, c.data());
    g.forward(next, d.data());
    expect_close(d, c, tag + " after shift and prefix copy", tol);
  }
  // The flags: generate with a q4 cache offloaded gives the CPU's greedy text.
  std::vector<std::string> gen = {"generate", "-m", dir,           "-p", "Once upon a time", "-n", "24", "--temp", "0",
                                  "-t",       "1",  "--kv-type-k", "q8", "--kv-type-v",      "q4"};
  auto cpu_run = test::run_cli(gen);
  ASSERT_EQ(cpu_run.exit_code, 0) << cpu_run.err;
  gen.insert(gen.end(), {"-ngl", "all"});
  auto gpu_run = test::run_cli(gen);
  ASSERT_EQ(gpu_run.exit_code, 0) << gpu_run.err;
  EXPECT_NE(gpu_run.err.find("GPU offload on"), std::string::npos) << gpu_run.err;
  EXPECT_EQ(gpu_run.out, cpu_run.out);
}

TEST_F(GpuOffloadTest, PlanThatDoesNotFitIsRefusedWithSizesOrReducedByAuto) {
  const std::string dir = test::fixture("models/stories260k");
  setenv("METHARME_VK_HEAP_BYTES", "600000", 1);  // 540 kB usable: less than everything
  try {
    test::load_model(dir, 1, 128, 1, 512, kGpuAll);
    FAIL() << "a plan larger than the heap was accepted";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("5/5 layers + output head"), std::string::npos) << m;
    EXPECT_NE(m.find("MiB"), std::string::npos) << m;
    EXPECT_NE(m.find("--gpu-layers auto"), std::string::npos) << m;
  }
  LoadOptions lo;
  lo.quiet = true;
  auto w = load_weights(dir, lo);
  RuntimeOptions ro;
  ro.n_ctx = 128;
  ro.max_batch = 16;  // a small scratch: some layers fit
  ro.gpu_auto = true;
  LlamaRuntime rt(*w, ro);
  ASSERT_NE(rt.gpu(), nullptr);
  const OffloadPlan& p = rt.gpu()->plan();
  EXPECT_LE(p.total(), 600000u / 10 * 9);
  EXPECT_GT(p.first_layer, 0);
  EXPECT_LT(p.first_layer, 5);
  EXPECT_FALSE(p.head);
}

TEST_F(GpuOffloadTest, DeviceFailingTheKnownAnswerSelfTestIsRefused) {
  setenv("METHARME_SELFTEST_SIMULATE_MISMATCH", "vulkan", 1);
  auto g = test::load_model(test::fixture("models/stories260k"), 1, 64, 1, 512, kGpuAll);
  unsetenv("METHARME_SELFTEST_SIMULATE_MISMATCH");
  EXPECT_EQ(g.rt->gpu(), nullptr) << "the device's wrong answers were trusted";
  auto ok = test::load_model(test::fixture("models/stories260k"), 1, 64, 1, 512, kGpuAll);
  EXPECT_NE(ok.rt->gpu(), nullptr);
}

TEST_F(GpuOffloadTest, DeviceErrorFailsThatStepOnly) {
  setenv("METHARME_VK_FAIL_SUBMIT", "2", 1);
  auto g = test::load_model(test::fixture("models/stories260k"), 1, 64, 1, 512, kGpuAll);
  auto cpu = test::load_model(test::fixture("models/stories260k"), 1, 64);
  const std::vector<int> ids = {1, 403, 407};
  g.rt->eval(ids, 0);
  EXPECT_THROW(g.rt->eval(ids, 0), Error);
  const float* l = g.rt->eval(ids, 0);  // the same step again: the device works
  std::vector<float> got(l, l + g.rt->n_vocab());
  const float* w = cpu.rt->eval(ids, 0);
  expect_close(got, std::vector<float>(w, w + cpu.rt->n_vocab()), "after a device error");
}

// Three concurrent greedy requests on a server whose model is wholly on the device give the
// CPU server's texts. A device error that follows one request (METHARME_VK_FAIL_SEQ: the step
// that holds slot 1 fails, and so does slot 1's step run alone) fails that request alone with the
// device's message while the other two finish with the CPU's texts; a one-off error
// (METHARME_VK_FAIL_SUBMIT) fails nobody: the step is run again slot by slot.
TEST_F(GpuOffloadTest, ServeSeveralSlotsOffloadedAndDeviceErrorFailsOneRequest) {
  test::ServerSetup cpu_setup;
  cpu_setup.n_seq = 3;
  std::vector<std::string> want;
  const std::vector<std::string> prompts = {"Once upon a time", "Lily saw a", "The dog"};
  nlohmann::json body = {{"max_length", 16}, {"temperature", 0}};
  {
    test::TestServer s(cpu_setup);
    for (const auto& p : prompts) {
      body["prompt"] = p;
      want.push_back(s.post("/api/v1/generate", body).json()["results"][0]["text"]);
    }
  }
  test::ServerSetup gs = cpu_setup;
  gs.gpu_layers = kGpuAll;
  auto concurrent = [&](test::TestServer& s) {
    std::vector<std::future<test::TestServer::Reply>> replies;
    for (const auto& p : prompts) {
      nlohmann::json b = body;
      b["prompt"] = p;
      replies.push_back(std::async(std::launch::async, [&s, b] { return s.post("/api/v1/generate", b); }));
    }
    int failed = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
      auto r = replies[i].get();
      if (r.status != 200) {
        ++failed;
        EXPECT_EQ(r.status, 500);
        EXPECT_NE(r.body.find("DEVICE_LOST"), std::string::npos) << r.body;
        continue;
      }
      EXPECT_EQ(r.json()["results"][0]["text"], want[i]) << prompts[i];
    }
    return failed;
  };
  {
    setenv("METHARME_VK_FAIL_SEQ", "1:2", 1);
    test::TestServer s(gs);
    unsetenv("METHARME_VK_FAIL_SEQ");
    EXPECT_EQ(concurrent(s), 1) << "exactly the request in slot 1 fails";
    body["prompt"] = prompts[0];
    EXPECT_EQ(s.post("/api/v1/generate", body).json()["results"][0]["text"], want[0]) << "the server kept working";
  }
  setenv("METHARME_VK_FAIL_SUBMIT", "6", 1);  // a step while all three are in flight
  test::TestServer s(gs);
  EXPECT_EQ(concurrent(s), 0) << "a one-off device error is retried";
}

// The commands through their flags: perplexity, generate (greedy) and bench offloaded agree with
// the CPU; no driver gives one line and the CPU result.
TEST_F(GpuOffloadTest, CommandsTakeTheOffloadFlags) {
  const std::string gptq = test::fixture("gptq/gptq-4bit-actorder-g32"), st = test::fixture("models/stories260k");
  test::TempDir tmp;
  std::ofstream(tmp / "text.txt") << "The quick brown fox jumps over the lazy dog. Once upon a time there was a cat "
                                     "that lived in a small house by the river, and every day it went fishing.";
  auto ppl = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = {"perplexity",     "-m",       gptq, "--dataset", "text", "--data",
                                  tmp / "text.txt", "--seqlen", "16", "--limit",   "2",    "--json",
                                  "--no-progress",  "-t",       "2",  "--q4-act",  "f32"};
    a.insert(a.end(), extra.begin(), extra.end());
    auto r = test::run_cli(a);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.exit_code ? 0.0 : nlohmann::json::parse(r.out)["results"][0]["ppl"].get<double>();
  };
  const double cpu_ppl = ppl({});
  EXPECT_NEAR(ppl({"-ngl", "all"}) / cpu_ppl, 1.0, 1e-4);
  EXPECT_NEAR(ppl({"--gpu-layers", "2"}) / cpu_ppl, 1.0, 1e-4);

  std::vector<std::string> gen = {"generate", "-m", st, "-p", "Once upon a time", "-n", "24", "--temp", "0", "-t", "1"};
  auto cpu = test::run_cli(gen);
  ASSERT_EQ(cpu.exit_code, 0) << cpu.err;
  for (std::vector<std::string> flags : {std::vector<std::string>{"--usevulkan"},
                                         {"--usevulkan", "0", "-ngl", "3"},
                                         {"--gpulayers", "99", "--gpu-device", "0"}}) {
    auto a = gen;
    a.insert(a.end(), flags.begin(), flags.end());
    auto r = test::run_cli(a);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, cpu.out) << flags[0];
    EXPECT_NE(r.err.find("GPU offload on"), std::string::npos) << r.err;
  }
  auto bad = gen;
  bad.insert(bad.end(), {"-ngl", "all", "--gpu-device", "7"});
  auto r = test::run_cli(bad);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--gpu-device 7"), std::string::npos) << r.err;
  bad = gen;
  bad.insert(bad.end(), {"-ngl", "many"});
  EXPECT_NE(test::run_cli(bad).exit_code, 0);

  auto info = test::run_cli({"info", "--gpu"});
  EXPECT_EQ(info.exit_code, 0);
  EXPECT_NE(info.out.find("vulkan 0: "), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("subgroup"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("device-local heap"), std::string::npos) << info.out;

  const std::string saved = std::getenv("VK_ICD_FILENAMES") ? std::getenv("VK_ICD_FILENAMES") : "";
  setenv("VK_ICD_FILENAMES", (tmp / "no_such_driver.json").c_str(), 1);
  auto a = gen;
  a.insert(a.end(), {"-ngl", "all"});
  auto none = test::run_cli(a);
  if (saved.empty())
    unsetenv("VK_ICD_FILENAMES");
  else
    setenv("VK_ICD_FILENAMES", saved.c_str(), 1);
  ASSERT_EQ(none.exit_code, 0) << none.err;
  EXPECT_EQ(none.out, cpu.out);
  EXPECT_NE(none.err.find("GPU offload: Vulkan: no Vulkan driver"), std::string::npos) << none.err;
  EXPECT_NE(none.err.find("running on the CPU"), std::string::npos) << none.err;
}

}  // namespace
}  // namespace metharme
#else
TEST(GpuOffloadTest, SkippedWithoutVulkan) { GTEST_SKIP() << "this build has no Vulkan support (METHARME_VULKAN=OFF)"; }
#endif
