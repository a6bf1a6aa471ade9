#include "chat/session.h"

#include "util/error.h"

namespace metharme {

ChatSession::ChatSession(LlamaRuntime& rt, const Tokenizer& tok, int seq) : rt_(&rt), tok_(&tok), kv_(rt, seq) {}

// The prompt is tokenized as whole text, except that replies generated here keep their own
// tokens: the text between them is encoded in chunks, each continuing the previous one.
std::vector<int> ChatSession::encode_prompt(size_t first) const {
  std::vector<int> ids{tok_->bos()};
  std::string pending = render_header(conv_.system, conv_.memory);
  bool at_start = true;
  auto flush = [&] {
    auto part = at_start ? tok_->encode(pending, false) : encode_continuation(*tok_, pending);
    ids.insert(ids.end(), part.begin(), part.end());
    pending.clear();
    at_start = false;
  };
  for (size_t i = first; i < conv_.messages.size(); ++i) {
    const Message& m = conv_.messages[i];
    pending += role_marker(m.role);
    if (m.role == Role::kModel && !m.ids.empty()) {
      flush();
      ids.insert(ids.end(), m.ids.begin(), m.ids.end());
    } else {
      pending += m.text;
    }
  }
  pending += role_marker(Role::kModel);
  flush();
  return ids;
}

ChatPrompt ChatSession::build_prompt(int reply_budget) const {
  const auto& msgs = conv_.messages;
  const int budget = rt_->n_ctx() - std::max(0, reply_budget);
  // A window may start at any message but a model reply (whose question would be missing),
  // except at the very start; the last message always stays.
  auto valid_start = [&](size_t s) { return s == 0 || msgs[s].role != Role::kModel; };
  const size_t last = msgs.empty() ? 0 : msgs.size() - 1;

  // Estimate from the newest message back with per-turn token counts, then check exactly:
  // tokenizing the whole prompt can merge pieces across turn boundaries.
  int est = int(tok_->encode(render_header(conv_.system, conv_.memory), true).size()) +
            int(tok_->encode(role_marker(Role::kModel), false).size());
  size_t first = msgs.size();
  for (size_t i = msgs.size(); i-- > 0;) {
    const Message& m = msgs[i];
    est += m.role == Role::kModel && !m.ids.empty()
               ? int(encode_continuation(*tok_, role_marker(m.role)).size() + m.ids.size())
               : int(tok_->encode(std::string(role_marker(m.role)) + m.text, false).size());
    if (est > budget && i < last) break;
    if (valid_start(i)) first = i;
  }
  if (first > last) first = last;
  while (!valid_start(first) && first < last) ++first;
  ChatPrompt best{encode_prompt(first), first};
  while (int(best.ids.size()) > budget) {
    size_t next = first + 1;
    while (next <= last && !valid_start(next)) ++next;
    if (next > last)
      fail("the system prompt, memory and last message take ", best.ids.size(), " tokens; with ", reply_budget,
           " tokens for the reply they do not fit the context of ", rt_->n_ctx(),
           " (shorten them, lower the reply length or raise the context)");
    first = next;
    best = {encode_prompt(first), first};
  }
  // The estimate may have been pessimistic: take earlier turns back while they fit.
  while (first > 0) {
    size_t prev = first - 1;
    while (prev > 0 && !valid_start(prev)) --prev;
    ChatPrompt p{encode_prompt(prev), prev};
    if (int(p.ids.size()) > budget) break;
    best = std::move(p);
    first = prev;
  }
  return best;
}

ChatReply ChatSession::respond(const GenerateOptions& opt, const TextSink& on_text) {
  if (conv_.messages.empty() || conv_.messages.back().role == Role::kModel)
    fail("nothing to reply to: the conversation does not end with a user message");
  return write_reply(build_prompt(opt.max_tokens), opt, on_text);
}

ChatReply ChatSession::write_reply(const ChatPrompt& p, const GenerateOptions& opt, const TextSink& on_text) {
  ChatReply r;
  static_cast<GenerateResult&>(r) = generate(kv_, *tok_, p.ids, opt, on_text);
  r.first_message = p.first_message;
  // The tokens stand for the text unless it was cut (stop string, abort) or never finished.
  bool whole = r.finish == FinishReason::kEos || r.finish == FinishReason::kLength || r.finish == FinishReason::kContextFull;
  conv_.messages.push_back({Role::kModel, r.text, whole ? r.tokens : std::vector<int>{}});
  return r;
}

ChatReply ChatSession::say(const std::string& user_text, const GenerateOptions& opt, const TextSink& on_text) {
  conv_.messages.push_back({Role::kUser, user_text});
  try {
    return write_reply(build_prompt(opt.max_tokens), opt, on_text);
  } catch (...) {
    conv_.messages.pop_back();  // the reply was not added: the conversation is as before
    throw;
  }
}

ChatReply ChatSession::retry(const GenerateOptions& opt, const TextSink& on_text) {
  if (conv_.messages.empty() || conv_.messages.back().role != Role::kModel) fail("there is no reply to retry");
  Message old = conv_.messages.back();
  conv_.messages.pop_back();
  try {
    return respond(opt, on_text);
  } catch (...) {
    conv_.messages.push_back(old);
    throw;
  }
}

bool ChatSession::undo() {
  auto& m = conv_.messages;
  for (size_t i = m.size(); i-- > 0;)
    if (m[i].role == Role::kUser) {
      m.erase(m.begin() + std::ptrdiff_t(i), m.end());
      return true;
    }
  return false;
}

}  // namespace metharme
