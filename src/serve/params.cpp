#include "serve/params.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <random>
#include <string_view>

#include "util/error.h"

namespace metharme::serve {

namespace {

std::string num(double v) { return cat(v); }

bool is_int_value(const json& v) {
  if (v.is_number_integer()) return true;
  if (v.is_number_float()) {
    double d = v.get<double>();
    return std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.2e18;
  }
  return false;
}

int64_t as_int(const json& v) {
  if (v.is_number_unsigned()) return int64_t(std::min<uint64_t>(v.get<uint64_t>(), uint64_t(INT64_MAX)));
  if (v.is_number_integer()) return v.get<int64_t>();
  return int64_t(v.get<double>());
}

char lower(char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; }

}  // namespace

std::string FieldErrors::first() const {
  if (fields.empty()) return "";
  const auto& [f, msgs] = *fields.begin();
  return f + ": " + (msgs.empty() ? std::string("invalid") : msgs[0]);
}

json FieldErrors::to_json() const {
  json j = json::object();
  for (const auto& [f, msgs] : fields) j[f] = msgs;
  return j;
}

const json* FieldReader::raw(const char* name) const {
  auto it = body_->find(name);
  if (it == body_->end() || it->is_null()) return nullptr;
  return &*it;
}

bool FieldReader::has(const char* name) const { return raw(name) != nullptr; }

std::optional<int64_t> FieldReader::integer(const char* name, int64_t lo, int64_t hi) {
  const json* v = raw(name);
  if (!v) return std::nullopt;
  if (!is_int_value(*v)) {
    errs_->add(name, "Not a valid integer.");
    return std::nullopt;
  }
  int64_t x = as_int(*v);
  if (x < lo || x > hi) {
    if (hi == INT64_MAX)
      errs_->add(name, cat("Must be greater than or equal to ", lo, "."));
    else
      errs_->add(name, cat("Must be greater than or equal to ", lo, " and less than or equal to ", hi, "."));
    return std::nullopt;
  }
  return x;
}

std::optional<uint64_t> FieldReader::uint64(const char* name) {
  const json* v = raw(name);
  if (!v) return std::nullopt;
  if (v->is_number_unsigned()) return v->get<uint64_t>();
  if (!is_int_value(*v)) {
    errs_->add(name, "Not a valid integer.");
    return std::nullopt;
  }
  errs_->add(name, "Must be greater than or equal to 0 and less than or equal to 18446744073709551615.");
  return std::nullopt;
}

std::optional<double> FieldReader::number(const char* name, double lo, double hi, bool lo_open) {
  const json* v = raw(name);
  if (!v) return std::nullopt;
  if (!v->is_number()) {
    errs_->add(name, "Not a valid number.");
    return std::nullopt;
  }
  double x = v->get<double>();
  bool ok = std::isfinite(x) && (lo_open ? x > lo : x >= lo) && x <= hi;
  if (!ok) {
    std::string lo_s = lo_open ? "greater than " : "greater than or equal to ";
    if (std::isinf(hi))
      errs_->add(name, "Must be " + lo_s + num(lo) + ".");
    else
      errs_->add(name, "Must be " + lo_s + num(lo) + " and less than or equal to " + num(hi) + ".");
    return std::nullopt;
  }
  return x;
}

std::optional<bool> FieldReader::boolean(const char* name) {
  const json* v = raw(name);
  if (!v) return std::nullopt;
  if (v->is_boolean()) return v->get<bool>();
  if (is_int_value(*v) && (as_int(*v) == 0 || as_int(*v) == 1)) return as_int(*v) == 1;
  errs_->add(name, "Not a valid boolean.");
  return std::nullopt;
}

std::optional<std::string> FieldReader::string(const char* name, size_t max_len) {
  const json* v = raw(name);
  if (!v) return std::nullopt;
  if (!v->is_string()) {
    errs_->add(name, "Not a valid string.");
    return std::nullopt;
  }
  std::string s = v->get<std::string>();
  if (s.size() > max_len) {
    errs_->add(name, cat("Longer than maximum length ", max_len, "."));
    return std::nullopt;
  }
  return s;
}

std::optional<std::vector<std::string>> FieldReader::strings(const char* name, size_t max_items, bool single_ok) {
  const json* v = raw(name);
  if (!v) return std::nullopt;
  if (single_ok && v->is_string()) return std::vector<std::string>{v->get<std::string>()};
  if (!v->is_array()) {
    errs_->add(name, "Not a valid list.");
    return std::nullopt;
  }
  if (v->size() > max_items) {
    errs_->add(name, cat("At most ", max_items, " items are allowed."));
    return std::nullopt;
  }
  std::vector<std::string> out;
  for (const auto& e : *v) {
    if (!e.is_string()) {
      errs_->add(name, "Not a valid string.");
      return std::nullopt;
    }
    out.push_back(e.get<std::string>());
  }
  return out;
}

std::optional<std::vector<int64_t>> FieldReader::integers(const char* name, size_t max_items) {
  const json* v = raw(name);
  if (!v) return std::nullopt;
  if (!v->is_array()) {
    errs_->add(name, "Not a valid list.");
    return std::nullopt;
  }
  if (v->size() > max_items) {
    errs_->add(name, cat("At most ", max_items, " items are allowed."));
    return std::nullopt;
  }
  std::vector<int64_t> out;
  for (const auto& e : *v) {
    if (!is_int_value(e)) {
      errs_->add(name, "Not a valid integer.");
      return std::nullopt;
    }
    out.push_back(as_int(e));
  }
  return out;
}

uint64_t random_seed() {
  static std::atomic<uint64_t> counter{0};
  uint64_t t = uint64_t(std::chrono::high_resolution_clock::now().time_since_epoch().count());
  std::seed_seq seq{uint32_t(t), uint32_t(t >> 32), uint32_t(counter.fetch_add(1)), uint32_t(std::random_device{}())};
  uint32_t out[2];
  seq.generate(out, out + 2);
  return (uint64_t(out[0]) << 32) | out[1];
}

CommonParams read_common(FieldReader& r, const Tokenizer& tok, int n_vocab) {
  CommonParams c;
  SamplerParams& s = c.sampler;
  // KoboldCpp's defaults (kobold-api.md 2.1): clients such as Lite and SillyTavern expect them.
  s.temperature = 0.7f;
  s.top_k = 100;
  s.top_a = 0;
  s.top_p = 0.92f;
  s.min_p = 0;
  s.typical = 1;
  s.tfs = 1;
  s.rep_pen = 1.0f;
  s.rep_pen_range = 320;
  s.rep_pen_slope = 1.0f;
  s.sampler_order = {6, 0, 1, 3, 4, 2, 5};

  // temperature: KoboldAI United wants > 0; KoboldCpp (and we) read 0 as greedy.
  if (auto v = r.number("temperature", 0, 100)) s.temperature = float(*v);
  if (auto v = r.integer("top_k", 0, INT32_MAX)) s.top_k = int(*v);
  if (auto v = r.number("top_a", 0, INFINITY)) s.top_a = float(*v);
  if (auto v = r.number("top_p", 0, 1)) s.top_p = float(*v);
  if (auto v = r.number("min_p", 0, 1)) s.min_p = float(*v);
  if (auto v = r.number("typical", 0, 1)) s.typical = float(*v);
  if (auto v = r.number("typical_p", 0, 1)) s.typical = float(*v);
  if (auto v = r.number("tfs", 0, 1)) s.tfs = float(*v);
  // Repetition penalty and its aliases: the largest wins (KoboldCpp).
  std::optional<double> pen;
  for (const char* name : {"rep_pen", "repetition_penalty", "repeat_penalty"})
    if (auto v = r.number(name, 1, 100)) pen = std::max(pen.value_or(1.0), *v);
  if (pen) s.rep_pen = float(*pen);
  if (auto v = r.integer("rep_pen_range", 0, INT32_MAX)) s.rep_pen_range = int(*v);
  // presence_penalty (KoboldCpp, OpenAI); OpenAI's frequency_penalty stands in when it is absent.
  if (auto v = r.number("frequency_penalty", -2, 2)) s.presence_penalty = float(*v);
  if (auto v = r.number("presence_penalty", -2, 2)) s.presence_penalty = float(*v);
  if (auto v = r.number("rep_pen_slope", 0, INFINITY)) s.rep_pen_slope = float(*v);
  if (auto v = r.integers("sampler_order", 16)) {
    std::vector<int> order(v->begin(), v->end());
    if (order.size() == 6) order.insert(order.begin(), 6);  // United: rep-pen first when missing
    std::vector<int> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    bool perm = order.size() == 7;
    for (size_t i = 0; perm && i < sorted.size(); ++i) perm = sorted[i] == int(i);
    if (perm)
      s.sampler_order = order;
    else
      r.error("sampler_order", "Must be a permutation of 0..6 (6 items: 6 is put first).");
  }
  // sampler_seed (KoboldAI), seed (OpenAI); -1 or absent: random.
  for (const char* name : {"sampler_seed", "seed"}) {
    const json* v = r.raw(name);
    if (!v) continue;
    if (is_int_value(*v) && as_int(*v) == -1) continue;
    if (auto x = r.uint64(name)) {
      s.seed = *x;
      c.seed_given = true;
    }
  }
  if (!c.seed_given) s.seed = random_seed();

  if (auto v = r.strings("stop_sequence", 32)) c.stop = *v;
  if (auto v = r.strings("stop", 32, true)) c.stop.insert(c.stop.end(), v->begin(), v->end());
  if (auto v = r.strings("stopping_strings", 32)) c.stop.insert(c.stop.end(), v->begin(), v->end());
  if (auto v = r.boolean("trim_stop")) c.trim_stop = *v;

  // use_default_badwordsids bans EOS (KoboldCpp's reading) unless ban_eos_token says otherwise.
  if (auto v = r.boolean("use_default_badwordsids")) c.ban_eos = *v;
  if (auto v = r.boolean("ban_eos_token")) c.ban_eos = *v;
  if (auto v = r.boolean("bypass_eos")) c.bypass_eos = *v;
  if (r.boolean("ignore_eos").value_or(false)) c.ban_eos = true;  // llama.cpp's name (SillyTavern sends it)
  s.ban_eos = c.ban_eos && !c.bypass_eos;

  // banned_tokens / banned_strings: one character that is one token bans every token holding
  // it; anything longer is a phrase the output may not contain.
  std::vector<std::string> bans;
  for (const char* name : {"banned_tokens", "banned_strings"})
    if (auto v = r.strings(name, 48)) bans.insert(bans.end(), v->begin(), v->end());
  for (std::string b : bans) {
    if (b.empty()) continue;
    for (char& ch : b) ch = lower(ch);
    size_t chars = 0;
    for (char ch : b) chars += (uint8_t(ch) & 0xC0) != 0x80;
    if (chars == 1) {
      for (int id = 0; id < tok.vocab_size(); ++id) {
        std::string t = tok.piece_text(id);
        for (char& ch : t) ch = lower(ch);
        if (t.find(b) != std::string::npos) s.banned_tokens.push_back(id);
      }
    } else {
      c.banned_phrases.push_back(b);
    }
  }
  if (auto v = r.string("custom_token_bans", 1 << 16)) {
    size_t i = 0;
    while (i < v->size()) {
      size_t j = v->find(',', i);
      if (j == std::string::npos) j = v->size();
      std::string item = v->substr(i, j - i);
      item.erase(0, item.find_first_not_of(" \t"));
      item.erase(item.find_last_not_of(" \t") + 1);
      if (!item.empty()) {
        char* end = nullptr;
        long id = std::strtol(item.c_str(), &end, 10);
        if (*end != '\0' || id < 0 || id >= n_vocab)
          r.error("custom_token_bans", cat("Not a token id: '", item, "'."));
        else
          s.banned_tokens.push_back(int(id));
      }
      i = j + 1;
    }
  }
  if (const json* lb = r.raw("logit_bias")) {
    if (!lb->is_object() || lb->size() > 1024) {
      r.error("logit_bias", "Must be an object {token id: bias} of at most 1024 entries.");
    } else {
      for (auto it = lb->begin(); it != lb->end(); ++it) {
        char* end = nullptr;
        long id = std::strtol(it.key().c_str(), &end, 10);
        if (it.key().empty() || *end != '\0' || id < 0 || id >= n_vocab || !it.value().is_number()) {
          r.error("logit_bias", cat("'", it.key(), "' is not a token id with a numeric bias."));
          break;
        }
        float b = std::clamp(it.value().get<float>(), -100.0f, 100.0f);
        if (b <= -100.0f)
          s.banned_tokens.push_back(int(id));
        else
          s.logit_bias.push_back({int(id), b});
      }
    }
  }
  read_extra_samplers(r, tok, c);
  if (auto g = r.string("grammar"); g && !g->empty()) r.error("grammar", "grammar is not supported by this server.");
  if (auto v = r.string("genkey", 128)) c.genkey = *v;
  if (auto v = r.boolean("quiet")) c.quiet = *v;
  if (std::string bad = sampler_params_error(s, n_vocab); !bad.empty() && r.ok()) r.error("sampler", bad);
  return c;
}

KoboldParams read_kobold(const json& body, const Tokenizer& tok, int n_vocab, int server_ctx, int default_max_length,
                         FieldErrors& errs) {
  KoboldParams p;
  p.max_length = default_max_length;
  if (!body.is_object()) {
    errs.add("_schema", "Invalid input type: the body must be a JSON object.");
    return p;
  }
  FieldReader r(body, errs);
  if (auto v = r.string("prompt"))
    p.prompt = *v;
  else if (!r.has("prompt"))
    errs.add("prompt", "Missing data for required field.");
  if (auto v = r.string("memory")) p.memory = *v;
  p.max_context_length = server_ctx;
  // Larger contexts than the server's are clamped (clients often ask for 4096 or more).
  if (auto v = r.integer("max_context_length", 1, INT32_MAX)) p.max_context_length = std::min(int(*v), server_ctx);
  if (auto v = r.integer("max_length", 1, INT32_MAX)) p.max_length = int(*v);
  if (auto v = r.integer("n", 1, 5)) p.n = int(*v);
  p.common = read_common(r, tok, n_vocab);
  p.common.sampler.n_ctx = p.max_context_length;  // KoboldCpp bounds the rep-pen and DRY windows by it

  // Output formatting (United): off unless disable_output_formatting is false.
  bool fmt = !r.boolean("disable_output_formatting").value_or(true);
  p.singleline = r.boolean("singleline").value_or(false);
  p.trim_incomplete = r.boolean("frmttriminc").value_or(false) && fmt;
  p.remove_blank_lines = r.boolean("frmtrmblln").value_or(false) && fmt;
  p.remove_special = r.boolean("frmtrmspch").value_or(false) && fmt;
  // Accepted for compatibility; they select GUI state this server does not have.
  for (const char* name : {"disable_input_formatting", "frmtadsnsp", "use_story", "use_memory", "use_authors_note",
                           "use_world_info", "use_userscripts", "sampler_full_determinism"})
    r.boolean(name);
  if (auto v = r.string("soft_prompt")) {
    if (v->find('/') != std::string::npos || v->find('\\') != std::string::npos)
      errs.add("soft_prompt", "Must not contain slashes.");
    else if (!v->empty())
      errs.add("soft_prompt", "Soft prompts are not supported by this server.");
  }
  if (p.singleline) p.common.stop.push_back("\n"), p.common.trim_stop = true;
  return p;
}

std::string token_overflow_message(const KoboldParams& p) {
  return cat("max_length (", p.max_length, ") must be less than max_context_length (", p.max_context_length,
             "): that leaves no room for the prompt.");
}

std::vector<int> kobold_prompt_ids(const KoboldParams& p, const Tokenizer& tok) {
  const int ctx = p.max_context_length;
  MH_CHECK(p.max_length < ctx, token_overflow_message(p));
  const int room = ctx - p.max_length;  // tokens the prompt may use, BOS included
  std::vector<int> ids;
  if (!p.memory.empty()) {
    std::vector<int> mem = tok.encode(p.memory, true);
    // Memory stays whole unless it alone leaves fewer than 4 prompt tokens; then its front goes.
    int mem_room = std::max(1, room - 4);
    if (int(mem.size()) > mem_room) {
      std::vector<int> kept{mem[0]};
      kept.insert(kept.end(), mem.end() - (mem_room - 1), mem.end());
      mem.swap(kept);
    }
    std::vector<int> body = tok.encode(p.prompt, false);
    int body_room = room - int(mem.size());
    ids = mem;
    size_t from = body.size() > size_t(body_room) ? body.size() - size_t(body_room) : 0;
    ids.insert(ids.end(), body.begin() + ptrdiff_t(from), body.end());
  } else {
    ids = tok.encode(p.prompt, true);
    if (int(ids.size()) > room) {
      std::vector<int> kept{ids[0]};
      kept.insert(kept.end(), ids.end() - (room - 1), ids.end());
      ids.swap(kept);
    }
  }
  return ids;
}

std::string format_output(const KoboldParams& p, std::string text) {
  if (p.remove_special) {
    std::string out;
    for (char ch : text)
      if (std::string_view("#/@%<>{}+=~|^").find(ch) == std::string_view::npos) out.push_back(ch);
    text.swap(out);
  }
  if (p.remove_blank_lines) {
    std::string out;
    for (char ch : text)
      if (!(ch == '\n' && !out.empty() && out.back() == '\n')) out.push_back(ch);
    text.swap(out);
  }
  if (p.trim_incomplete) {
    // Keep text up to the last sentence end (. ! ?), with any closing quotes or brackets.
    size_t end = text.find_last_of(".!?");
    if (end != std::string::npos) {
      ++end;
      while (end < text.size() && std::string_view("\"')*]").find(text[end]) != std::string_view::npos) ++end;
      text.resize(end);
    }
  }
  return text;
}

GenSpec make_spec(const CommonParams& c, int max_new, const std::string& client) {
  GenSpec g;
  g.max_new = max_new;
  g.sampler = c.sampler;
  g.stop = c.stop;
  g.trim_stop = c.trim_stop;
  g.stop_at_eos = !c.bypass_eos;
  g.banned_phrases = c.banned_phrases;
  g.genkey = c.genkey;
  g.client = client;
  g.quiet = c.quiet;
  g.min_tokens = c.min_tokens;
  return g;
}

std::vector<GenSpec> make_specs(const CommonParams& c, int max_new, const std::string& client,
                                const std::vector<int>& prompt, int n, bool context_shift) {
  std::vector<GenSpec> specs;
  for (int i = 0; i < n; ++i) {
    GenSpec g = make_spec(c, max_new, client);
    g.prompt = prompt;
    if (!c.add_bos && !g.prompt.empty() && g.prompt[0] == c.bos_id) g.prompt.erase(g.prompt.begin());
    g.sampler.seed += uint64_t(i);
    g.context_shift = context_shift;
    specs.push_back(std::move(g));
  }
  return specs;
}

}  // namespace metharme::serve
