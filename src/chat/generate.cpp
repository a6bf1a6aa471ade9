#include "chat/generate.h"

#include <algorithm>
#include <chrono>
#include <memory>

#include "chat/stop.h"
#include "util/error.h"

namespace metharme {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kLength: return "length";
    case FinishReason::kEos: return "eos";
    case FinishReason::kStop: return "stop";
    case FinishReason::kAborted: return "aborted";
    case FinishReason::kContextFull: return "context";
  }
  return "";
}

std::vector<std::string> grammar_token_texts(const Tokenizer& tok, int n_vocab) {
  std::vector<std::string> texts(static_cast<size_t>(n_vocab));
  for (int id = 0; id < std::min(n_vocab, tok.vocab_size()); ++id) {
    if (tok.is_control(id) || tok.is_unknown(id)) continue;
    int b = tok.byte_value(id);
    texts[size_t(id)] = b >= 0 ? std::string(1, char(b)) : tok.piece_text(id);
  }
  return texts;
}

GenerateResult generate(KvContext& ctx, const Tokenizer& tok, const std::vector<int>& prompt_ids,
                        const GenerateOptions& opt, const TextSink& on_text) {
  using clock = std::chrono::steady_clock;
  MH_CHECK(!prompt_ids.empty(), "generate: the prompt has no tokens");
  LlamaRuntime& rt = ctx.runtime();
  const int n_prompt = int(prompt_ids.size());
  GenerateResult res;
  res.prompt_tokens = n_prompt;
  const int max_tokens = std::max(0, opt.max_tokens);
  res.tokens.reserve(size_t(max_tokens));
  std::vector<int> history(prompt_ids);
  history.reserve(history.size() + size_t(max_tokens));
  std::unique_ptr<grammar::TokenTable> gtokens;
  if (opt.sampler.grammar) gtokens = std::make_unique<grammar::TokenTable>(grammar_token_texts(tok, rt.n_vocab()));
  Sampler sampler(opt.sampler, rt.n_vocab(), tok.eos(), gtokens.get());
  // Text continues the prompt, so no dummy-prefix space is dropped unless the prompt is only BOS.
  bool prompt_has_text = false;
  for (int id : prompt_ids)
    if (!tok.is_control(id)) prompt_has_text = true;
  StreamDecoder dec(tok, !prompt_has_text);
  sampler.restart_grammar(!prompt_has_text);
  StopStream stops(opt.stop, opt.trim_stop);
  bool open = true;  // on_text still wants text
  auto show = [&](const std::string& s) {
    if (open && !s.empty() && on_text && !on_text(s)) open = false;
  };

  auto t0 = clock::now();
  const float* logits = ctx.sync(prompt_ids, opt.context_shift, opt.abort);
  res.prompt_reused = ctx.last_plan().keep + ctx.last_plan().shifted;
  auto t1 = clock::now();
  res.prompt_seconds = std::chrono::duration<double>(t1 - t0).count();
  if (!logits) res.finish = FinishReason::kAborted;
  for (int i = 0; logits && i < max_tokens; ++i) {
    if (opt.abort && opt.abort->load(std::memory_order_relaxed)) {
      res.finish = FinishReason::kAborted;
      break;
    }
    int next = sampler.sample(logits, history);
    // With a grammar, EOS is drawn only where the text is a whole match (or nothing else fits).
    if ((opt.stop_at_eos || sampler.has_grammar()) && next == tok.eos()) {
      res.hit_eos = true;
      res.finish = FinishReason::kEos;
      break;
    }
    res.tokens.push_back(next);
    history.push_back(next);
    show(stops.push(dec.push(next)));
    if (!open) {
      res.finish = FinishReason::kAborted;
      break;
    }
    if (stops.stopped()) {
      res.finish = FinishReason::kStop;
      break;
    }
    if (i + 1 == max_tokens) break;  // the last token is never fed back
    if (ctx.size() >= rt.n_ctx()) {
      res.finish = FinishReason::kContextFull;
      break;
    }
    logits = ctx.append(next);
  }
  if (res.finish != FinishReason::kAborted) {
    // Bytes of an unfinished character, then whatever was held back as a possible stop string.
    show(stops.push(dec.flush()));
    if (stops.stopped() && res.finish != FinishReason::kStop) res.finish = FinishReason::kStop;
    show(stops.finish());
  }
  res.text = stops.text().substr(0, stops.shown());
  res.gen_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  return res;
}

GenerateResult generate(LlamaRuntime& rt, const Tokenizer& tok, const std::vector<int>& prompt_ids,
                        const GenerateOptions& opt, const TextSink& on_text) {
  KvContext ctx(rt, 0);
  return generate(ctx, tok, prompt_ids, opt, on_text);
}

}  // namespace metharme
