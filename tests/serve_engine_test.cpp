// The serving engine (continuous batching) against run.c's greedy outputs and against itself run
// one request at a time; stop strings, banned phrases, abort, queue bounds, prefill fairness.
#include <gtest/gtest.h>

#include <thread>

#include "serve/engine.h"
#include "serve/output.h"
#include "support/model_util.h"
#include "support/test_util.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace metharme {
namespace {

using serve::Engine;
using serve::EngineOptions;
using serve::Finish;
using serve::GenSpec;
using serve::Job;
using serve::JobStats;

std::vector<int> ids_of(const nlohmann::json& j) {
  return j.is_string() ? nlohmann::json::parse(j.get<std::string>()).get<std::vector<int>>() : j.get<std::vector<int>>();
}

void wait_done(const Job& j) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  while (!j.done() && std::chrono::steady_clock::now() < deadline) j.wait(j.text().size(), std::chrono::milliseconds(10));
  ASSERT_TRUE(j.done()) << "job did not finish";
}

struct Fixture {
  test::Loaded m;
  Tokenizer tok;
  std::unique_ptr<Engine> engine;
  Fixture(const std::string& dir, int n_seq, EngineOptions eo = {}, int n_ctx = 512)
      : m(test::load_model(dir, 1, n_ctx, n_seq)), tok(Tokenizer::from_folder(dir)) {
    engine = std::make_unique<Engine>(*m.rt, tok, eo);
  }
};

GenSpec greedy(std::vector<int> prompt, int max_new) {
  GenSpec g;
  g.prompt = std::move(prompt);
  g.max_new = max_new;
  g.sampler.temperature = 0;
  return g;
}

TEST(ServeEngine, ConcurrentGreedyMatchesRunC) {
  // Ten prompts through four slots at once: every continuation is run.c's, token for token.
  const std::string dir = test::fixture("models/stories260k");
  EngineOptions eo;
  eo.max_queue = 16;
  eo.prefill_chunk = 7;  // prompts are read in small interleaved pieces
  Fixture f(dir, 4, eo);
  auto g = test::read_json(dir + "/golden_generate.json");
  std::vector<GenSpec> specs;
  std::vector<std::vector<int>> want;
  for (const auto& p : g["prompts"]) {
    want.push_back(ids_of(p["generated_ids"]));
    GenSpec s = greedy(ids_of(p["prompt_ids"]), int(want.back().size()));
    s.stop_at_eos = false;
    specs.push_back(s);
  }
  auto jobs = f.engine->submit(std::move(specs));
  ASSERT_EQ(jobs.size(), want.size());
  for (size_t i = 0; i < jobs.size(); ++i) {
    wait_done(*jobs[i]);
    EXPECT_EQ(jobs[i]->tokens(), want[i]) << "prompt " << i;
    EXPECT_EQ(jobs[i]->finish(), Finish::kLength);
    // The text is the prompt's continuation as SentencePiece decodes it.
    std::vector<int> all(ids_of(g["prompts"][i]["prompt_ids"]));
    std::string prompt_text = f.tok.decode(std::vector<int>(all.begin() + 1, all.end()));
    all.insert(all.end(), want[i].begin(), want[i].end());
    std::string full = f.tok.decode(std::vector<int>(all.begin() + 1, all.end()));
    EXPECT_EQ(prompt_text + jobs[i]->text(), full) << "prompt " << i;
  }
}

