#include "chat/generate.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>

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

namespace {

// One generate() call's state. take() handles each new token in order, whether it came from a
// plain draw or from a verified draft.
class Generation {
 public:
  Generation(KvContext& ctx, const Tokenizer& tok, const std::vector<int>& prompt_ids, const GenerateOptions& opt,
             const TextSink& on_text)
      : ctx_(ctx),
        tok_(tok),
        opt_(opt),
        on_text_(on_text),
        history_(prompt_ids),
        dec_(tok, !has_text(tok, prompt_ids)),
        stops_(opt.stop, opt.trim_stop) {
    max_tokens_ = std::max(0, opt.max_tokens);
    res_.prompt_tokens = int(prompt_ids.size());
    res_.tokens.reserve(size_t(max_tokens_));
    history_.reserve(history_.size() + size_t(max_tokens_));
    const int V = ctx.runtime().n_vocab();
    if (opt.sampler.grammar) gtokens_ = std::make_unique<grammar::TokenTable>(grammar_token_texts(tok, V));
    sampler_.emplace(opt.sampler, V, tok.eos(), gtokens_.get());
    sampler_->restart_grammar(!has_text(tok, prompt_ids));
    if (opt.drafter) {
      drafts_.resize(size_t(std::max(0, opt.draft_max)) + 1);
      opt.drafter->begin(opt.sampler, tok.eos());
    }
  }

  GenerateResult run(const std::vector<int>& prompt_ids);

 private:
  static bool has_text(const Tokenizer& tok, const std::vector<int>& ids) {
    for (int id : ids)
      if (!tok.is_control(id)) return true;
    return false;  // only BOS: the first token's dummy-prefix space is dropped
  }
  bool aborted() const { return opt_.abort && opt_.abort->load(std::memory_order_relaxed); }
  void show(const std::string& s) {
    if (open_ && !s.empty() && on_text_ && !on_text_(s)) open_ = false;
  }
  bool take(int next);    // false: generation ends here (res_.finish says why)
  int advance(int next);  // feeds next (and drafts after it); the following token, or -1 if ended

  KvContext& ctx_;
  const Tokenizer& tok_;
  const GenerateOptions& opt_;
  const TextSink& on_text_;
  GenerateResult res_;
  int max_tokens_ = 0;
  std::vector<int> history_;  // prompt and output: what the repetition penalties see
  std::unique_ptr<grammar::TokenTable> gtokens_;
  std::optional<Sampler> sampler_;
  StreamDecoder dec_;
  StopStream stops_;
  bool open_ = true;         // on_text still wants text
  std::vector<int> drafts_;  // [0] the token fed, then the drafts: [draft_max + 1]
};

bool Generation::take(int next) {
  // With a grammar, EOS is drawn only where the text is a whole match (or nothing else fits).
  if ((opt_.stop_at_eos || sampler_->has_grammar()) && next == tok_.eos()) {
    res_.hit_eos = true;
    res_.finish = FinishReason::kEos;
    return false;
  }
  res_.tokens.push_back(next);
  history_.push_back(next);
  show(stops_.push(dec_.push(next)));
  if (!open_) {
    res_.finish = FinishReason::kAborted;
    return false;
  }
  if (stops_.stopped()) {
    res_.finish = FinishReason::kStop;
    return false;
  }
  if (int(res_.tokens.size()) == max_tokens_) return false;  // the last token is never fed back
  if (int(history_.size()) - 1 >= ctx_.runtime().n_ctx()) {  // no position left to feed it at
    res_.finish = FinishReason::kContextFull;
    return false;
  }
  return true;
}

int Generation::advance(int next) {
  const int V = ctx_.runtime().n_vocab();
  // Drafts stop where the output or the context would end, so a full acceptance leaves room for
  // the token sampled after them.
  int k = std::min(max_tokens_ - int(res_.tokens.size()) - 1, ctx_.runtime().n_ctx() - ctx_.size() - 1);
  k = opt_.drafter ? std::min(k, int(drafts_.size()) - 1) : 0;
  const int nd = k > 0 ? opt_.drafter->draft(history_, k, drafts_.data() + 1) : 0;
  if (nd == 0) return sampler_->sample(ctx_.append(next), history_);
  // One pass over next and the drafts; row j holds the target's logits after drafts_[j].
  drafts_[0] = next;
  const int base = ctx_.size();
  const float* rows = ctx_.extend(std::span<const int>(drafts_.data(), size_t(nd) + 1));
  res_.spec.steps++;
  res_.spec.drafted += nd;
  int j = 0, out = -1;
  for (; j < nd; ++j) {
    const int draft = drafts_[size_t(j) + 1];
    const int tok = sampler_->sample_draft(rows + size_t(j) * size_t(V), history_, draft, opt_.drafter->q(j));
    if (tok != draft) {
      out = tok;  // rejected: the replacement is the next token, drafts after it are void
      break;
    }
    res_.spec.accepted++;
    if (!take(tok)) {
      ++j;
      break;
    }
    if (j + 1 == nd) out = sampler_->sample(rows + size_t(nd) * size_t(V), history_);  // the bonus token
  }
  ctx_.truncate(base + 1 + j);  // next and the kept drafts; the cache rows after them are stale
  return out;
}

GenerateResult Generation::run(const std::vector<int>& prompt_ids) {
  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  const float* logits = ctx_.sync(prompt_ids, opt_.context_shift, opt_.abort);
  res_.prompt_reused = ctx_.last_plan().keep + ctx_.last_plan().shifted;
  auto t1 = clock::now();
  res_.prompt_seconds = std::chrono::duration<double>(t1 - t0).count();
  bool live = logits && max_tokens_ > 0;
  if (!logits || (live && aborted())) {
    res_.finish = FinishReason::kAborted;
    live = false;
  }
  int next = live ? sampler_->sample(logits, history_) : -1;
  while (live && take(next)) {
    if (aborted()) {
      res_.finish = FinishReason::kAborted;
      break;
    }
    next = advance(next);
    live = next >= 0;
  }
  if (res_.finish != FinishReason::kAborted) {
    // Bytes of an unfinished character, then whatever was held back as a possible stop string.
    show(stops_.push(dec_.flush()));
    if (stops_.stopped() && res_.finish != FinishReason::kStop) res_.finish = FinishReason::kStop;
    show(stops_.finish());
  }
  res_.text = stops_.text().substr(0, stops_.shown());
  res_.gen_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  return std::move(res_);
}

}  // namespace

GenerateResult generate(KvContext& ctx, const Tokenizer& tok, const std::vector<int>& prompt_ids,
                        const GenerateOptions& opt, const TextSink& on_text) {
  MH_CHECK(!prompt_ids.empty(), "generate: the prompt has no tokens");
  Generation g(ctx, tok, prompt_ids, opt, on_text);
  return g.run(prompt_ids);
}

GenerateResult generate(LlamaRuntime& rt, const Tokenizer& tok, const std::vector<int>& prompt_ids,
                        const GenerateOptions& opt, const TextSink& on_text) {
  KvContext ctx(rt, 0);
  return generate(ctx, tok, prompt_ids, opt, on_text);
}

}  // namespace metharme
