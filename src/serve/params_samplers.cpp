// KoboldCpp's samplers beside sampler_order as request fields (README "Samplers"): Mirostat,
// DRY, XTC, dynamic temperature, smoothing, top-n-sigma, and min_tokens, add_bos_token.
#include <algorithm>
#include <cmath>

#include "chat/dry_breakers.h"
#include "serve/params.h"
#include "util/error.h"

namespace metharme::serve {

namespace {
// dry_sequence_breakers: a list of strings, or that list JSON-encoded in a string (SillyTavern).
void read_dry_breakers(FieldReader& r, const Tokenizer& tok, SamplerParams& s) {
  constexpr const char* kName = "dry_sequence_breakers";
  const json* v = r.raw(kName);
  if (!v) return;
  json list = *v;
  if (v->is_string()) {
    list = json::parse(v->get<std::string>(), nullptr, false);
    if (list.is_discarded() || !list.is_array()) {
      // KoboldCpp drops a string it cannot parse; that only matters while DRY is on.
      if (s.dry_multiplier > 0) r.error(kName, "Not a list of strings, nor a JSON-encoded list of strings.");
      return;
    }
  }
  if (!list.is_array()) return r.error(kName, "Not a valid list.");
  if (list.size() > kMaxDryBreakers) return r.error(kName, cat("At most ", kMaxDryBreakers, " items are allowed."));
  std::vector<std::string> items;
  for (const auto& e : list) {
    if (!e.is_string()) return r.error(kName, "Not a valid string.");
    if (e.get_ref<const std::string&>().size() > 1024) return r.error(kName, "Longer than maximum length 1024.");
    items.push_back(e.get<std::string>());
  }
  if (s.dry_multiplier > 0) s.dry_breakers = dry_breakers_for(tok, items);
}

// Temperature given as a range (SillyTavern's dynatemp_low / dynatemp_high) when dynatemp_range
// is absent: the middle and the half-width, which is what SillyTavern sends KoboldCpp beside them.
void read_dynatemp_bounds(FieldReader& r, SamplerParams& s) {
  auto lo = r.number("dynatemp_low", 0, 100), hi = r.number("dynatemp_high", 0, 100);
  if (!lo || !hi || r.has("dynatemp_range")) return;
  if (*lo > *hi) return r.error("dynatemp_low", "Must be at most dynatemp_high.");
  s.temperature = float((*lo + *hi) / 2);
  s.dynatemp_range = float((*hi - *lo) / 2);
}
}  // namespace

void read_extra_samplers(FieldReader& r, const Tokenizer& tok, CommonParams& c) {
  SamplerParams& s = c.sampler;
  // mirostat (KoboldCpp) and mirostat_mode (its OpenAI name; SillyTavern sends both).
  auto m = r.integer("mirostat", 0, 2), mm = r.integer("mirostat_mode", 0, 2);
  if (m && mm && *m != *mm) r.error("mirostat_mode", "Must equal mirostat when both are given.");
  s.mirostat = int(mm.value_or(m.value_or(0)));
  if (auto v = r.number("mirostat_tau", 0, 100)) s.mirostat_tau = float(*v);
  if (auto v = r.number("mirostat_eta", 0, 100)) s.mirostat_eta = float(*v);
  if (auto v = r.number("dry_multiplier", 0, 1000)) s.dry_multiplier = float(*v);
  if (auto v = r.number("dry_base", 0, 1000, true)) s.dry_base = float(*v);
  if (auto v = r.integer("dry_allowed_length", 0, INT32_MAX)) s.dry_allowed_length = int(*v);
  if (auto v = r.integer("dry_range", INT32_MIN, INT32_MAX)) s.dry_penalty_last_n = int(*v);
  if (auto v = r.integer("dry_penalty_last_n", INT32_MIN, INT32_MAX)) s.dry_penalty_last_n = int(*v);
  read_dry_breakers(r, tok, s);
  if (auto v = r.number("xtc_threshold", 0, 1)) s.xtc_threshold = float(*v);
  if (auto v = r.number("xtc_probability", 0, 1)) s.xtc_probability = float(*v);
  if (auto v = r.number("dynatemp_range", -100, 100)) s.dynatemp_range = float(*v);
  if (auto v = r.number("dynatemp_exponent", -100, 100)) s.dynatemp_exponent = float(*v);
  read_dynatemp_bounds(r, s);
  r.boolean("dynamic_temperature");  // SillyTavern's switch; KoboldCpp reads the range alone
  if (auto v = r.number("smoothing_factor", 0, 1000)) s.smoothing_factor = float(*v);
  if (auto v = r.number("smoothing_curve", -100, 100)) s.smoothing_curve = float(*v);
  // nsigma (KoboldCpp), top_n_sigma (llama.cpp's name, -1 there for off): <= 0 is off.
  if (auto v = r.number("top_n_sigma", -INFINITY, INFINITY)) s.nsigma = std::max(0.0f, float(*v));
  if (auto v = r.number("nsigma", -INFINITY, INFINITY)) s.nsigma = std::max(0.0f, float(*v));
  if (auto v = r.integer("min_tokens", 0, INT32_MAX)) c.min_tokens = int(*v);
  if (auto v = r.boolean("add_bos_token")) c.add_bos = *v;
  c.bos_id = tok.bos();
  // KoboldCpp samplers this server does not have: accepted at their neutral values, refused (not
  // silently ignored) otherwise.
  if (auto v = r.number("adaptive_target", -INFINITY, INFINITY); v && *v > 0)
    r.error("adaptive_target", "adaptive_target is not supported by this server (use -1).");
  r.number("adaptive_decay", -INFINITY, INFINITY);
  auto gs = r.number("guidance_scale", -INFINITY, INFINITY);
  auto np = r.string("negative_prompt");
  if (gs && *gs != 1 && np && !np->empty())
    r.error("guidance_scale", "Classifier-free guidance is not supported by this server (use 1).");
}

}  // namespace metharme::serve