// Requests give the same text whether they run together or one by one. Batched rows go through
// matmul kernels whose summation order depends on the batch (rows in fours, sgemm from 8 rows),
// so logits agree to rounding, not bit for bit: seeded sampling is checked on a trained model,
// whose distributions are peaked; the random model (a nearly flat distribution over 32000
// tokens, where any rounding can move a draw) is checked greedily.
void check_concurrent_equals_sequential(const std::string& dir, int n_seq, float temperature) {
  Fixture f(dir, n_seq, EngineOptions{16, 32});
  const char* prompts[] = {"Once upon a time", "The little bird", "Tom and his dog went", "<|user|>Hello!<|model|>",
                           "Sara had a red ball. She", "Mom said", "The sun was shining and", "Ben wanted"};
  std::vector<GenSpec> specs;
  for (int i = 0; i < 8; ++i) {
    GenSpec s;
    s.prompt = f.tok.encode(prompts[i], true);
    s.max_new = 40;
    s.sampler.temperature = temperature;
    s.sampler.seed = 1000 + uint64_t(i);
    specs.push_back(s);
  }
  auto together = f.engine->submit(specs);
  ASSERT_EQ(together.size(), 8u);
  std::vector<std::string> texts;
  for (auto& j : together) {
    wait_done(*j);
    texts.push_back(j->text());
  }
  for (int i = 0; i < 8; ++i) {
    auto j = f.engine->submit(specs[size_t(i)]);
    ASSERT_TRUE(j);
    wait_done(*j);
    EXPECT_EQ(j->text(), texts[size_t(i)]) << "request " << i;
    EXPECT_EQ(j->tokens(), together[size_t(i)]->tokens()) << "request " << i;
  }
  EXPECT_FALSE(texts[0].empty());
}

TEST(ServeEngine, EightConcurrentSeededRequestsEqualSequential) {
  check_concurrent_equals_sequential(test::fixture("models/stories260k"), 8, 0.9f);
}

TEST(ServeEngine, EightConcurrentGreedyRequestsEqualSequentialLlamaTokenizer) {
  check_concurrent_equals_sequential(test::fixture("models/llama-rand-h256-gqa"), 8, 0.0f);
}

TEST(ServeEngine, ReusesTheKvOfASharedPrefix) {
  Fixture f(test::fixture("models/stories260k"), 2);
  auto prompt = f.tok.encode("Once upon a time, there was a little girl named Lily.", true);
  auto a = f.engine->submit(greedy(prompt, 20));
  wait_done(*a);
  EXPECT_EQ(a->stats().cached_tokens, 0);
  // The same chat with more text: only the new tokens are read.
  auto longer = prompt;
  for (int id : a->tokens()) longer.push_back(id);
  auto b = f.engine->submit(greedy(longer, 10));
  wait_done(*b);
  EXPECT_EQ(b->stats().cached_tokens, int(prompt.size()) + 19);  // the last sampled token was never fed
  // And the output equals a cold run's.
  Fixture cold(test::fixture("models/stories260k"), 1);
  auto c = cold.engine->submit(greedy(longer, 10));
  wait_done(*c);
  EXPECT_EQ(b->tokens(), c->tokens());
}

TEST(ServeEngine, ShiftsTheKvWhenAChatLosesItsOldestTurns) {
  Fixture f(test::fixture("models/stories260k"), 1);
  auto piece = [&](const char* t) { return f.tok.encode(t, false); };
  // Each piece starts with its own word ("▁Lily", "▁They", ...), so no two share a first token.
  auto a = piece("Lily had a cat named Tom."), b = piece("They played in the park every day until the sun went down."),
       c = piece("One day the cat ran up a big tree and could not come down."), d = piece("Lily was sad.");
  auto join = [](std::initializer_list<std::vector<int>> parts) {
    std::vector<int> out{1};
    for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
  };
  auto first = f.engine->submit(greedy(join({a, b, c}), 4));
  wait_done(*first);
  // The middle turn is cut: the pinned top is kept, the last turn slides down into place.
  for (bool shift : {true, false}) {
    GenSpec g = greedy(join({a, c, d}), 4);
    g.context_shift = shift;
    auto second = f.engine->submit(g);
    wait_done(*second);
    JobStats st = second->stats();
    EXPECT_EQ(st.shifted_tokens, shift ? int(c.size()) : 0);
    EXPECT_EQ(st.cached_tokens, shift ? int(1 + a.size() + c.size()) : int(1 + a.size())) << "shift " << shift;
    EXPECT_EQ(second->finish(), Finish::kLength);
    if (shift) {
      // Put the slot back to the first prompt for the unshifted run.
      auto again = f.engine->submit(greedy(join({a, b, c}), 4));
      wait_done(*again);
    }
  }
}

