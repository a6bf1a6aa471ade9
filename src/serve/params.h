// Request bodies to generation specs: typed field reading with KoboldAI-style validation errors,
// the KoboldAI United / KoboldCpp generate fields, and the prompt trimming rules
// (../shared/docs/kobold-api.md sections 1.2, 2.1).
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "sampling/sampler.h"
#include "serve/job.h"
#include "tokenizer/tokenizer.h"

namespace metharme::serve {

using json = nlohmann::json;

// Validation failures by field, as KoboldAI reports them: {"field": ["message", ...]}.
struct FieldErrors {
  std::map<std::string, std::vector<std::string>> fields;
  void add(const std::string& field, const std::string& msg) { fields[field].push_back(msg); }
  bool empty() const { return fields.empty(); }
  std::string first() const;  // "field: message", for one-line errors
  json to_json() const;
};

// Reads optional typed fields from a JSON object; a wrong type or range is recorded in `errs` and
// read as absent. JSON null counts as absent. Unknown fields are never looked at.
class FieldReader {
 public:
  FieldReader(const json& body, FieldErrors& errs) : body_(&body), errs_(&errs) {}
  bool has(const char* name) const;
  std::optional<int64_t> integer(const char* name, int64_t lo, int64_t hi);
  std::optional<uint64_t> uint64(const char* name);
  // Bounds are inclusive unless lo_open (value must exceed lo).
  std::optional<double> number(const char* name, double lo, double hi, bool lo_open = false);
  std::optional<bool> boolean(const char* name);
  std::optional<std::string> string(const char* name, size_t max_len = std::string::npos);
  // A list of strings (a single string is accepted as a list of one when `single_ok`).
  std::optional<std::vector<std::string>> strings(const char* name, size_t max_items, bool single_ok = false);
  std::optional<std::vector<int64_t>> integers(const char* name, size_t max_items);
  const json* raw(const char* name) const;  // the value, or null if absent/null
  void error(const char* name, const std::string& msg) { errs_->add(name, msg); }
  bool ok() const { return errs_->empty(); }

 private:
  const json* body_;
  FieldErrors* errs_;
};

// The fields shared by every generating endpoint (Kobold names; OpenAI aliases handled too).
struct CommonParams {
  SamplerParams sampler;
  bool seed_given = false;
  std::vector<std::string> stop;
  bool trim_stop = false;
  bool ban_eos = false, bypass_eos = false;
  std::vector<std::string> banned_phrases;           // banned_tokens of more than one character
  std::string genkey;
  bool quiet = false;
  int min_tokens = 0;  // EOS and stop strings have no effect before this many tokens
  bool add_bos = true;  // false: the prompt goes without its BOS
  int bos_id = 1;
};
constexpr size_t kMaxDryBreakers = 24;  // KoboldCpp's dry_seq_break_max
// The samplers beside sampler_order (Mirostat, DRY, XTC, dynamic temperature, smoothing,
// top-n-sigma) and min_tokens, add_bos_token; part of read_common.
void read_extra_samplers(FieldReader& r, const Tokenizer& tok, CommonParams& c);
// Reads sampler settings, stop strings, bans and biases. Omitted samplers take KoboldCpp's
// defaults, for the OpenAI endpoints too (as KoboldCpp does).
CommonParams read_common(FieldReader& r, const Tokenizer& tok, int n_vocab);

// POST /api/v1/generate (and /api/extra/generate/stream).
struct KoboldParams {
  std::string prompt, memory;
  int max_context_length = 0;  // after clamping to the server's context
  int max_length = 180;
  int n = 1;
  bool singleline = false;
  bool trim_incomplete = false, remove_blank_lines = false, remove_special = false;  // output formatting
  CommonParams common;
};
KoboldParams read_kobold(const json& body, const Tokenizer& tok, int n_vocab, int server_ctx, int default_max_length,
                         FieldErrors& errs);

// The message of the token_overflow error (max_length >= max_context_length).
std::string token_overflow_message(const KoboldParams& p);
// The prompt tokens per KoboldCpp: memory (with BOS) pinned at the front, the prompt's front
// trimmed so that prompt + max_length fits max_context_length. Needs max_length below it.
std::vector<int> kobold_prompt_ids(const KoboldParams& p, const Tokenizer& tok);
// KoboldAI United's output formatting options applied to a finished text.
std::string format_output(const KoboldParams& p, std::string text);

// GenSpec with everything but the prompt filled from common params.
GenSpec make_spec(const CommonParams& c, int max_new, const std::string& client);
// n specs for one prompt (a request's `n` choices), the i-th with seed + i.
std::vector<GenSpec> make_specs(const CommonParams& c, int max_new, const std::string& client,
                                const std::vector<int>& prompt, int n, bool context_shift);

// A seed from the clock and a counter, for requests that give none.
uint64_t random_seed();

}  // namespace metharme::serve
