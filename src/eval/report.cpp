#include "eval/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "util/error.h"

namespace metharme::eval {

namespace {

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string fmt_ppl(double v) { return std::isfinite(v) ? fmt("%.4f", v) : "inf"; }
std::string fmt_seconds(double s) { return s >= 100 ? fmt("%.0fs", s) : fmt("%.2fs", s); }

// Left-aligned first column, right-aligned others, two spaces apart.
std::string render(const std::vector<std::vector<std::string>>& t) {
  if (t.empty()) return "";
  std::vector<size_t> width(t[0].size(), 0);
  for (const auto& row : t)
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  std::string out;
  for (const auto& row : t) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      std::string pad(width[c] - row[c].size(), ' ');
      if (c) line += "  ";
      line += c == 0 ? row[c] + pad : pad + row[c];
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

}  // namespace

std::string window_label(const EvalSet& s) {
  return cat(s.protocol == Protocol::kGptq ? "seqlen " : "ctx ", s.window);
}

std::string format_report(const Report& r) {
  std::string out;
  for (const EvalSet* s : r.sets) {
    out += cat(dataset_name(s->dataset), ": ", s->source, " (", s->format, ")\n");
    out += cat("  ", s->text_rule, ": ", s->corpus_tokens, " tokens\n");
    out += cat("  protocol ", protocol_name(s->protocol), ", ", window_label(*s), ": ", s->n_windows(), " of ",
               s->windows_available, " windows, ", s->scored_per_window(), " of ", s->window,
               " positions scored per window", s->protocol == Protocol::kLlamaCpp ? " (second half)" : "", "\n");
  }
  out += "\n";

  const bool kld = !r.kld_base.empty();
  std::vector<std::vector<std::string>> t;
  std::vector<std::string> head = {"model", "format", "dataset", "protocol", "window", "windows", "tokens", "scored",
                                   "ppl", "+/-", "time", "tok/s"};
  if (kld) head.insert(head.end(), {"KLD mean", "median", "p99", "max", "top-1"});
  t.push_back(head);
  for (const ReportRow& row : r.rows) {
    const ReportModel& m = r.models[row.model];
    const EvalSet& s = *r.sets[row.set];
    const ModelScores& sc = row.scores;
    std::vector<std::string> line = {m.name + (m.is_base ? " (base)" : ""), m.format, dataset_name(s.dataset),
                                     protocol_name(s.protocol), window_label(s), std::to_string(s.n_windows()),
                                     std::to_string(sc.tokens), std::to_string(sc.scored), fmt_ppl(sc.ppl()),
                                     fmt_ppl(sc.ppl_stderr()), fmt_seconds(sc.seconds), fmt("%.1f", sc.tokens_per_second())};
    if (kld) {
      if (row.has_kld && m.is_base)
        line.insert(line.end(), {"0 (base)", "-", "-", "-", "-"});
      else if (row.has_kld)
        line.insert(line.end(), {fmt("%.6f", row.kld.mean), fmt("%.6f", row.kld.median), fmt("%.6f", row.kld.p99),
                                 fmt("%.6f", row.kld.max), fmt("%.2f%%", 100 * row.kld.top1_agreement)});
      else
        line.insert(line.end(), {"-", "-", "-", "-", "-"});
    }
    t.push_back(line);
  }
  out += render(t);
  if (kld) out += cat("KLD: KL(base || model) per scored position in nats, base ", r.kld_base, "; top-1: same most likely token\n");
  bool any_q4 = false;
  for (const ReportModel& m : r.models) any_q4 |= m.format.rfind("q4", 0) == 0;
  if (any_q4 && !r.q4_act.empty()) out += cat("4-bit linears ran with ", r.q4_act, " activations (--q4-act)\n");

  // Seed-style comparison: one row per model, one column per dataset.
  if (r.models.size() > 1 || r.sets.size() > 1) {
    std::vector<std::vector<std::string>> c;
    std::vector<std::string> h = {"ppl"};
    for (const EvalSet* s : r.sets)
      h.push_back(cat(dataset_name(s->dataset), " (", protocol_name(s->protocol), " ", window_label(*s), ")"));
    c.push_back(h);
    for (size_t m = 0; m < r.models.size(); ++m) {
      std::vector<std::string> line = {r.models[m].name + (r.models[m].is_base ? " (base)" : "")};
      for (size_t si = 0; si < r.sets.size(); ++si) {
        std::string cell = "-";
        for (const ReportRow& row : r.rows)
          if (row.model == m && row.set == si) {
            cell = fmt_ppl(row.scores.ppl());
            if (row.has_kld && !r.models[m].is_base) cell += cat(" (KLD ", fmt("%.4f", row.kld.mean), ")");
          }
        line.push_back(cell);
      }
      c.push_back(line);
    }
    out += "\n" + render(c);
  }
  return out;
}

nlohmann::json report_json(const Report& r) {
  using nlohmann::json;
  json j;
  j["datasets"] = json::array();
  for (const EvalSet* s : r.sets) {
    j["datasets"].push_back({{"dataset", dataset_name(s->dataset)},
                             {"source", s->source},
                             {"format", s->format},
                             {"text_rule", s->text_rule},
                             {"protocol", protocol_name(s->protocol)},
                             {s->protocol == Protocol::kGptq ? "seqlen" : "ctx", s->window},
                             {"first_scored_row", s->first_scored},
                             {"scored_per_window", s->scored_per_window()},
                             {"corpus_tokens", s->corpus_tokens},
                             {"windows_available", s->windows_available},
                             {"windows", s->n_windows()}});
  }
  if (!r.kld_base.empty()) j["kld_base"] = r.kld_base;
  if (!r.q4_act.empty()) j["q4_activations"] = r.q4_act;
  j["results"] = json::array();
  for (const ReportRow& row : r.rows) {
    const ReportModel& m = r.models[row.model];
    const EvalSet& s = *r.sets[row.set];
    const ModelScores& sc = row.scores;
    json e = {{"model", m.name},
              {"path", m.path},
              {"format", m.format},
              {"is_base", m.is_base},
              {"dataset", dataset_name(s.dataset)},
              {"protocol", protocol_name(s.protocol)},
              {s.protocol == Protocol::kGptq ? "seqlen" : "ctx", s.window},
              {"windows", s.n_windows()},
              {"tokens", sc.tokens},
              {"scored_tokens", sc.scored},
              {"ppl", sc.ppl()},
              {"ppl_stderr", sc.ppl_stderr()},
              {"mean_nll", sc.mean_nll()},
              {"window_nll", sc.window_nll},
              {"seconds", sc.seconds},
              {"tokens_per_second", sc.tokens_per_second()}};
    if (row.has_kld)
      e["kld"] = {{"base", r.kld_base},     {"mean", row.kld.mean}, {"median", row.kld.median}, {"p99", row.kld.p99},
                  {"max", row.kld.max},     {"count", row.kld.count},
                  {"top1_agreement", row.kld.top1_agreement}};
    j["results"].push_back(e);
  }
  return j;
}

}  // namespace metharme::eval