TEST(ServeEngine, StopStringsEndTheTextWithOrWithoutTheString) {
  Fixture f(test::fixture("models/stories260k"), 2);
  auto prompt = f.tok.encode("Once upon a time", true);
  auto base = f.engine->submit(greedy(prompt, 60));
  wait_done(*base);
  const std::string full = base->text();  // ", there was a little girl named Lily. She loved ..."
  size_t at = full.find("Lily");
  ASSERT_NE(at, std::string::npos) << full;
  for (bool trim : {false, true}) {
    GenSpec s = greedy(prompt, 60);
    s.stop = {"Lil", "zzz never"};
    s.trim_stop = trim;
    auto j = f.engine->submit(s);
    // While it runs, the streamed text never shows a possible stop prefix.
    std::string seen;
    while (!j->done()) {
      j->wait(seen.size(), std::chrono::milliseconds(5));
      std::string t = j->text();
      ASSERT_EQ(t.compare(0, seen.size(), seen), 0) << "streamed text changed";
      seen = t;
    }
    EXPECT_EQ(j->finish(), Finish::kStop);
    EXPECT_EQ(j->text(), full.substr(0, at + (trim ? 0 : 3)));
  }
}

TEST(ServeEngine, BannedPhrasesNeverAppear) {
  Fixture f(test::fixture("models/stories260k"), 1);
  auto prompt = f.tok.encode("Once upon a time", true);
  auto base = f.engine->submit(greedy(prompt, 60));
  wait_done(*base);
  ASSERT_NE(base->text().find("little girl"), std::string::npos);
  GenSpec s = greedy(prompt, 60);
  s.banned_phrases = {"little girl"};
  auto j = f.engine->submit(s);
  wait_done(*j);
  EXPECT_EQ(j->text().find("little girl"), std::string::npos) << j->text();
  // Up to where the phrase began, nothing changed.
  size_t at = base->text().find("little girl");
  EXPECT_EQ(j->text().substr(0, at), base->text().substr(0, at));
  EXPECT_EQ(j->stats().generated, 60);
}

TEST(ServeEngine, AbortEndsARunningRequestAndFreesItsSlot) {
  Fixture f(test::fixture("models/llama-rand-h256"), 1, EngineOptions{4, 64}, 2048);
  GenSpec s;
  s.prompt = f.tok.encode("Hello there", true);
  s.max_new = 2000;
  s.stop_at_eos = false;
  s.genkey = "KCPP1234";
  auto j = f.engine->submit(s);
  ASSERT_TRUE(j);
  j->wait(0, std::chrono::seconds(30));
  ASSERT_FALSE(j->text().empty());
  auto n = f.engine->abort("KCPP1234", "");
  EXPECT_EQ(n.running, 1);
  wait_done(*j);
  EXPECT_EQ(j->finish(), Finish::kAbort);
  EXPECT_LT(j->stats().generated, 2000);
  // The slot is free again.
  auto k = f.engine->submit(greedy(f.tok.encode("Hi", true), 5));
  ASSERT_TRUE(k);
  wait_done(*k);
  EXPECT_EQ(k->finish(), Finish::kLength);
}

TEST(ServeEngine, FullQueueRefusesAndKeylessAbortMatchesTheClient) {
  Fixture f(test::fixture("models/llama-rand-h256"), 1, EngineOptions{1, 64}, 2048);
  GenSpec s;
  s.prompt = f.tok.encode("Hello", true);
  s.max_new = 2000;
  s.stop_at_eos = false;
  s.client = "10.0.0.1";
  auto running = f.engine->submit(s);
  ASSERT_TRUE(running);
  running->wait(0, std::chrono::seconds(30));  // it holds the slot now
  ASSERT_FALSE(running->text().empty());
  auto queued = f.engine->submit(s);
  ASSERT_TRUE(queued);
  EXPECT_FALSE(f.engine->submit(s)) << "a third request does not fit: one slot, one queue place";
  EXPECT_TRUE(f.engine->submit(std::vector<GenSpec>{s, s}).empty());
  // Another client's keyless abort touches nothing; this client's ends both.
  auto none = f.engine->abort("", "10.0.0.2");
  EXPECT_EQ(none.running + none.queued, 0);
  auto both = f.engine->abort("", "10.0.0.1");
  EXPECT_EQ(both.running, 1);
  EXPECT_EQ(both.queued, 1);
  wait_done(*running);
  wait_done(*queued);
  EXPECT_EQ(queued->finish(), Finish::kAbort);
  EXPECT_EQ(queued->text(), "");
  EXPECT_EQ(f.engine->find("", "10.0.0.1"), queued);  // the newest keyless request of that client
}

