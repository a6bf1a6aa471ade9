// Structured output and log-probabilities on the APIs: the grammar fields of a request
// (KoboldCpp's `grammar`, OpenAI's `response_format`) and the logprobs objects of the replies.
#pragma once

#include <nlohmann/json.hpp>
#include <vector>

#include "sampling/sampler.h"
#include "serve/params.h"
#include "tokenizer/tokenizer.h"

namespace metharme::serve {

// `grammar`: GBNF text, or (as KoboldCpp) a JSON Schema given as JSON text; "" is no grammar.
// `grammar_retain_state` true is refused. A malformed grammar is an error on "grammar" naming
// its line and column.
void read_grammar(FieldReader& r, SamplerParams& s);
// OpenAI `response_format`: {"type":"text"}, {"type":"json_object"} or
// {"type":"json_schema","json_schema":{"schema":{...}}}; errors on "response_format".
void read_response_format(FieldReader& r, SamplerParams& s);

// OpenAI: chat `logprobs` (bool) with `top_logprobs`, completions `logprobs` (how many
// alternatives; true counts as 0). They report the model's own distribution (kModel).
void read_openai_logprobs(FieldReader& r, SamplerParams& s, bool chat);
// KoboldCpp's `logprobs` (bool, or a number read as one): the distribution the token was drawn
// from, after every sampler (kSampled), with KoboldCpp's 10 alternatives.
constexpr int kKoboldTopLogprobs = 10;
void read_kobold_logprobs(FieldReader& r, SamplerParams& s);

// KoboldCpp's logprobs object (also its /api/extra/last_logprobs): content[], tokens,
// token_ids, token_logprobs, top_logprobs (one {text: logprob} per token) and text_offset.
nlohmann::json kobold_logprobs(const std::vector<StepLogprobs>& steps, const Tokenizer& tok);
// OpenAI completions: tokens, token_logprobs, top_logprobs, text_offset (characters, from
// `offset`, which is advanced past these tokens).
nlohmann::json completion_logprobs(const std::vector<StepLogprobs>& steps, const Tokenizer& tok, size_t& offset);
// OpenAI chat completions: {"content": [{token, logprob, bytes, top_logprobs}], "refusal": null}.
nlohmann::json chat_logprobs(const std::vector<StepLogprobs>& steps, const Tokenizer& tok);

}  // namespace metharme::serve
