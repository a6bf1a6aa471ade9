// Perplexity reports: one results table (text or JSON) naming protocol, window, windows, tokens,
// ppl (and KL-divergence), time and tokens/s, plus a model x dataset comparison table.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "eval/eval_set.h"
#include "eval/kld.h"
#include "eval/perplexity.h"

namespace metharme::eval {

struct ReportModel {
  std::string name;    // short label (folder name)
  std::string path;
  std::string format;  // weight format ("f16", "gptq 4-bit ...")
  bool is_base = false;  // the --kld-base model (its row has no KLD)
};

struct ReportRow {
  size_t model = 0;  // index into Report::models
  size_t set = 0;    // index into Report::sets
  ModelScores scores;
  bool has_kld = false;
  KldSummary kld;
};

struct Report {
  std::vector<ReportModel> models;
  std::vector<const EvalSet*> sets;
  std::string kld_base;  // name of the base model, empty without --kld-base
  std::string q4_act;    // how activations meet 4-bit weights ("q8", "f32"); empty if not reported
  std::vector<ReportRow> rows;
};

std::string window_label(const EvalSet& s);  // "seqlen 2048" or "ctx 512"
std::string format_report(const Report& r);
nlohmann::json report_json(const Report& r);

}  // namespace metharme::eval
