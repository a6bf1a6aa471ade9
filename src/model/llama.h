// The LLaMA forward pass: batched over tokens of one or many sequences, with a KV cache.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "model/kv_cache.h"
#include "model/rope_setup.h"
#include "model/weights.h"
#include "ops/rope.h"
#include "util/buffer.h"
#include "util/thread_pool.h"

namespace metharme {

// One token to evaluate: its id, its position in its sequence, which sequence (KV slot), and
// whether its next-token logits are wanted.
struct BatchToken {
  int32_t id;
  int32_t pos;
  int32_t seq = 0;
  bool logits = false;
};

struct RuntimeOptions {
  int n_ctx = 0;        // positions per sequence; 0 = min(max_position_embeddings, 4096)
  int n_seq = 1;        // independent sequences (KV slots)
  int max_batch = 512;  // tokens per internal step; longer batches are split
  int n_threads = 0;    // 0 = all CPUs this process may use
  // KV cache element types of keys and values (kernels/kv.h): f32, f16, q8 or q4.
  kernels::KvType kv_type_k = kernels::KvType::kF32;
  kernels::KvType kv_type_v = kernels::KvType::kF32;
  RopeOverrides rope = {};  // command-line RoPE settings (model/rope_setup.h); default: the model's own
  bool log_rope = false;    // print the chosen RoPE scaling on stderr (one line, only when not plain)
  // GPU offload (model/offload.h): the last gpu_layers layers on Vulkan device gpu_device;
  // kGpuAll (or more than the layer count) also moves the output head; gpu_auto lowers the
  // count until the plan fits the device's memory.
  int gpu_layers = 0;
  int gpu_device = 0;
  bool gpu_auto = false;
};
constexpr int kGpuAll = 1 << 20;

class GpuOffload;

// Where the inputs of a layer's linears appear (for quantization and analysis).
enum class LinearSlot { kQKV, kO, kGateUp, kDown };

class LinearObserver {
 public:
  virtual ~LinearObserver() = default;
  // x: [M][width] activations about to enter the linears of `slot` in `layer`.
  virtual void on_input(int layer, LinearSlot slot, const float* x, int M, int width) = 0;
};

class LlamaRuntime {
 public:
  LlamaRuntime(const ModelWeights& w, const RuntimeOptions& opt);
  ~LlamaRuntime();
  // The device half of the model, or null when everything runs on the CPU.
  const GpuOffload* gpu() const { return gpu_.get(); }

  const ModelWeights& weights() const { return *w_; }
  const LlamaConfig& config() const { return w_->config; }
  int n_ctx() const { return kv_.n_ctx(); }
  int n_vocab() const { return w_->config.vocab_size; }
  KvCache& kv() { return kv_; }
  // The rotary table every position uses (prefill, decode and KvCache::shift), and its summary.
  const ops::RopeTable& rope() const { return rope_; }
  const RopeChoice& rope_choice() const { return rope_choice_; }
  ThreadPool& pool() { return pool_; }
  void set_observer(LinearObserver* o) { observer_ = o; }

  // Evaluates `tokens` (any mix of sequences; within a sequence in position order, positions
  // below each token's already in the cache). Writes one row of n_vocab() logits to `logits`
  // for every token with .logits set, in batch order.
  void forward(std::span<const BatchToken> tokens, float* logits);

  // One sequence: evaluates ids at positions pos0.. and returns the last token's logits
  // (an internal buffer valid until the next call).
  const float* eval(std::span<const int> ids, int pos0, int seq = 0);

  // Hidden states after the final norm for the last forward() batch is not kept; these expose
  // the pieces for tools that walk the model layer by layer.
  void embed(std::span<const BatchToken> tokens, float* x) const;  // x: [n][d]
  void layer_forward(int layer, std::span<const BatchToken> tokens, float* x);
  // The attention half of layer_forward: q/k/v of the normed input xb [n][d], RoPE, KV store,
  // attention; writes att [n][q_dim] (the o_proj input).
  void attention(int layer, std::span<const BatchToken> tokens, const float* xb, float* att);

  // Wall time spent attending over the cache (scores, softmax and weighted sum of values, decode
  // and prefill alike; not the q/k/v projections, RoPE or the KV store) since the last reset:
  // two clock reads per layer and step, so the bench can report attention's share of a step.
  double attention_seconds() const { return attn_seconds_; }
  void reset_attention_seconds() { attn_seconds_ = 0; }

 private:
  void step(std::span<const BatchToken> tokens, float* logits);
  template <class F>
  void per_token(int n, F&& f);

  const ModelWeights* w_;
  RuntimeOptions opt_;
  ThreadPool pool_;
  KvCache kv_;
  RopeChoice rope_choice_;
  ops::RopeTable rope_;
  LinearObserver* observer_ = nullptr;
  std::unique_ptr<GpuOffload> gpu_;  // layers [cpu_layers_, L) run there
  int cpu_layers_ = 0;
  int group_ = 1;  // query heads per kv head
  double attn_seconds_ = 0;

  // Scratch, sized for max_batch tokens at construction: the decode loop allocates nothing.
  PageBuffer x_, xb_, q_, k_, v_, att_, hg_, hu_, decode_work_, tile_work_, logits_;
  size_t decode_work_floats_ = 0, tile_work_floats_ = 0;  // per thread, multiples of 16
  std::vector<int> logit_rows_;
  std::vector<BatchToken> eval_batch_;
};

}  // namespace metharme
