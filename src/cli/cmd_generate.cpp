// metharme generate: continue a prompt, streaming the new text to stdout.
#include <cstdio>
#include <optional>

#include "chat/generate.h"
#include "cli/command.h"
#include "cli/runtime_flags.h"
#include "cli/sampler_flags.h"
#include "model/llama.h"
#include "util/error.h"

namespace metharme::cli {
namespace {

struct Args {
  std::string model, prompt;
  int n = 128, ctx = 0;
  bool echo = false, keep_stop = false;
};

Registrar reg("generate", "Continue a prompt; the new text streams to stdout, timings go to stderr",
              [](CLI::App& app) {
  auto a = std::make_shared<Args>();
  app.add_option("-m,--model", a->model, "Model folder")->required();
  app.add_option("-p,--prompt", a->prompt, "Prompt text (empty: start from BOS alone)");
  app.add_option("-n,--n-predict", a->n, "Tokens to generate")->check(CLI::Range(0, 1 << 20));
  app.add_option("-c,--ctx,--contextsize", a->ctx,
                 "Context size in tokens (default: min(model maximum, 4096)); beyond the model's, RoPE scaling "
                 "is chosen automatically unless a --rope flag is given");
  app.add_flag("--echo", a->echo, "Print the prompt before the generated text");
  app.add_flag("--keep-stop", a->keep_stop, "Print the stop string that ended the text");
  auto rf = add_runtime_flags(app, "f32");
  add_speculative_flags(app, *rf);
  auto sf = add_sampler_flags(app, SamplerParams{});
  return [a, sf, rf] {
    auto w = load_weights(a->model);
    Tokenizer tok = Tokenizer::from_folder(a->model);
    RuntimeOptions ro;
    apply_runtime_flags(*rf, *w, ro);
    ro.n_ctx = a->ctx;
    LlamaRuntime rt(*w, ro);
    auto ids = tok.encode(a->prompt, true);
    if (int(ids.size()) > rt.n_ctx())
      fail("the prompt has ", ids.size(), " tokens, more than the context of ", rt.n_ctx(), " (raise -c)");
    GenerateOptions go;
    go.max_tokens = std::min(a->n, rt.n_ctx() - int(ids.size()) + 1);
    go.sampler = sf->resolve(rt.n_vocab(), tok, rt.n_ctx());
    go.stop = sf->stops;
    go.trim_stop = !a->keep_stop;
    auto spec = setup_speculation(*rf, tok, rt, ro);
    std::optional<Drafter> drafter;
    if (spec->cfg.enabled()) {
      drafter.emplace(spec->cfg, 0);
      go.drafter = &*drafter;
      go.draft_max = spec->cfg.draft_max;
    }
    if (a->echo) {
      std::fputs(a->prompt.c_str(), stdout);
      std::fflush(stdout);
    }
    auto res = generate(rt, tok, ids, go, [](const std::string& s) {
      std::fwrite(s.data(), 1, s.size(), stdout);
      std::fflush(stdout);
      return true;
    });
    std::fputc('\n', stdout);
    std::fflush(stdout);
    int n_gen = int(res.tokens.size());
    std::fprintf(stderr,
                 "prompt: %d tokens in %.3f s (%.2f tok/s); generation: %d tokens in %.3f s (%.2f tok/s); %d threads, "
                 "%s; seed %llu; stopped by %s\n",
                 res.prompt_tokens, res.prompt_seconds, res.prompt_tokens / std::max(res.prompt_seconds, 1e-9), n_gen,
                 res.gen_seconds, n_gen > 1 ? (n_gen - 1) / std::max(res.gen_seconds, 1e-9) : 0.0, rt.pool().size(),
                 w->format.c_str(), static_cast<unsigned long long>(go.sampler.seed), finish_reason_name(res.finish));
    if (go.drafter)
      std::fprintf(stderr,
                   "speculative: %lld verification steps, %lld of %lld drafts accepted (%.1f%%), %.2f tokens per "
                   "step\n",
                   static_cast<long long>(res.spec.steps), static_cast<long long>(res.spec.accepted),
                   static_cast<long long>(res.spec.drafted), 100.0 * res.spec.acceptance(), res.spec.tokens_per_step());
    return 0;
  };
});

}  // namespace
}  // namespace metharme::cli
