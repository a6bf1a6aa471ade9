// metharme synth: write a random model of a given shape (GPTQ 4-bit, fp16, or a llama.cpp GGUF).
#include <cstdio>
#include <unistd.h>

#include "cli/command.h"
#include "model/synth.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace metharme::cli {
namespace {

struct Args {
  std::string out, shape = "tiny", tokenizer, gguf;
  int hidden = 0, intermediate = 0, layers = 0, heads = 0, kv_heads = 0, vocab = 0;
  int bits = 4, group_size = 128, threads = 0;
  bool act_order = false, fp16 = false;
  uint64_t seed = 0;
};

SynthVocab read_vocab(const std::string& path) {
  Tokenizer tok(path);
  SynthVocab v;
  v.model_file = path;
  for (int i = 0; i < tok.vocab_size(); ++i) {
    v.pieces.push_back(tok.piece(i));
    v.scores.push_back(tok.score(i));
    v.types.push_back(tok.is_control(i) ? 3 : tok.is_unknown(i) ? 2 : tok.is_byte(i) ? 6 : 1);
  }
  return v;
}

Registrar reg("synth", "Write a random model of a given shape: GPTQ 4-bit folder (default), fp16 folder, or GGUF file",
              [](CLI::App& app) {
  auto a = std::make_shared<Args>();
  app.add_option("-o,--out", a->out, "Output folder (GGUF: output file)")->required();
  app.add_option("--shape", a->shape, "7b, 1b (TinyLlama 1.1B, GQA) or tiny")->check(CLI::IsMember({"7b", "1b", "tiny"}));
  app.add_option("--hidden", a->hidden, "Override the hidden size");
  app.add_option("--intermediate", a->intermediate, "Override the MLP size");
  app.add_option("--layers", a->layers, "Override the layer count");
  app.add_option("--heads", a->heads, "Override the attention heads");
  app.add_option("--kv-heads", a->kv_heads, "Override the key/value heads");
  app.add_option("--vocab", a->vocab, "Vocabulary size (default: the tokenizer's)");
  app.add_option("--bits", a->bits, "GPTQ bits (only 4)");
  app.add_option("--group-size", a->group_size, "GPTQ group size; -1 = one group per row");
  app.add_flag("--act-order", a->act_order, "Scatter the GPTQ groups through g_idx (desc_act)");
  app.add_flag("--fp16", a->fp16, "Write a dense fp16 model instead of GPTQ");
  app.add_option("--gguf", a->gguf,
                 "Write a llama.cpp GGUF file of this type instead (q4_k_m: llama-quantize's Q4_K/Q6_K mix)")
      ->check(CLI::IsMember({"q4_0", "q8_0", "q4_k_m"}));
  app.add_option("--seed", a->seed, "Random seed (same seed, same bytes)");
  app.add_option("--tokenizer", a->tokenizer, "tokenizer.model to include (its size is the default vocabulary)")->required();
  add_threads_option(app, a->threads);
  return [a] {
    if (a->fp16 && !a->gguf.empty()) fail("synth: --fp16 and --gguf exclude each other");
    SynthOptions o;
    o.shape = synth_shape(a->shape);
    SynthVocab vocab = read_vocab(a->tokenizer);
    o.shape.vocab = int(vocab.pieces.size());
    for (auto [dst, v] : {std::pair{&o.shape.hidden, a->hidden}, {&o.shape.intermediate, a->intermediate},
                          {&o.shape.layers, a->layers}, {&o.shape.heads, a->heads}, {&o.shape.kv_heads, a->kv_heads},
                          {&o.shape.vocab, a->vocab}})
      if (v) *dst = v;
    if (a->heads && !a->kv_heads) o.shape.kv_heads = std::min(o.shape.kv_heads, a->heads);
    o.format = !a->gguf.empty() ? (a->gguf == "q4_0"   ? SynthFormat::kGgufQ4_0
                                   : a->gguf == "q8_0" ? SynthFormat::kGgufQ8_0
                                                       : SynthFormat::kGgufQ4_K_M)
               : a->fp16      ? SynthFormat::kFp16
                              : SynthFormat::kGptq;
    o.bits = a->bits;
    o.group_size = a->group_size;
    o.act_order = a->act_order;
    o.seed = a->seed;
    o.n_threads = a->threads;
    o.progress = true;
    synth_model(o, vocab, a->out);
    std::fprintf(stderr, "wrote %s\n", a->out.c_str());
    return 0;
  };
});

}  // namespace
}  // namespace metharme::cli
