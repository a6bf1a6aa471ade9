#include "serve/context_fit.h"

#include <algorithm>
#include <climits>
#include <string>

namespace metharme::serve {

namespace {

constexpr int kMaxAdjust = 16;  // exact re-tokenizations per direction after the estimate

// BOS + the Metharme rendering of every system message and of msgs[first..].
std::vector<int> encode_window(const Tokenizer& tok, const std::vector<Message>& msgs, size_t first, bool open) {
  std::string s;
  for (size_t i = 0; i < msgs.size(); ++i) {
    if (i < first && msgs[i].role != Role::kSystem) continue;
    s += role_marker(msgs[i].role);
    s += msgs[i].text;
  }
  if (open) s += role_marker(Role::kModel);
  return tok.encode(s, true);
}

}  // namespace

int requested_context(FieldReader& r, int server_ctx) {
  int ctx = server_ctx;
  for (const char* name : {"max_context_length", "truncation_length", "num_ctx"})
    if (auto v = r.integer(name, 1, INT32_MAX)) ctx = std::min(ctx, int(*v));
  return ctx;
}

int clamp_max_length(int max_length, int ctx) {
  const int min_remain = std::min(ctx - 4, 16);
  return max_length >= ctx - min_remain ? ctx - min_remain : max_length;
}

int cut_front(std::vector<int>& ids, int room, int bos) {
  room = std::max(room, 1);
  if (int(ids.size()) <= room) return 0;
  const int cut = int(ids.size()) - room;
  const ptrdiff_t from = !ids.empty() && ids[0] == bos ? 1 : 0;
  ids.erase(ids.begin() + from, ids.begin() + from + cut);
  return cut;
}

ChatFit fit_chat(const Tokenizer& tok, const std::vector<Message>& msgs, bool open_model_turn, int room) {
  ChatFit f;
  f.ids = encode_window(tok, msgs, 0, open_model_turn);
  f.full_tokens = int(f.ids.size());
  if (f.full_tokens <= room || msgs.empty()) return f;

  const size_t last = msgs.size() - 1;
  size_t first_turn = 0;  // the first non-system message: a window may start there
  while (first_turn < last && msgs[first_turn].role == Role::kSystem) ++first_turn;
  // A window starts at a non-system message that is not a model reply (its question would be
  // missing), unless it is the first turn or the last message.
  auto valid_start = [&](size_t s) {
    return s == last || (msgs[s].role != Role::kSystem && (s == first_turn || msgs[s].role != Role::kModel));
  };

  // Estimate from the newest message back with per-message counts, then check exactly:
  // tokenizing the whole prompt can merge pieces across message boundaries.
  std::string fixed;
  for (const Message& m : msgs)
    if (m.role == Role::kSystem) fixed += std::string(role_marker(m.role)) + m.text;
  if (open_model_turn) fixed += role_marker(Role::kModel);
  int est = int(tok.encode(fixed, true).size());
  size_t first = last;
  for (size_t i = last + 1; i-- > first_turn;) {
    if (msgs[i].role == Role::kSystem) continue;
    est += int(tok.encode(std::string(role_marker(msgs[i].role)) + msgs[i].text, false).size());
    if (est > room && i < last) break;
    if (valid_start(i)) first = i;
  }
  f.ids = encode_window(tok, msgs, first, open_model_turn);
  for (int step = 0; int(f.ids.size()) > room && first < last; ++step) {
    size_t next = first + 1;
    while (next < last && !valid_start(next)) ++next;
    if (step >= kMaxAdjust) next = last;
    first = next;
    f.ids = encode_window(tok, msgs, first, open_model_turn);
  }
  // The estimate may have been pessimistic: take earlier messages back while they fit.
  for (int step = 0; step < kMaxAdjust && first > first_turn && int(f.ids.size()) <= room; ++step) {
    size_t prev = first - 1;
    while (prev > first_turn && !valid_start(prev)) --prev;
    if (!valid_start(prev)) break;
    std::vector<int> wider = encode_window(tok, msgs, prev, open_model_turn);
    if (int(wider.size()) > room) break;
    f.ids.swap(wider);
    first = prev;
  }
  for (size_t i = first_turn; i < first; ++i) f.messages_dropped += msgs[i].role != Role::kSystem;
  cut_front(f.ids, room, tok.bos());
  f.tokens_cut = std::max(0, f.full_tokens - int(f.ids.size()));
  return f;
}

}  // namespace metharme::serve
