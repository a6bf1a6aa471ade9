#include "eval/checkpoint.h"

#include <filesystem>

#include "util/error.h"
#include "util/fs.h"

namespace metharme::eval {

namespace {
constexpr int kVersion = 1;

uint64_t fnv1a(const void* data, size_t n, uint64_t h = 1469598103934665603ull) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}
}  // namespace

std::string checkpoint_key(const EvalSet& s, const std::vector<std::string>& models, const std::string& base,
                           const std::string& q4_act) {
  uint64_t h = fnv1a(s.tokens.data(), s.tokens.size() * sizeof(int32_t));
  std::string k = cat(protocol_name(s.protocol), " window=", s.window, " first=", s.first_scored,
                      " bos_each=", s.bos_each_window, " tokens=", s.tokens.size(), " hash=", std::hex, h, std::dec,
                      " q4_act=", q4_act, " base=", base);
  for (const std::string& m : models) k += " model=" + m;
  return k;
}

nlohmann::json scores_to_json(const ModelScores& s) {
  return {{"window_nll", s.window_nll}, {"sum_nll", s.sum_nll}, {"sum_nll2", s.sum_nll2}, {"scored", s.scored},
          {"tokens", s.tokens},         {"kld", s.kld},         {"top1_same", s.top1_same}, {"seconds", s.seconds}};
}

ModelScores scores_from_json(const nlohmann::json& j, const std::string& origin) {
  ModelScores s;
  try {
    s.window_nll = j.at("window_nll").get<std::vector<double>>();
    s.sum_nll = j.at("sum_nll").get<double>();
    s.sum_nll2 = j.at("sum_nll2").get<double>();
    s.scored = j.at("scored").get<int64_t>();
    s.tokens = j.at("tokens").get<int64_t>();
    s.kld = j.at("kld").get<std::vector<float>>();
    s.top1_same = j.at("top1_same").get<int64_t>();
    s.seconds = j.at("seconds").get<double>();
  } catch (const nlohmann::json::exception& e) {
    fail(origin, ": malformed checkpoint entry (", e.what(), ")");
  }
  return s;
}

EvalCheckpoint::EvalCheckpoint(std::string path) : path_(std::move(path)) {
  if (path_.empty() || !std::filesystem::exists(path_)) return;
  nlohmann::json j = nlohmann::json::parse(read_text_file(path_), nullptr, false);
  MH_CHECK(!j.is_discarded() && j.is_object(), path_, ": not a perplexity checkpoint (invalid JSON)");
  MH_CHECK(j.value("version", 0) == kVersion && j.contains("runs") && j["runs"].is_object(), path_,
           ": not a perplexity checkpoint of this version");
  state_ = std::move(j["runs"]);
}

std::optional<EvalResult> EvalCheckpoint::find(const std::string& key, size_t n_models, bool with_base) const {
  if (!state_.contains(key)) return std::nullopt;
  const auto& e = state_[key];
  std::string origin = cat(path_, ": run \"", key, "\"");
  MH_CHECK(e.contains("models") && e["models"].is_array() && e["models"].size() == n_models, origin,
           ": wrong number of models");
  EvalResult r;
  for (const auto& m : e["models"]) r.models.push_back(scores_from_json(m, origin));
  if (with_base) {
    MH_CHECK(e.contains("base"), origin, ": no base scores");
    r.base = scores_from_json(e["base"], origin);
  }
  size_t done = r.models[0].window_nll.size();
  for (const ModelScores& m : r.models) MH_CHECK(m.window_nll.size() == done, origin, ": inconsistent window counts");
  if (with_base) MH_CHECK(r.base.window_nll.size() == done, origin, ": inconsistent window counts");
  return r;
}

void EvalCheckpoint::save(const std::string& key, const EvalResult& r, int windows_total) {
  if (!enabled()) return;
  nlohmann::json e;
  e["models"] = nlohmann::json::array();
  for (const ModelScores& m : r.models) e["models"].push_back(scores_to_json(m));
  if (!r.base.window_nll.empty()) e["base"] = scores_to_json(r.base);
  e["windows_done"] = r.models.empty() ? 0 : r.models[0].window_nll.size();
  e["windows_total"] = windows_total;
  state_[key] = std::move(e);
  nlohmann::json out = {{"version", kVersion}, {"runs", state_}};
  write_file_atomic(path_, out.dump());
}

}  // namespace metharme::eval
