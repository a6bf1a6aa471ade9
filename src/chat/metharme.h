// The Metharme prompt format: role markers directly followed by their text, no separators.
//   [BOS]<|system|>{system}{memory}<|user|>{text}<|model|>{reply}<|user|>{text}<|model|>
// The markers are plain text for the LLaMA tokenizer (several pieces each), so a prompt is
// rendered as one string and tokenized whole, as the model saw it in training; a reply ends when
// the model samples EOS, which is never shown.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace metharme {

enum class Role { kSystem, kUser, kModel };

struct Message {
  Role role;
  std::string text;
  // For a reply generated in this session: the model's own tokens for `text`, reused verbatim
  // in later prompts so the cache matches them (empty: tokenize the text). Not saved.
  std::vector<int> ids = {};
  bool operator==(const Message&) const = default;
};

const char* role_marker(Role r);  // "<|system|>", "<|user|>", "<|model|>"
const char* role_name(Role r);    // "system", "user", "model"
// "system", "user", "model"; also OpenAI's "assistant" for the model.
std::optional<Role> parse_role(std::string_view name);

// Stop strings for Metharme chat: a model that writes a role marker has finished its turn.
std::vector<std::string> metharme_stop_strings();

// The pinned top of a chat: the system turn (omitted when the text is empty), then the memory
// block as raw text (so with a system prompt it reads as part of the system turn).
std::string render_header(std::string_view system, std::string_view memory);

// Messages in order, each as marker + text; `open_model_turn` appends "<|model|>" for the
// model to write next. Serves chat clients that send a message list (OpenAI-style): system
// messages may appear anywhere and render as <|system|> turns where they are.
std::string render_messages(const std::vector<Message>& msgs, bool open_model_turn);

// Tokens of `text` as it continues earlier text: without the dummy-prefix space SentencePiece
// puts in front of every encoded string (what a whole-string encoding would give after an
// unmergeable character).
std::vector<int> encode_continuation(const Tokenizer& tok, std::string_view text);

// The whole prompt text of a conversation: header + messages (+ "<|model|>"). BOS is not text;
// tokenize with it.
std::string render_prompt(std::string_view system, std::string_view memory, const std::vector<Message>& msgs,
                          bool open_model_turn);

}  // namespace metharme
