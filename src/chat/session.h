// A Metharme chat: a conversation, the sliding context window over it, and a KV cache that is
// reused across turns (only new tokens are evaluated; dropped turns are shifted out).
#pragma once

#include <string>
#include <vector>

#include "chat/conversation.h"
#include "chat/generate.h"
#include "chat/kv_context.h"
#include "tokenizer/tokenizer.h"

namespace metharme {

struct ChatPrompt {
  std::vector<int> ids;       // BOS + header + messages[first..] + "<|model|>"
  size_t first_message = 0;   // messages before this one are outside the window
};

struct ChatReply : GenerateResult {
  size_t first_message = 0;  // the window this reply was written with
};

class ChatSession {
 public:
  ChatSession(LlamaRuntime& rt, const Tokenizer& tok, int seq = 0);

  Conversation& conversation() { return conv_; }
  const Conversation& conversation() const { return conv_; }
  KvContext& kv() { return kv_; }

  // The prompt for the next model turn, leaving reply_budget tokens of the context free.
  // The header (system prompt and memory) always stays; the oldest whole turns are dropped
  // until the rest fits, never the last message. Throws Error if even that does not fit.
  ChatPrompt build_prompt(int reply_budget) const;

  // Adds the user's message and the model's reply (streamed to on_text) to the conversation.
  // If the prompt cannot be built the message is not added.
  ChatReply say(const std::string& user_text, const GenerateOptions& opt, const TextSink& on_text);
  // Writes a model turn after the conversation as it stands (its last message is the user's).
  ChatReply respond(const GenerateOptions& opt, const TextSink& on_text);
  // Removes the last model reply and writes a new one (/retry).
  ChatReply retry(const GenerateOptions& opt, const TextSink& on_text);
  // Removes the last user message and everything after it (/undo); false if there is none.
  bool undo();

 private:
  std::vector<int> encode_prompt(size_t first) const;
  ChatReply write_reply(const ChatPrompt& p, const GenerateOptions& opt, const TextSink& on_text);
  LlamaRuntime* rt_;
  const Tokenizer* tok_;
  Conversation conv_;
  KvContext kv_;
};

}  // namespace metharme
