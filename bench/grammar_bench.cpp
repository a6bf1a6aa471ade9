// Grammar cost per token on the 32000-token LLaMA vocabulary: the sampler with the JSON grammar
// against the same sampler without one, when the samplers' survivors fit the grammar (the usual
// case: checked first, nothing else is) and when they do not (the whole vocabulary is filtered
// and the samplers run again), and the whole-vocabulary filter alone in several JSON states.
#include <benchmark/benchmark.h>

#include <random>

#include "chat/generate.h"
#include "grammar/json_schema.h"
#include "sampling/sampler.h"
#include "support/test_util.h"
#include "tokenizer/tokenizer.h"

namespace metharme {
namespace {

struct Setup {
  Tokenizer tok{test::fixture("tokenizer/llama/tokenizer.model")};
  int n_vocab = tok.vocab_size();
  grammar::TokenTable table{grammar_token_texts(tok, n_vocab)};
  std::shared_ptr<const grammar::Grammar> json = grammar::parse_gbnf(grammar::json_object_gbnf());
  // A reply the JSON grammar accepts, as the tokens a model would emit.
  std::vector<int> reply = tok.encode(
      "{\"name\": \"Lily\", \"age\": 7, \"friends\": [\"Tim\", \"Sue\"], \"likes\": {\"food\": \"apple pie\", "
      "\"games\": [\"tag\", \"hide and seek\"]}, \"tall\": false, \"height\": 1.25}",
      false);
};
Setup& setup() {
  static Setup s;
  return s;
}

std::vector<float> random_logits(uint32_t seed, int n) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0, 3);
  std::vector<float> l(static_cast<size_t>(n));
  for (float& v : l) v = d(g);
  return l;
}

// KoboldCpp's defaults, as the API applies them when a client sends none.
SamplerParams kobold_defaults(bool with_grammar) {
  SamplerParams p;
  p.temperature = 0.7f;
  p.top_k = 100;
  p.top_p = 0.92f;
  p.rep_pen_range = 320;
  if (with_grammar) p.grammar = setup().json;
  return p;
}

// Fresh random logits on every draw with the next token of the reply lifted to the top, so the
// sampler draws the reply; after the last token the reply starts over.
void run_reply(benchmark::State& state, bool with_grammar) {
  Setup& S = setup();
  std::vector<std::vector<float>> logits;
  for (size_t i = 0; i < S.reply.size(); ++i) {
    logits.push_back(random_logits(uint32_t(11 + i), S.n_vocab));
    logits.back()[size_t(S.reply[i])] += 30;
  }
  Sampler s(kobold_defaults(with_grammar), S.n_vocab, S.tok.eos(), &S.table);
  s.restart_grammar(true);  // the reply's first piece is "▁{": its space is the text's dummy prefix
  std::vector<int> hist;
  size_t i = 0;
  for (auto _ : state) {
    if (i == S.reply.size()) {
      i = 0;
      s.restart_grammar(true);
    }
    benchmark::DoNotOptimize(s.sample(logits[i++].data(), hist));
  }
}
void BM_ReplyNoGrammar(benchmark::State& state) { run_reply(state, false); }
void BM_ReplyJsonGrammar(benchmark::State& state) { run_reply(state, true); }
BENCHMARK(BM_ReplyNoGrammar);
BENCHMARK(BM_ReplyJsonGrammar);

// Pure random logits: the survivors rarely fit, so most draws filter the whole vocabulary.
void BM_RandomLogitsJsonGrammar(benchmark::State& state) {
  Setup& S = setup();
  std::vector<std::vector<float>> logits;
  for (uint32_t i = 0; i < 16; ++i) logits.push_back(random_logits(7 + i, S.n_vocab));
  Sampler s(kobold_defaults(true), S.n_vocab, S.tok.eos(), &S.table);
  std::vector<int> hist;
  size_t i = 0;
  int n = 0;
  for (auto _ : state) {
    if (++n % 48 == 0) s.restart_grammar(false);  // keep the reply from drifting into one long string
    benchmark::DoNotOptimize(s.sample(logits[i++ % logits.size()].data(), hist));
  }
}
BENCHMARK(BM_RandomLogitsJsonGrammar);

// The grammar's verdict on every token of the vocabulary after `range(0)` reply tokens: one trie
// walk (what the sampler uses), or allows() token by token.
void whole_vocabulary(benchmark::State& state, bool trie) {
  Setup& S = setup();
  grammar::Matcher m(S.json, S.table);
  m.set_skip_leading_space(true);
  for (int i = 0; i < state.range(0); ++i)
    if (!m.accept(S.reply[size_t(i)])) state.SkipWithError("the reply does not fit the grammar");
  std::vector<uint8_t> ok(size_t(S.n_vocab));
  for (auto _ : state) {
    int n = 0;
    if (trie) {
      m.allowed_tokens(ok);
      for (uint8_t v : ok) n += v;
    } else {
      for (int id = 0; id < S.n_vocab; ++id) n += m.allows(id);
    }
    benchmark::DoNotOptimize(n);
    state.counters["allowed"] = n;
  }
}
void BM_WholeVocabularyTrie(benchmark::State& state) { whole_vocabulary(state, true); }
void BM_WholeVocabularyEachToken(benchmark::State& state) { whole_vocabulary(state, false); }
// After 0 reply tokens: the first token (its leading space dropped: no trie); 1: after "▁{\""
// (inside the first key: nearly every token fits); 3: after "name\":"; 10: after "\"age\":".
BENCHMARK(BM_WholeVocabularyTrie)->Arg(0)->Arg(1)->Arg(3)->Arg(10)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_WholeVocabularyEachToken)->Arg(0)->Arg(1)->Arg(3)->Arg(10)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace metharme

BENCHMARK_MAIN();
