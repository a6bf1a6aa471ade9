#include "chat/generate.h"

#include <chrono>

#include "util/error.h"

namespace metharme {

GenerateResult generate(LlamaRuntime& rt, const Tokenizer& tok, const std::vector<int>& prompt_ids,
                        const GenerateOptions& opt, const std::function<bool(const std::string&)>& on_text) {
  using clock = std::chrono::steady_clock;
  MH_CHECK(!prompt_ids.empty(), "generate: the prompt has no tokens");
  const int n_prompt = int(prompt_ids.size());
  if (n_prompt + opt.max_tokens > rt.n_ctx())
    fail("prompt (", n_prompt, " tokens) + ", opt.max_tokens, " new tokens exceed the context of ", rt.n_ctx());
  GenerateResult res;
  res.prompt_tokens = n_prompt;
  res.tokens.reserve(size_t(opt.max_tokens));
  std::vector<int> history(prompt_ids);
  history.reserve(history.size() + size_t(opt.max_tokens));
  Sampler sampler(opt.sampler, rt.n_vocab(), tok.eos());
  // Text continues the prompt, so no dummy-prefix space is dropped unless the prompt is only BOS.
  bool prompt_has_text = false;
  for (int id : prompt_ids)
    if (!tok.is_control(id)) prompt_has_text = true;
  StreamDecoder dec(tok, !prompt_has_text);

  auto t0 = clock::now();
  const float* logits = rt.eval(prompt_ids, 0);
  auto t1 = clock::now();
  res.prompt_seconds = std::chrono::duration<double>(t1 - t0).count();
  int pos = n_prompt;
  for (int i = 0; i < opt.max_tokens; ++i) {
    int next = sampler.sample(logits, history);
    if (opt.stop_at_eos && next == tok.eos()) {
      res.hit_eos = true;
      break;
    }
    res.tokens.push_back(next);
    history.push_back(next);
    std::string piece = dec.push(next);
    res.text += piece;
    if (!piece.empty() && on_text && !on_text(piece)) break;
    if (i + 1 == opt.max_tokens) break;  // the last token is never fed back
    logits = rt.eval(std::span<const int>(&next, 1), pos++);
  }
  std::string tail = dec.flush();
  res.text += tail;
  if (!tail.empty() && on_text) on_text(tail);
  res.gen_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  return res;
}

}  // namespace metharme
