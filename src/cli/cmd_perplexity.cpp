// metharme perplexity: GPTQ-for-LLaMa's and llama.cpp's perplexity protocols, KL-divergence
// against a base model, and a comparison table across models and datasets.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>

#include "cli/command.h"
#include "cli/runtime_flags.h"
#include "eval/checkpoint.h"
#include "eval/corpus.h"
#include "eval/eval_set.h"
#include "eval/perplexity.h"
#include "eval/report.h"
#include "model/llama.h"
#include "ops/q4_linear.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/progress.h"

namespace metharme::cli {
namespace {

using namespace metharme::eval;

struct Args {
  std::vector<std::string> models, datasets, data;
  std::string protocol = "gptq", kld_base, kld_base_kv, q4_act, checkpoint;
  int seqlen = 2048, ctx = 512, limit = 0;
  std::shared_ptr<RuntimeFlags> rt_flags;
  bool json = false, no_progress = false;
  CLI::Option *seqlen_opt = nullptr, *ctx_opt = nullptr;
};

struct Loaded {
  std::string path;
  std::unique_ptr<ModelWeights> weights;
  std::unique_ptr<LlamaRuntime> rt;
};

std::string label_of(const std::string& path) {
  std::filesystem::path p(path);
  while (!p.empty() && p.filename().empty()) p = p.parent_path();
  return p.filename().string().empty() ? path : p.filename().string();
}

std::string canonical(const std::string& p) {
  std::error_code ec;
  auto c = std::filesystem::weakly_canonical(p, ec);
  return ec ? p : c.string();
}

Loaded load(const std::string& path, int n_ctx, const RuntimeFlags& flags) {
  Loaded l;
  l.path = path;
  l.weights = load_weights(path);
  RuntimeOptions ro;
  apply_runtime_flags(flags, *l.weights, ro);
  ro.n_ctx = n_ctx;
  l.rt = std::make_unique<LlamaRuntime>(*l.weights, ro);
  return l;
}

// Perplexities are only comparable when every model reads the same token ids.
void check_same_vocab(const Tokenizer& a, const std::string& a_dir, const std::string& b_dir) {
  Tokenizer b = Tokenizer::from_folder(b_dir);
  bool same = a.vocab_size() == b.vocab_size();
  for (int id = 0; same && id < a.vocab_size(); ++id) same = a.piece(id) == b.piece(id);
  MH_CHECK(same, b_dir, ": its tokenizer differs from ", a_dir, "'s; perplexities would not be comparable");
}

std::string running_detail(const EvalResult& r, bool with_base) {
  std::string d = "ppl";
  for (const ModelScores& m : r.models) d += cat(" ", m.ppl());
  if (with_base) d += cat(" (base ", r.base.ppl(), ")");
  return d;
}

int run(const Args& a) {
  const Protocol protocol = parse_protocol(a.protocol);
  if (protocol == Protocol::kGptq && a.ctx_opt->count())
    fail("--ctx applies to --protocol llamacpp; the gptq protocol's window is --seqlen");
  if (protocol == Protocol::kLlamaCpp && a.seqlen_opt->count())
    fail("--seqlen applies to --protocol gptq; the llamacpp protocol's window is --ctx");
  MH_CHECK(!a.data.empty(), "--data FILE is required (the evaluation text)");
  std::vector<std::string> datasets = a.datasets;
  if (datasets.empty()) datasets.assign(a.data.size(), "text");
  MH_CHECK(datasets.size() == a.data.size(), "give one --dataset per --data file (", datasets.size(), " datasets, ",
           a.data.size(), " files)");
  const int window = protocol == Protocol::kGptq ? a.seqlen : a.ctx;
  if (!a.q4_act.empty()) {
    ops::Q4Act act;
    MH_CHECK(ops::parse_q4_act(a.q4_act, &act), "--q4-act '", a.q4_act, "' is not one of q8, f32, auto");
    ops::set_q4_act(act);
  }

  // Tokenize every dataset once, with the first model's tokenizer.
  const std::string& tok_dir = a.models[0];
  Tokenizer tok = Tokenizer::from_folder(tok_dir);
  for (size_t i = 1; i < a.models.size(); ++i) check_same_vocab(tok, tok_dir, a.models[i]);
  if (!a.kld_base.empty()) check_same_vocab(tok, tok_dir, a.kld_base);
  std::vector<EvalSet> sets;
  for (size_t i = 0; i < a.data.size(); ++i) {
    Dataset d = parse_dataset(datasets[i]);
    Corpus corpus = read_corpus(a.data[i], d);
    sets.push_back(build_eval_set(corpus, d, tok, {protocol, window, a.limit}));
  }

  Report report;
  report.q4_act = ops::q4_act_name(ops::q4_act_for_rows(EvalOptions{}.chunk));
  for (const EvalSet& s : sets) report.sets.push_back(&s);
  const bool progress = !a.no_progress;
  EvalCheckpoint cp(a.checkpoint);
  auto model_id = [](const std::string& path, const ModelWeights& w) { return canonical(path) + " (" + w.format + ")"; };
  // Evaluates one dataset, continuing from (and saving to) the checkpoint when one is given.
  auto eval_with_progress = [&](const EvalSet& s, std::vector<LlamaRuntime*> rts, LlamaRuntime* base,
                                const std::string& who, const std::vector<std::string>& ids, const std::string& base_id) {
    const std::string key = checkpoint_key(s, ids, base_id, report.q4_act);
    std::optional<EvalResult> saved = cp.enabled() ? cp.find(key, rts.size(), base != nullptr) : std::nullopt;
    const int done0 = saved ? int(saved->models[0].window_nll.size()) : 0;
    if (saved)
      std::fprintf(stderr, "%s: %s %s: %d of %d windows already evaluated\n", cp.path().c_str(), dataset_name(s.dataset),
                   who.c_str(), done0, s.n_windows());
    if (saved && done0 == s.n_windows()) return *saved;
    int forwards = int(rts.size()) + (base ? 1 : 0);
    for (LlamaRuntime* rt : rts) forwards -= rt == base;
    const int64_t per_window = int64_t(s.window) * forwards;
    Progress bar(cat("perplexity ", dataset_name(s.dataset), " ", who), int64_t(s.n_windows() - done0) * per_window,
                 "tok", progress);
    EvalOptions eo;
    eo.resume = saved ? &*saved : nullptr;
    eo.on_window = [&](int done, const EvalResult& r) {
      cp.save(key, r, s.n_windows());
      if (done < s.n_windows()) bar.update(int64_t(done - done0) * per_window, running_detail(r, base != nullptr));
    };
    EvalResult r = evaluate(s, rts, base, eo);
    bar.finish(int64_t(s.n_windows() - done0) * per_window, running_detail(r, base != nullptr));
    return r;
  };

  if (a.kld_base.empty()) {
    // One model in memory at a time.
    for (size_t m = 0; m < a.models.size(); ++m) {
      Loaded l = load(a.models[m], window, *a.rt_flags);
      report.models.push_back({label_of(l.path), l.path, l.weights->format, false});
      for (size_t si = 0; si < sets.size(); ++si) {
        EvalResult r = eval_with_progress(sets[si], {l.rt.get()}, nullptr, report.models.back().name,
                                          {model_id(l.path, *l.weights)}, "");
        report.rows.push_back({m, si, std::move(r.models[0]), false, {}});
      }
    }
  } else {
    // Every model walks the windows together with the base, so the base's logits are never stored.
    // A -m naming the base shares its runtime (and logits); otherwise the base gets a row of its own, first.
    // --kld-base-kv-type: the base runs with its own KV type (e.g. f32 against the -m models'
    // q8), so the KV cache's cost is measured on one model; the base then never shares a runtime.
    RuntimeFlags base_flags = *a.rt_flags;
    const bool own_kv = !a.kld_base_kv.empty();
    if (own_kv) {
      base_flags.kv_type = a.kld_base_kv;
      base_flags.kv_type_k.clear();
      base_flags.kv_type_v.clear();
      base_flags.quantkv = -1;
    }
    auto kv_tag = [&](const RuntimeFlags& f) { return own_kv ? " kv " + kv_types_label(f) : std::string(); };
    Loaded base = load(a.kld_base, window, base_flags);
    report.kld_base = label_of(base.path) + kv_tag(base_flags);
    bool base_listed = false;
    for (const std::string& p : a.models) base_listed |= !own_kv && canonical(p) == canonical(a.kld_base);
    if (!base_listed) report.models.push_back({report.kld_base, base.path, base.weights->format, true});
    const size_t first_model = report.models.size();
    std::vector<Loaded> loaded;
    std::vector<LlamaRuntime*> rts;
    std::vector<std::string> ids;
    for (const std::string& p : a.models) {
      const bool is_base = !own_kv && canonical(p) == canonical(a.kld_base);
      if (is_base) {
        rts.push_back(base.rt.get());
      } else {
        loaded.push_back(load(p, window, *a.rt_flags));
        rts.push_back(loaded.back().rt.get());
      }
      const ModelWeights& w = is_base ? *base.weights : *loaded.back().weights;
      report.models.push_back({label_of(p) + kv_tag(*a.rt_flags), p, w.format, is_base});
      ids.push_back(model_id(p, w) + kv_tag(*a.rt_flags));
    }
    for (size_t si = 0; si < sets.size(); ++si) {
      EvalResult r = eval_with_progress(sets[si], rts, base.rt.get(), "vs " + report.kld_base, ids,
                                        model_id(a.kld_base, *base.weights) + kv_tag(base_flags));
      if (!base_listed) report.rows.push_back({0, si, std::move(r.base), false, {}});
      for (size_t m = 0; m < rts.size(); ++m) {
        if (rts[m] == base.rt.get()) r.models[m].seconds += r.base.seconds;  // its forward passes ran as the base
        KldSummary k = summarize_kld(std::move(r.models[m].kld), r.models[m].top1_same);
        report.rows.push_back({first_model + m, si, std::move(r.models[m]), true, k});
      }
    }
  }
  std::stable_sort(report.rows.begin(), report.rows.end(), [](const ReportRow& x, const ReportRow& y) {
    return x.set != y.set ? x.set < y.set : x.model < y.model;
  });

  if (a.json) {
    std::string s = report_json(report).dump(2);
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fputc('\n', stdout);
  } else {
    std::string s = format_report(report);
    std::fwrite(s.data(), 1, s.size(), stdout);
  }
  std::fflush(stdout);
  return 0;
}

Registrar reg("perplexity",
              "Perplexity by GPTQ-for-LLaMa's protocol (wikitext2, ptb, ptb-new, c4, c4-new) or llama.cpp's, and "
              "KL-divergence against a base model",
              [](CLI::App& app) {
  auto a = std::make_shared<Args>();
  app.add_option("-m,--model", a->models, "Model folder; repeat to compare several")->required();
  app.add_option("--dataset", a->datasets,
                 "wikitext2|ptb|ptb-new|c4|c4-new|text, one per --data in the same order (default: text)");
  app.add_option("--data", a->data,
                 "Data file: WikiText raw/rows file, PTB sentence file, HF JSON lines, c4 .json.gz shard or any text");
  app.add_option("--protocol", a->protocol, "gptq (non-overlapping seqlen windows) or llamacpp (ctx chunks, second half scored)")
      ->check(CLI::IsMember({"gptq", "llamacpp", "llama.cpp"}));
  a->seqlen_opt = app.add_option("--seqlen", a->seqlen, "Window length of the gptq protocol")->check(CLI::Range(2, 1 << 20));
  a->ctx_opt = app.add_option("--ctx", a->ctx, "Chunk length of the llamacpp protocol")->check(CLI::Range(4, 1 << 20));
  app.add_option("--limit", a->limit, "Evaluate only the first N windows of each dataset")->check(CLI::Range(1, 1 << 30));
  app.add_option("--kld-base", a->kld_base, "Base model folder: also report KL(base || model) and top-1 agreement");
  app.add_option("--kld-base-kv-type", a->kld_base_kv,
                 "KV cache type of the --kld-base model (f32, f16, q8, q4); the -m models keep --kv-type. With "
                 "the same folder for both, this measures what a KV type costs")
      ->check(CLI::IsMember({"f32", "f16", "q8", "q4", "q8_0", "q4_0"}));
  app.add_option("--checkpoint", a->checkpoint,
                 "Save the scores after every window to this JSON file and resume from it when rerun");
  app.add_flag("--json", a->json, "Print the results as JSON");
  app.add_flag("--no-progress", a->no_progress, "No progress lines on stderr");
  app.add_option("--q4-act", a->q4_act,
                 "Activations meeting 4-bit weights: auto (as served), q8 (int8) or f32 (exact; GPTQ-for-LLaMa-like)");
  a->rt_flags = add_runtime_flags(app, "f32");
  return [a] { return run(*a); };
});

}  // namespace
}  // namespace metharme::cli
