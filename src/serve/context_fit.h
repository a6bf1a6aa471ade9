// Fitting a request into the context the way KoboldCpp does it, on every generating route:
// the requested context is clamped to the server's, the reply length is clamped by KoboldCpp's
// rule, and the prompt loses tokens from its front (BOS stays) until prompt + reply fit.
// Chat requests first lose whole old messages (system messages stay), then their front.
#pragma once

#include <vector>

#include "chat/metharme.h"
#include "serve/params.h"
#include "tokenizer/tokenizer.h"

namespace metharme::serve {

// The context a request may use: the smallest of max_context_length, truncation_length
// (text-generation-webui, SillyTavern) and num_ctx (Ollama) it gives, never above the
// server's context; the server's context when it gives none. Bad values are recorded in r.
int requested_context(FieldReader& r, int server_ctx);

// KoboldCpp's reply clamp: min_remain = min(ctx - 4, 16); a max_length at or above
// ctx - min_remain becomes ctx - min_remain. The result may still leave no room for a prompt
// when ctx is below 5 (see reply_fits).
int clamp_max_length(int max_length, int ctx);
// Whether a reply of max_length tokens leaves at least one prompt token (BOS) in ctx.
inline bool reply_fits(int max_length, int ctx) { return max_length >= 1 && max_length < ctx; }

// Cuts tokens from the front of `ids` so that at most `room` (>= 1) remain; a leading BOS stays
// in front. Returns how many tokens were cut.
int cut_front(std::vector<int>& ids, int room, int bos);

// A chat prompt fitted into `room` tokens.
struct ChatFit {
  std::vector<int> ids;      // BOS + the rendered messages that were kept
  int full_tokens = 0;       // what the whole conversation would have taken
  int messages_dropped = 0;  // oldest non-system messages left out
  int tokens_cut = 0;        // full_tokens - ids.size(): dropped messages plus any front cut
};
// Renders msgs in the Metharme format (render_messages) with BOS. While it does not fit, the
// oldest non-system message goes (a window never starts at a model reply, and the last message
// always stays); if system messages and the last message alone are too long, the front of
// the tokens is cut.
ChatFit fit_chat(const Tokenizer& tok, const std::vector<Message>& msgs, bool open_model_turn, int room);

}  // namespace metharme::serve
