// KV-cache reuse across prompts: the reuse plan, KvCache::shift against a full re-prefill, and
// chat sessions that prefill only new tokens and shift dropped turns out.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "chat/kv_context.h"
#include "chat/session.h"
#include "support/model_util.h"
#include "support/test_util.h"

namespace metharme {
namespace {

std::vector<int> seq(int from, int n) {
  std::vector<int> v;
  for (int i = 0; i < n; ++i) v.push_back(from + i);
  return v;
}
std::vector<int> join(std::initializer_list<std::vector<int>> parts) {
  std::vector<int> v;
  for (const auto& p : parts) v.insert(v.end(), p.begin(), p.end());
  return v;
}

TEST(KvPlan, CommonPrefixAndOneDroppedSpan) {
  auto H = seq(100, 3), D = seq(200, 4), K = seq(300, 10), N = seq(400, 2);
  KvPlan p = plan_kv_reuse(join({H, K}), join({H, K, N}), 8);
  EXPECT_EQ(p.keep, 13);
  EXPECT_EQ(p.evaluate, 2);
  p = plan_kv_reuse(join({H, K}), join({H, K}), 8);  // same prompt: the last token is re-evaluated
  EXPECT_EQ(p.keep, 12);
  EXPECT_EQ(p.evaluate, 1);
  p = plan_kv_reuse(join({H, D, K}), join({H, K, N}), 8);
  EXPECT_EQ(p.keep, 3);
  EXPECT_EQ(p.drop, 4);
  EXPECT_EQ(p.shifted, 10);
  EXPECT_EQ(p.evaluate, 2);
  p = plan_kv_reuse(join({H, D, K}), join({H, K, N}), 11);  // too short to be worth a shift
  EXPECT_EQ(p.keep, 3);
  EXPECT_EQ(p.shifted, 0);
  EXPECT_EQ(p.evaluate, 12);
  p = plan_kv_reuse(join({H, D, K}), join({H, K}), 8);  // the shifted part stops before the last token
  EXPECT_EQ(p.shifted, 9);
  EXPECT_EQ(p.evaluate, 1);
  p = plan_kv_reuse({}, join({H, N}), 8);
  EXPECT_EQ(p.keep + p.shifted, 0);
  EXPECT_EQ(p.evaluate, 5);
}

std::vector<int> random_ids(int n, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_int_distribution<int> d(259, 31999);
  std::vector<int> v;
  for (int i = 0; i < n; ++i) v.push_back(d(g));
  return v;
}

struct ShiftCase {
  std::string model;
  kernels::KvType kv;
  float tol;
};
void PrintTo(const ShiftCase& c, std::ostream* os) {
  *os << c.model << " " << kernels::kv_type_name(c.kv) << " tol " << c.tol;
}

// With one layer, keys and values depend only on each token and its position, so dropping a
// span and turning the later keys to their new positions must give exactly what a fresh
// prefill of the shorter context gives: this tests KvCache::shift itself.
class KvShift : public ::testing::TestWithParam<ShiftCase> {};

TEST_P(KvShift, OneLayerShiftEqualsFullPrefill) {
  const ShiftCase& c = GetParam();
  LoadOptions lo;
  lo.quiet = true;
  auto w = load_weights(test::fixture("models/" + c.model), lo);
  w->layers.resize(1);
  w->config.num_hidden_layers = 1;
  RuntimeOptions ro;
  ro.n_threads = 2;
  ro.n_ctx = 160;
  ro.n_seq = 2;
  ro.kv_type_k = ro.kv_type_v = c.kv;
  LlamaRuntime rt(*w, ro);
  const int V = rt.n_vocab();
  auto H = join({{1}, random_ids(11, 1)}), D = random_ids(37, 2), K = random_ids(50, 3), N = random_ids(6, 4);

  KvContext shifted(rt, 0);
  shifted.sync(join({H, D, K}));
  const float* l = shifted.sync(join({H, K, N}));
  EXPECT_EQ(shifted.last_plan().keep, int(H.size()));
  EXPECT_EQ(shifted.last_plan().drop, int(D.size()));
  EXPECT_EQ(shifted.last_plan().shifted, int(K.size()));
  EXPECT_EQ(shifted.last_plan().evaluate, int(N.size()));
  std::vector<float> got(l, l + V);
  // Decoding goes on after the shift, at positions that continue from the new length.
  const int next = random_ids(1, 8)[0];
  const float* l2 = shifted.append(next);
  std::vector<float> got2(l2, l2 + V);

  KvContext fresh(rt, 1);
  const float* r = fresh.sync(join({H, K, N}));
  std::vector<float> want(r, r + V);
  const float* r2 = fresh.append(next);
  std::vector<float> want2(r2, r2 + V);
  EXPECT_LE(test::max_abs_diff(got.data(), want.data(), size_t(V)), c.tol);
  EXPECT_LE(test::max_abs_diff(got2.data(), want2.data(), size_t(V)), c.tol);
  RecordProperty("max_abs_diff", std::to_string(test::max_abs_diff(got.data(), want.data(), size_t(V))));
}

INSTANTIATE_TEST_SUITE_P(Models, KvShift,
                         ::testing::Values(ShiftCase{"llama-rand-h256", kernels::KvType::kF32, 1e-4f},
                                           ShiftCase{"llama-rand-h256-gqa", kernels::KvType::kF32, 1e-4f},
                                           ShiftCase{"llama-rand-h256", kernels::KvType::kF16, 2e-3f},
                                           // Quantized keys are decoded, turned and encoded again, so
                                           // they differ from fresh ones by up to a step: about 2x the
                                           // observed logit differences (0.045 q8, 0.47 q4).
                                           ShiftCase{"llama-rand-h256-gqa", kernels::KvType::kQ8, 0.1f},
                                           ShiftCase{"llama-rand-h256", kernels::KvType::kQ4, 1.0f}),
                         [](const auto& info) {
                           return (info.param.model == "llama-rand-h256" ? std::string("mha_") : std::string("gqa_")) +
                                  kernels::kv_type_name(info.param.kv);
                         });

TEST(KvReuse, PrefixReuseEqualsFullPrefillAtFullDepth) {
  auto m = test::load_model(test::fixture("models/llama-rand-h256-gqa"), 2, 128, 2);
  const int V = m.rt->n_vocab();
  auto A = join({{1}, random_ids(40, 5)}), B = random_ids(9, 6), C = random_ids(7, 7);
  KvContext reuse(*m.rt, 0);
  reuse.sync(join({A, B}));
  const float* l = reuse.sync(join({A, C}));  // diverges after A: only C is evaluated
  EXPECT_EQ(reuse.last_plan().keep, int(A.size()));
  EXPECT_EQ(reuse.last_plan().evaluate, int(C.size()));
  std::vector<float> got(l, l + V);
  KvContext fresh(*m.rt, 1);
  const float* r = fresh.sync(join({A, C}));
  EXPECT_LE(test::max_abs_diff(got.data(), r, size_t(V)), 1e-4f);
}

TEST(KvReuse, AbortStopsThePrefillAndTheCacheKnowsWhatItHolds) {
  auto m = test::load_model(test::fixture("models/llama-rand-h256"), 1, 512);
  KvContext ctx(*m.rt, 0);
  auto A = join({{1}, random_ids(20, 21)});
  ctx.sync(A);
  std::atomic<bool> abort{true};
  auto B = join({A, random_ids(200, 22)});
  EXPECT_EQ(ctx.sync(B, true, &abort), nullptr);
  EXPECT_EQ(ctx.tokens(), A) << "nothing new was evaluated";
  abort = false;
  EXPECT_NE(ctx.sync(B, true, &abort), nullptr);
  EXPECT_EQ(ctx.tokens(), B);
  EXPECT_EQ(ctx.last_plan().keep, int(A.size()));
}

GenerateOptions greedy(int n) {
  GenerateOptions go;
  go.max_tokens = n;
  go.sampler.temperature = 0;
  go.stop = metharme_stop_strings();
  return go;
}

TEST(ChatSession, LaterTurnsPrefillOnlyNewTokensAndMatchAFreshSession) {
  const std::string dir = test::fixture("models/llama-rand-h256");
  auto m = test::load_model(dir, 1, 512, 2);
  Tokenizer tok = Tokenizer::from_folder(dir);
  ChatSession reuse(*m.rt, tok, 0), fresh(*m.rt, tok, 1);
  reuse.conversation().system = fresh.conversation().system = "You are a helpful sailor.";
  const char* turns[] = {"Hello there!", "Where is the harbour?", "Thanks, bye."};
  int last_prompt = 0;
  for (const char* t : turns) {
    auto a = reuse.say(t, greedy(12), nullptr);
    if (last_prompt > 0) {
      EXPECT_GE(a.prompt_reused, last_prompt - 1) << "turn '" << t << "' re-evaluated old tokens";
    }
    EXPECT_LE(a.prompt_tokens - a.prompt_reused, 40) << "only the new turn is prefilled";
    last_prompt = a.prompt_tokens + int(a.tokens.size());
    fresh.kv().clear();
    auto b = fresh.say(t, greedy(12), nullptr);
    EXPECT_EQ(b.prompt_reused, 0);
    EXPECT_EQ(a.tokens, b.tokens) << "turn '" << t << "'";
    EXPECT_EQ(a.text, b.text);
  }
  EXPECT_EQ(reuse.conversation(), fresh.conversation());
  ASSERT_EQ(reuse.conversation().messages.size(), 6u);
  EXPECT_EQ(reuse.conversation().messages[5].role, Role::kModel);
}

// A small context forces old turns out; the cache then shifts instead of re-prefilling.
TEST(ChatSession, DroppedTurnsAreShiftedOutOfTheCache) {
  const std::string dir = test::fixture("models/llama-rand-h256");
  auto shift_m = test::load_model(dir, 1, 128);
  auto plain_m = test::load_model(dir, 1, 128, 2);
  Tokenizer tok = Tokenizer::from_folder(dir);
  ChatSession shift(*shift_m.rt, tok), plain(*plain_m.rt, tok, 0), fresh(*plain_m.rt, tok, 1);
  for (ChatSession* s : {&shift, &plain, &fresh}) s->conversation().system = "Talk like a pirate, always.";
  auto no_shift = greedy(16);
  no_shift.context_shift = false;
  bool shifted = false;
  for (int i = 0; i < 8; ++i) {
    std::string t = "Tell me about ship number " + std::to_string(i) + ", please.";
    auto a = shift.say(t, greedy(16), nullptr);
    const KvPlan& plan = shift.kv().last_plan();
    if (a.first_message > 0 && plan.shifted > 0) {
      shifted = true;
      EXPECT_GT(plan.drop, 0);
      EXPECT_LT(plan.evaluate, 40) << "turn " << i << ": the kept turns were not re-evaluated";
    }
    // Without shifting, a dropped turn re-prefills after the header and equals a fresh start.
    auto b = plain.say(t, no_shift, nullptr);
    fresh.conversation() = plain.conversation();
    fresh.conversation().messages.pop_back();
    fresh.kv().clear();
    auto c = fresh.respond(no_shift, nullptr);
    EXPECT_EQ(b.tokens, c.tokens) << "turn " << i;
    EXPECT_EQ(b.first_message, a.first_message);
  }
  EXPECT_TRUE(shifted) << "the context never overflowed";
}

}  // namespace
}  // namespace metharme
