// Quantizing one decoder layer over the calibration activations: Hessians from the inputs each
// linear sees (computed from the already-quantized linears before it), GPTQ or RTN, and the layer's
// output for the next layer.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "formats/tensor_store.h"
#include "model/llama.h"
#include "quant/pack.h"
#include "quant/quantizer.h"

namespace metharme::quant {

// The seven linears of a LLaMA layer, in the reference's module order.
constexpr int kNumLinears = 7;
enum LinearId { kQ, kK, kV, kO, kGate, kUp, kDown };
const char* linear_name(int i);  // "self_attn.q_proj", ...
int linear_n_out(const LlamaConfig& c, int i);
int linear_n_in(const LlamaConfig& c, int i);

// Activations of every calibration window, [S][T][width], stored as f32 or f16.
class ActStore {
 public:
  ActStore() = default;
  ActStore(int S, int T, int width, bool f16);
  int samples() const { return S_; }
  bool f16() const { return f16_; }
  size_t sample_floats() const { return size_t(T_) * size_t(width_); }
  void load(int s, float* out) const;
  void store(int s, const float* in);
  void release() { std::vector<uint8_t>().swap(data_); }  // frees the memory; allocate() brings it back
  void allocate() { data_.resize(size_t(S_) * sample_floats() * (f16_ ? 2 : 4)); }
  uint8_t* bytes() { return data_.data(); }
  size_t size_bytes() const { return data_.size(); }

 private:
  int S_ = 0, T_ = 0, width_ = 0;
  bool f16_ = false;
  std::vector<uint8_t> data_;
};

struct LayerJobOptions {
  enum class Method { kGptq, kRtn } method = Method::kGptq;
  QuantConfig qc;
  bool true_sequential = false;
  bool fp16_scales = false;                 // fake-quant weights with fp16-rounded scales (as stored)
  std::array<bool, kNumLinears> quantize{};  // which linears get quantized (others stay as they are)
};

struct LinearOutcome {
  bool quantized = false;
  int order = -1;             // position in the layer's quantization order
  QuantizedLinear q;
  double rel_weight_error = 0;  // ||W - W'||_F / ||W||_F
};

// Progress callback: (what is happening, linears finished in this layer).
using LayerProgress = std::function<void(const std::string& what, int linears_done)>;

class LayerQuantizer {
 public:
  // `threads`: pool size (also the OpenBLAS threads for the Cholesky steps). seqlen: window length.
  LayerQuantizer(const LlamaConfig& c, const TensorStore& src, int seqlen, int threads);
  ~LayerQuantizer();

  // Quantizes layer `l`. X holds the layer's input per window and receives its output
  // (GPTQ only; RTN ignores X). `ids` are the windows' tokens (for positions only).
  // `after_first_sublist` runs once the first sub-list is quantized (test hook).
  std::array<LinearOutcome, kNumLinears> run(int l, const LayerJobOptions& o, ActStore* X, ActStore* A,
                                             const LayerProgress& progress,
                                             const std::function<void()>& after_first_sublist);

  // Seconds spent in the last run(): forward passes, Hessian accumulation, GPTQ/RTN solves.
  struct Timing {
    double forward = 0, hessian = 0, solve = 0;
  };
  const Timing& timing() const { return timing_; }

  // Embeds window s into out [T][d].
  void embed(const int32_t* ids, float* out) const;
  ThreadPool& pool() { return rt_->pool(); }

 private:
  void load_layer(int l);
  void set_fake_quant(int i, std::vector<float> w);
  LinearOutcome quantize_linear(int l, int i, const LayerJobOptions& o, std::vector<float>* H);
  void rms(const float* x, const std::vector<float>& w, float* out);

  LlamaConfig c_;
  const TensorStore* src_;
  int T_;
  int threads_;
  ModelWeights one_;  // a one-layer model whose layer 0 is the layer being quantized
  std::unique_ptr<LlamaRuntime> rt_;
  std::array<std::vector<float>, kNumLinears> fake_;  // fake-quantized weights [N][K] in use
  std::vector<BatchToken> toks_;
  Timing timing_;
  std::vector<float> x_, xb_, att_, hg_, hu_, tmp_;  // per-window scratch
};

}  // namespace metharme::quant

namespace metharme::quant {
// Drops the pages of a read-only mapping range from this process (they stay in the page cache), so
// streaming through a large model does not grow the resident set.
void release_pages(const void* p, size_t n);
}  // namespace metharme::quant
