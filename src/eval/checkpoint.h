// Resumable evaluation: after every window the scores so far go to a JSON file (written to a
// temp file and renamed), keyed by everything that determines them; a rerun with the same models,
// tokens and settings continues after the last finished window, and a finished run is reprinted.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "eval/eval_set.h"
#include "eval/perplexity.h"

namespace metharme::eval {

// Identifies an evaluation: models (paths and formats), base, activation mode, protocol, window and
// a hash of the evaluated token ids.
std::string checkpoint_key(const EvalSet& set, const std::vector<std::string>& models, const std::string& base,
                           const std::string& q4_act);

nlohmann::json scores_to_json(const ModelScores& s);
ModelScores scores_from_json(const nlohmann::json& j, const std::string& origin);

class EvalCheckpoint {
 public:
  EvalCheckpoint() = default;
  explicit EvalCheckpoint(std::string path);  // reads the file when it exists
  bool enabled() const { return !path_.empty(); }
  const std::string& path() const { return path_; }

  // The saved result for `key` (n_models models, with a base or not), if any.
  std::optional<EvalResult> find(const std::string& key, size_t n_models, bool with_base) const;
  void save(const std::string& key, const EvalResult& r, int windows_total);

 private:
  std::string path_;
  nlohmann::json state_ = nlohmann::json::object();
};

}  // namespace metharme::eval
