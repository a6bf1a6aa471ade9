// metharme info: what a model folder holds, as the loader sees it.
#include <cstdio>

#include "cli/command.h"
#include "model/weights.h"
#include "util/error.h"

namespace metharme::cli {
namespace {

Registrar reg("info", "Load a model folder and print its configuration, weight format and sizes", [](CLI::App& app) {
  auto dir = std::make_shared<std::string>();
  app.add_option("-m,--model", *dir, "Model folder")->required();
  return [dir] {
    auto w = load_weights(*dir);
    const LlamaConfig& c = w->config;
    std::printf("model:        %s\n", dir->c_str());
    std::printf("files:        %zu (%zu tensors)\n", w->store.files().size(), w->store.size());
    std::printf("layers:       %d\n", c.num_hidden_layers);
    std::printf("hidden:       %d (ffn %d)\n", c.hidden_size, c.intermediate_size);
    std::printf("heads:        %d (kv %d, head_dim %d)\n", c.num_attention_heads, c.num_key_value_heads, c.head_dim);
    std::printf("vocab:        %d\n", c.vocab_size);
    std::printf("context:      %d (rope_theta %g, rms_norm_eps %g)\n", c.max_position_embeddings, c.rope_theta,
                c.rms_norm_eps);
    std::printf("embeddings:   %s%s\n", dtype_name(w->embed.dtype), c.tie_word_embeddings ? " (tied lm_head)" : "");
    std::printf("linears:      %s, %.1f MiB\n", w->format.c_str(), double(w->linear_bytes()) / (1 << 20));
    std::printf("lm_head:      %s, %.1f MiB\n", w->lm_head.describe().c_str(), double(w->lm_head.weight_bytes()) / (1 << 20));
    std::printf("read/token:   %.1f MiB\n", double(w->bytes_per_token()) / (1 << 20));
    return 0;
  };
});

}  // namespace
}  // namespace metharme::cli
