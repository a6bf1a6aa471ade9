#include "cli/sampler_flags.h"

#include <chrono>
#include <sstream>

#include "chat/dry_breakers.h"
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
// KoboldCpp's samplers beside sampler_order, under their KoboldCpp field names.
void add_extra_flags(CLI::App& app, SamplerFlags& f) {
  SamplerParams& p = f.params;
  const std::string g = "Sampling: KoboldCpp's other samplers";
  auto opt = [&](const char* name, auto& v, const char* help) {
    app.add_option(name, v, help)->capture_default_str()->group(g);
  };
  opt("--mirostat", p.mirostat, "Mirostat 1 or 2 (replaces the sampler order; 0 = off)");
  opt("--mirostat-tau", p.mirostat_tau, "Mirostat's target surprise, bits");
  opt("--mirostat-eta", p.mirostat_eta, "Mirostat's learning rate");
  opt("--dry-multiplier", p.dry_multiplier, "DRY penalty scale; 0 = off");
  opt("--dry-base", p.dry_base, "DRY growth per repeated token");
  opt("--dry-allowed-length", p.dry_allowed_length, "Repeats this long go unpenalized");
  opt("--dry-penalty-last-n", p.dry_penalty_last_n, "Tokens of context DRY looks at; 0 = all");
  app.add_option("--dry-breaker", f.dry_breakers,
                 "DRY sequence breaker (repeatable; replaces the default \\n : \" *; \"\" for none)")
      ->group(g);
  opt("--xtc-threshold", p.xtc_threshold, "XTC: tokens at least this likely may be excluded");
  opt("--xtc-probability", p.xtc_probability, "XTC: chance per token; 0 = off");
  opt("--dynatemp-range", p.dynatemp_range, "Dynamic temperature: temp +- this by entropy; 0 = off");
  opt("--dynatemp-exponent", p.dynatemp_exponent, "Dynamic temperature exponent");
  opt("--smoothing-factor", p.smoothing_factor, "Quadratic smoothing; 0 = off");
  opt("--smoothing-curve", p.smoothing_curve, "Smoothing curve (1 = quadratic)");
  opt("--nsigma", p.nsigma, "Top-n-sigma: drop logits below max - n*sd; 0 = off");
}
}  // namespace

std::shared_ptr<SamplerFlags> add_sampler_flags(CLI::App& app, const SamplerParams& defaults) {
  auto f = std::make_shared<SamplerFlags>();
  SamplerParams& p = f->params;
  p = defaults;
  const std::string g = "Sampling (KoboldAI semantics)";
  app.add_option("--temp", p.temperature, "Temperature; 0 = greedy")->capture_default_str()->group(g);
  app.add_option("--top-k", p.top_k, "Keep the K most likely tokens; 0 = off")->capture_default_str()->group(g);
  app.add_option("--top-a", p.top_a, "Drop tokens with p < A * p_max^2; 0 = off")->capture_default_str()->group(g);
  app.add_option("--top-p", p.top_p, "Keep the most likely tokens up to this mass; 1 = off")
      ->capture_default_str()
      ->group(g);
  app.add_option("--min-p", p.min_p, "Drop tokens with p < MIN_P * p_max; 0 = off")->capture_default_str()->group(g);
  app.add_option("--typical", p.typical, "Typical sampling mass; 1 = off")->capture_default_str()->group(g);
  app.add_option("--tfs", p.tfs, "Tail-free sampling z; 1 = off")->capture_default_str()->group(g);
  app.add_option("--rep-pen", p.rep_pen, "Repetition penalty; 1 = off")->capture_default_str()->group(g);
  app.add_option("--rep-pen-range", p.rep_pen_range, "Tokens of context penalized (below 1: 1, as KoboldCpp)")
      ->capture_default_str()
      ->group(g);
  app.add_option("--rep-pen-slope", p.rep_pen_slope, "Older half of the range gets 1+(rep_pen-1)*slope")
      ->capture_default_str()
      ->group(g);
  app.add_option("--presence-penalty", p.presence_penalty, "Subtracted from every token in the range")
      ->capture_default_str()
      ->group(g);
  app.add_option("--sampler-order", f->order,
                 "Sampler ids in order: 0 top-k, 1 top-a, 2 top-p/min-p, 3 tfs, 4 typical, 5 temp, 6 rep-pen")
      ->capture_default_str()
      ->group(g);
  app.add_option("--ban", f->bans, "Token id(s) never sampled (repeat or comma-separate)")->group(g);
  app.add_flag("--ban-eos", p.ban_eos, "Never sample end-of-sequence")->group(g);
  app.add_option("--logit-bias", f->biases, "ID:BIAS added to a token's logit (repeatable)")->group(g);
  app.add_option("--stop", f->stops, "Stop when the text contains this string (repeatable; not printed)")->group(g);
  app.add_option("--seed", p.seed, "Random seed (default: from the clock)")
      ->each([f](const std::string&) { f->seed_set = true; })
      ->group(g);
  add_extra_flags(app, *f);
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
  if (!seed_set) p.seed = uint64_t(std::chrono::system_clock::now().time_since_epoch().count()) % 1000000007u;
  std::string err = sampler_params_error(p, n_vocab);
  if (!err.empty()) fail("sampler: ", err);
  return p;
}

}  // namespace metharme::cli