TEST(ServeEngine, ShortPromptIsNotStuckBehindALongOne) {
  // Prefill is shared fairly: a short request finishes while a long prompt is still being read.
  Fixture f(test::fixture("models/stories260k"), 2, EngineOptions{4, 16});
  std::vector<int> long_prompt{1};
  auto piece = f.tok.encode(" Once upon a time there was a cat.", false);
  while (long_prompt.size() < 480) long_prompt.insert(long_prompt.end(), piece.begin(), piece.end());
  long_prompt.resize(480);
  auto jobs = f.engine->submit({greedy(long_prompt, 8), greedy(f.tok.encode("Tom", true), 8)});
  ASSERT_EQ(jobs.size(), 2u);
  wait_done(*jobs[0]);
  wait_done(*jobs[1]);
  EXPECT_LT(jobs[1]->stats().ended_at, jobs[0]->stats().first_token_at);
}

TEST(ServeEngine, RejectsRequestsThatCannotFit) {
  Fixture f(test::fixture("models/stories260k"), 1, EngineOptions{}, 64);
  EXPECT_THROW(f.engine->submit(greedy(std::vector<int>(60, 5), 10)), Error);
  EXPECT_THROW(f.engine->submit(greedy({}, 10)), Error);
  EXPECT_THROW(f.engine->submit(greedy({1, 99999}, 10)), Error);
  // Exactly full is fine: the run ends at the context's end.
  auto j = f.engine->submit(greedy(std::vector<int>{1, 400, 401}, 61));
  ASSERT_TRUE(j);
  wait_done(*j);
  EXPECT_EQ(j->stats().generated, 61);
}

TEST(ServeOutput, HoldsBackPossibleStopPrefixesAndRewinds) {
  Tokenizer tok = Tokenizer::from_folder(test::fixture("tokenizer/llama"));
  serve::OutputText out(tok, false, {"<|user|>"}, true, {"forbidden fruit"});
  using Ev = serve::OutputText::Event;
  // "▁Hi ▁there ▁< | user | > ▁more": the stop string spans five tokens.
  auto ids = tok.encode("Hi there <|user|> more", false);
  size_t i = 0;
  Ev ev = Ev::kContinue;
  for (; i < ids.size() && ev == Ev::kContinue; ++i) {
    ev = out.push(ids[i]);
    const std::string& t = out.text();
    // Nothing that might be the start of "<|user|>" is ever committed.
    EXPECT_EQ(t.substr(0, out.committed()).find('<'), std::string::npos) << t;
  }
  EXPECT_EQ(ev, Ev::kStop);
  EXPECT_EQ(i, ids.size() - 1) << "the stop ends at '>', before ' more'";
  EXPECT_EQ(out.final_text(), " Hi there ");  // trimmed: the text ends before the stop string
  // Rewind to " Hi there <|" and continue with a banned phrase (matched case-insensitively).
  out.rewind(4);
  EXPECT_EQ(out.text(), " Hi there <|");
  ev = Ev::kContinue;
  for (int id : tok.encode("a Forbidden Fruit", false))
    if ((ev = out.push(id)) != Ev::kContinue) break;
  ASSERT_EQ(ev, Ev::kBanned);
  out.rewind(out.banned_token());
  EXPECT_EQ(out.text().find("orbidden"), std::string::npos) << out.text();
  EXPECT_EQ(out.text().rfind(" Hi there <|", 0), 0u);
}

}  // namespace
}  // namespace metharme
