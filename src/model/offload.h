// Where the layers run: the one place that splits a model between the CPU and a Vulkan device.
// Layers [first_layer, L) run on the device with their weights and KV cache there (like
// KoboldCpp's --gpulayers, the last layers go first); the output head goes too when every layer
// does and more were asked for. The CPU runs the embedding and the layers before first_layer as
// before; hidden states cross once per step each way (or logits come back instead).
#pragma once

#include <memory>
#include <span>
#include <string>

#include "model/kv_cache.h"
#include "model/llama.h"
#include "ops/rope.h"

namespace metharme {

// What the device holds and what that costs (bytes).
struct OffloadPlan {
  int first_layer = 0;  // layers [first_layer, n_layers) on the device
  int n_layers = 0;     // the model's layer count
  bool head = false;    // final norm and lm_head on the device
  size_t weight_bytes = 0, kv_bytes = 0, scratch_bytes = 0;
  size_t total() const { return weight_bytes + kv_bytes + scratch_bytes; }
  std::string describe() const;  // "12/12 layers + output head: 3.1 MiB weights, ..."
};

class GpuOffload : public KvMirror {
 public:
  virtual const OffloadPlan& plan() const = 0;
  // Runs the device layers on x [n][d] (the hidden states after layer first_layer - 1). With the
  // head on the device, writes the logits of logit_rows (rows of toks) to logits [rows][vocab];
  // otherwise writes the hidden states back to x. Throws Error if the device fails.
  virtual void run(std::span<const BatchToken> toks, float* x, std::span<const int> logit_rows, float* logits) = 0;
};

// The offload that opt.gpu_layers asks for, or null (after one line on stderr saying why) when
// there is no Vulkan loader or device: the caller runs everything on the CPU. Throws Error when a
// device exists but the plan does not fit it (unless opt.gpu_auto) or cannot run there.
std::unique_ptr<GpuOffload> make_gpu_offload(const ModelWeights& w, const RuntimeOptions& opt, int n_ctx,
                                             const ops::RopeTable& rope);

}  // namespace metharme
