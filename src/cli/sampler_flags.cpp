#include "cli/sampler_flags.h"

#include <chrono>
#include <fstream>
#include <iterator>
#include <sstream>

#include "chat/dry_breakers.h"
#include "grammar/gbnf.h"
#include "util/error.h"

namespace metharme::cli {

namespace {
int parse_id(const std::string& s, const char* flag) {
  size_t used = 0;
  int v = -1;
  try {
    v = std::stoi(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != s.size()) fail(flag, ": '", s, "' is not a token id");
  return v;
}
}  // namespace

SamplerParams kobold_lite_defaults() {
  SamplerParams p;
  p.temperature = 0.7f;
  p.top_k = 100;
  p.top_p = 0.92f;
  p.rep_pen = 1.07f;
  p.rep_pen_range = 360;
  p.rep_pen_slope = 0.7f;
  return p;
}

namespace {
// A flag holding one value, its default shown in --help, under `group`.
template <class T>
void add_value(CLI::App& app, const char* name, T& v, const char* help, const std::string& group) {
  app.add_option(name, v, help)->capture_default_str()->group(group);
}

// KoboldCpp's samplers beside sampler_order, under their KoboldCpp field names.
void add_extra_flags(CLI::App& app, SamplerFlags& f) {
  SamplerParams& p = f.params;
  const std::string g = "Sampling: KoboldCpp's other samplers";
  add_value(app, "--mirostat", p.mirostat, "Mirostat 1 or 2 (replaces the sampler order; 0 = off)", g);
  add_value(app, "--mirostat-tau", p.mirostat_tau, "Mirostat's target surprise, bits", g);
  add_value(app, "--mirostat-eta", p.mirostat_eta, "Mirostat's learning rate", g);
  add_value(app, "--dry-multiplier", p.dry_multiplier, "DRY penalty scale; 0 = off", g);
  add_value(app, "--dry-base", p.dry_base, "DRY growth per repeated token", g);
  add_value(app, "--dry-allowed-length", p.dry_allowed_length, "Repeats this long go unpenalized", g);
  add_value(app, "--dry-penalty-last-n", p.dry_penalty_last_n, "Tokens of context DRY looks at; 0 = all", g);
  app.add_option("--dry-breaker", f.dry_breakers,
                 "DRY sequence breaker (repeatable; replaces the default \\n : \" *; \"\" for none)")
      ->group(g);
  add_value(app, "--xtc-threshold", p.xtc_threshold, "XTC: tokens at least this likely may be excluded", g);
  add_value(app, "--xtc-probability", p.xtc_probability, "XTC: chance per token; 0 = off", g);
  add_value(app, "--dynatemp-range", p.dynatemp_range, "Dynamic temperature: temp +- this by entropy; 0 = off", g);
  add_value(app, "--dynatemp-exponent", p.dynatemp_exponent, "Dynamic temperature exponent", g);
  add_value(app, "--smoothing-factor", p.smoothing_factor, "Quadratic smoothing; 0 = off", g);
  add_value(app, "--smoothing-curve", p.smoothing_curve, "Smoothing curve (1 = quadratic)", g);
  add_value(app, "--nsigma", p.nsigma, "Top-n-sigma: drop logits below max - n*sd; 0 = off", g);
}

// A GBNF grammar given by `flag` (its text, or for --grammar-file the file's), errors naming it.
std::shared_ptr<const grammar::Grammar> parse_grammar_flag(const std::string& text, const std::string& flag) {
  try {
    return grammar::parse_gbnf(text);
  } catch (const Error& e) {
    fail(flag, ": ", e.what());
  }
}
}  // namespace

std::shared_ptr<SamplerFlags> add_sampler_flags(CLI::App& app, const SamplerParams& defaults) {
  auto f = std::make_shared<SamplerFlags>();
  SamplerParams& p = f->params;
  p = defaults;
  const std::string g = "Sampling (KoboldAI semantics)";
  add_value(app, "--temp", p.temperature, "Temperature; 0 = greedy", g);
  add_value(app, "--top-k", p.top_k, "Keep the K most likely tokens; 0 = off", g);
  add_value(app, "--top-a", p.top_a, "Drop tokens with p < A * p_max^2; 0 = off", g);
  add_value(app, "--top-p", p.top_p, "Keep the most likely tokens up to this mass; 1 = off", g);
  add_value(app, "--min-p", p.min_p, "Drop tokens with p < MIN_P * p_max; 0 = off", g);
  add_value(app, "--typical", p.typical, "Typical sampling mass; 1 = off", g);
  add_value(app, "--tfs", p.tfs, "Tail-free sampling z; 1 = off", g);
  add_value(app, "--rep-pen", p.rep_pen, "Repetition penalty; 1 = off", g);
  add_value(app, "--rep-pen-range", p.rep_pen_range, "Tokens of context penalized (below 1: 1, as KoboldCpp)", g);
  add_value(app, "--rep-pen-slope", p.rep_pen_slope, "Older half of the range gets 1+(rep_pen-1)*slope", g);
  add_value(app, "--presence-penalty", p.presence_penalty, "Subtracted from every token in the range", g);
  add_value(app, "--sampler-order", f->order,
            "Sampler ids in order: 0 top-k, 1 top-a, 2 top-p/min-p, 3 tfs, 4 typical, 5 temp, 6 rep-pen", g);
  app.add_option("--ban", f->bans, "Token id(s) never sampled (repeat or comma-separate)")->group(g);
  app.add_flag("--ban-eos", p.ban_eos, "Never sample end-of-sequence")->group(g);
  app.add_option("--logit-bias", f->biases, "ID:BIAS added to a token's logit (repeatable)")->group(g);
  app.add_option("--stop", f->stops, "Stop when the text contains this string (repeatable; not printed)")->group(g);
  app.add_option("--seed", p.seed, "Random seed (default: from the clock)")
      ->each([f](const std::string&) { f->seed_set = true; })
      ->group(g);
  add_extra_flags(app, *f);
  // Structured output: the reply must match a GBNF grammar (llama.cpp syntax).
  app.add_option("--grammar", f->grammar, "GBNF grammar the output must match")->group(g);
  app.add_option("--grammar-file", f->grammar_file, "File holding a GBNF grammar the output must match")->group(g);
  return f;
}

SamplerParams SamplerFlags::resolve(int n_vocab, const Tokenizer& tok, int n_ctx) {
  SamplerParams p = params;
  p.n_ctx = n_ctx;
  if (dry_breakers.size() > 24) fail("--dry-breaker: at most 24 breakers");
  if (p.dry_multiplier > 0) p.dry_breakers = dry_breakers_for(tok, dry_breakers);
  p.sampler_order = parse_sampler_order(order);
  p.banned_tokens.clear();
  for (const std::string& b : bans) {
    std::stringstream ss(b);
    std::string item;
    while (std::getline(ss, item, ','))
      if (!item.empty()) p.banned_tokens.push_back(parse_id(item, "--ban"));
  }
  p.logit_bias.clear();
  for (const std::string& b : biases) {
    size_t colon = b.find(':');
    if (colon == std::string::npos) fail("--logit-bias: expected ID:BIAS, got '", b, "'");
    float bias = 0;
    try {
      size_t used = 0;
      bias = std::stof(b.substr(colon + 1), &used);
      if (used != b.size() - colon - 1) throw std::invalid_argument("trailing");
    } catch (const std::exception&) {
      fail("--logit-bias: '", b.substr(colon + 1), "' is not a number");
    }
    p.logit_bias.emplace_back(parse_id(b.substr(0, colon), "--logit-bias"), bias);
  }
  if (!grammar.empty() && !grammar_file.empty()) fail("--grammar and --grammar-file: give one of them");
  if (!grammar_file.empty()) {
    std::ifstream in(grammar_file, std::ios::binary);
    if (!in) fail("--grammar-file: cannot read ", grammar_file);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    p.grammar = parse_grammar_flag(text, "--grammar-file " + grammar_file);
  } else if (!grammar.empty()) {
    p.grammar = parse_grammar_flag(grammar, "--grammar");
  }
  if (!seed_set) p.seed = uint64_t(std::chrono::system_clock::now().time_since_epoch().count()) % 1000000007u;
  std::string err = sampler_params_error(p, n_vocab);
  if (!err.empty()) fail("sampler: ", err);
  return p;
}

}  // namespace metharme::cli
