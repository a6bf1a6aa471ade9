// Speculative decoding keeps the served output distribution: many short sampled requests to two
// in-process servers, one plain and one verifying drafts sampled from a draft model, compared
// with each other and with the exact probabilities of every output computed from the model's own
// logits (a CPU forward per prefix). The draft model is the target with its final norm scaled
// (its logits times kDraftScale): the same ranking with a sharper q, so drafts are kept often but
// not always and both branches of the rejection rule run. The same statistics must reject the
// distributions two wrong rules would give (keeping every draft; on a rejection drawing from p
// instead of the residual), computed exactly here, so the test has the power to fail.
//
// Seeds are fixed (plain: 1..N, speculative: 10^6 + 1..N); every chi-square test is at
// significance 1e-3 (support/stats_util.h), and the counts differ between runs only through the
// floating-point order of batched forwards.
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <thread>

#include "chat/speculative.h"
#include "serve/params.h"
#include "support/model_util.h"
#include "support/serve_util.h"
#include "support/stats_util.h"
#include "support/test_util.h"

namespace metharme {
namespace {

using json = nlohmann::json;

constexpr int kTokens = 4, kTopK = 3, kRequests = 3000, kClients = 4;
constexpr float kDraftScale = 3.0f;
const char* const kPrompt = "Lily and Ben went to the";

json request(uint64_t seed) {
  return {{"prompt", kPrompt},
          {"max_length", kTokens},
          {"temperature", 2.0},
          {"top_k", kTopK},
          {"top_p", 1},
          {"top_a", 0},
          {"tfs", 1},
          {"typical", 1},
          {"min_p", 0},
          {"rep_pen", 1.3},
          {"rep_pen_range", 64},
          {"ban_eos_token", true},
          {"logprobs", true},
          {"sampler_seed", seed},
          {"quiet", true}};
}

// The sampler settings and prompt ids a request above gets, as the server reads them.
std::pair<SamplerParams, std::vector<int>> as_served(const Tokenizer& tok, int n_vocab, int ctx) {
  serve::FieldErrors errs;
  serve::KoboldParams p = serve::read_kobold(request(1), tok, n_vocab, ctx, 100, errs);
  EXPECT_TRUE(errs.empty()) << errs.first();
  SamplerParams sp = p.common.sampler;
  if (sp.n_ctx == 0) sp.n_ctx = ctx;
  return {sp, serve::kobold_prompt_ids(p, tok)};
}

// The next token's distribution after `ids` as the samplers see it: {id, probability}.
test::Probs next_dist(LlamaRuntime& rt, const SamplerParams& sp, const std::vector<int>& ids) {
  auto logits = test::all_logits(rt, ids);
  Sampler s(sp, rt.n_vocab());
  test::Probs out;
  for (auto [id, p] : s.distribution(logits.data() + (ids.size() - 1) * size_t(rt.n_vocab()), ids)) out[id] = p;
  return out;
}

// An output's first `len` tokens as one key: sum of id_i * V^i.
int64_t key_of(const std::vector<int>& toks, int len, int V) {
  int64_t k = 0;
  for (int i = len - 1; i >= 0; --i) k = k * V + toks[size_t(i)];
  return k;
}

// The exact probability of every output of kTokens tokens (plain decoding), by walking the tree.
void exact_outputs(LlamaRuntime& rt, const SamplerParams& sp, std::vector<int>& ids, size_t prompt_len, double pr,
                   test::Probs& out) {
  const int depth = int(ids.size() - prompt_len);
  if (depth == kTokens) {
    out[key_of(std::vector<int>(ids.begin() + ptrdiff_t(prompt_len), ids.end()), kTokens, rt.n_vocab())] += pr;
    return;
  }
  for (auto [id, p] : next_dist(rt, sp, ids)) {
    ids.push_back(id);
    exact_outputs(rt, sp, ids, prompt_len, pr * p, out);
    ids.pop_back();
  }
}

struct Served {
  test::Counts full, first_two;  // counts of whole outputs and of their first two tokens
  SpecStats spec;
};

Served serve_many(test::TestServer& srv, uint64_t seed0) {
  const int V = srv.tok().vocab_size();
  std::vector<std::vector<int>> outs(kRequests);
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c)
    clients.emplace_back([&, c] {
      for (int i = c; i < kRequests; i += kClients) {
        auto r = srv.post("/api/v1/generate", request(seed0 + uint64_t(i)));
        if (r.status != 200) continue;  // counted below as a missing output
        outs[size_t(i)] = r.json()["results"][0]["logprobs"]["token_ids"].get<std::vector<int>>();
      }
    });
  for (auto& t : clients) t.join();
  Served s;
  for (const auto& o : outs) {
    EXPECT_EQ(o.size(), size_t(kTokens));
    if (o.size() != size_t(kTokens)) continue;
    s.full[key_of(o, kTokens, V)]++;
    s.first_two[key_of(o, 2, V)]++;
  }
  s.spec = srv.engine().stats().spec;
  return s;
}

TEST(SpecServeDist, SampledOutputsFollowThePlainDistribution) {
  const std::string dir = test::fixture("models/stories260k");
  test::ServerSetup plain_setup;
  test::TestServer plain(plain_setup);
  auto draft = test::load_model(dir, 1, plain_setup.ctx, plain_setup.n_seq);
  for (float& w : draft.weights->final_norm) w *= kDraftScale;
  test::ServerSetup spec_setup;
  spec_setup.spec = SpecConfig{3, false, 2, 4, draft.rt.get()};
  test::TestServer spec(spec_setup);

  // Exact probabilities from the target (and the draft, for the wrong rules' distributions).
  auto target = test::load_model(dir, 1, plain_setup.ctx);
  auto [sp, prompt] = as_served(plain.tok(), target.rt->n_vocab(), plain_setup.ctx);
  const int V = target.rt->n_vocab();
  test::Probs exact, exact2, keep_all, redraw_p;
  std::vector<int> ids = prompt;
  exact_outputs(*target.rt, sp, ids, prompt.size(), 1.0, exact);
  // The second token is the first verified draft: the wrong rules' distributions of it given the
  // first, with p and q the target's and the draft's distributions there.
  for (auto [t1, p1] : next_dist(*target.rt, sp, prompt)) {
    ids = prompt;
    ids.push_back(t1);
    auto p = next_dist(*target.rt, sp, ids), q = next_dist(*draft.rt, sp, ids);
    double kept = 0;  // sum of min(p, q): the probability that the draft is kept
    for (auto [id, qi] : q) kept += std::min(qi, p.count(id) ? p[id] : 0.0);
    for (auto [t2, p2] : p) {
      const int64_t key = t1 + int64_t(V) * t2;
      const double qi = q.count(t2) ? q[t2] : 0.0;
      exact2[key] += p1 * p2;
      redraw_p[key] += p1 * (std::min(p2, qi) + (1 - kept) * p2);
    }
    for (auto [t2, qi] : q) keep_all[t1 + int64_t(V) * t2] += p1 * qi;
  }
  ASSERT_GE(exact.size(), 20u) << "the prompt leaves too few outputs to test";

  auto a = serve_many(plain, 1);
  auto b = serve_many(spec, 1000000 + 1);
  // Both branches of the rule ran: drafts were kept and rejected.
  EXPECT_GT(b.spec.accepted, b.spec.drafted / 10);
  EXPECT_LT(b.spec.accepted, b.spec.drafted * 9 / 10);

  std::printf("%zu outputs possible; speculative: %lld of %lld drafts kept\n", exact.size(),
              static_cast<long long>(b.spec.accepted), static_cast<long long>(b.spec.drafted));
  auto check_fit = [](const char* what, const test::Counts& got, const test::Probs& want) {
    auto [stat, df] = test::chi2_fit(got, want);
    std::printf("%s: chi-square %.1f, df %d, critical %.1f\n", what, stat, df, test::chi2_crit(df));
    EXPECT_GE(df, 5) << what;
    EXPECT_LT(stat, test::chi2_crit(df)) << what << ": chi-square " << stat << ", df " << df;
  };
  check_fit("plain outputs vs exact", a.full, exact);
  check_fit("speculative outputs vs exact", b.full, exact);
  check_fit("speculative first two tokens vs exact", b.first_two, exact2);
  auto [stat, df] = test::chi2_two_sample(a.full, b.full);
  EXPECT_LT(stat, test::chi2_crit(df)) << "plain vs speculative: chi-square " << stat << ", df " << df;
  // Power: the distributions of the two wrong rules are rejected by the same statistic.
  for (const auto& [what, wrong] : {std::pair<const char*, const test::Probs*>{"keep every draft", &keep_all},
                                    {"redraw from p on rejection", &redraw_p}}) {
    auto [bad, bdf] = test::chi2_fit(b.first_two, *wrong);
    std::printf("first two tokens vs the rule '%s': chi-square %.1f, df %d\n", what, bad, bdf);
    EXPECT_GT(bad, test::chi2_crit(bdf)) << "cannot tell the rule '" << what << "' (df " << bdf << ")";
  }
}

}  // namespace
}  // namespace metharme
