#include "quant/layer_quant.h"

#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "ops/elementwise.h"
#include "ops/linear.h"
#include "quant/gptq.h"
#include "util/error.h"
#include "util/half.h"

namespace metharme::quant {

namespace {

struct LinearInfo {
  const char* name;
  ops::Linear LayerWeights::*member;
  LinearSlot slot;
};
constexpr LinearInfo kInfo[kNumLinears] = {
    {"self_attn.q_proj", &LayerWeights::wq, LinearSlot::kQKV},   {"self_attn.k_proj", &LayerWeights::wk, LinearSlot::kQKV},
    {"self_attn.v_proj", &LayerWeights::wv, LinearSlot::kQKV},   {"self_attn.o_proj", &LayerWeights::wo, LinearSlot::kO},
    {"mlp.gate_proj", &LayerWeights::w_gate, LinearSlot::kGateUp}, {"mlp.up_proj", &LayerWeights::w_up, LinearSlot::kGateUp},
    {"mlp.down_proj", &LayerWeights::w_down, LinearSlot::kDown},
};

const TensorView& get_checked(const TensorStore& s, const std::string& name, std::vector<int64_t> shape) {
  const TensorView& t = s.get(name);
  if (t.shape != shape)
    fail(t.source, ": tensor '", name, "' has shape ", shape_str(t.shape), ", expected ", shape_str(shape));
  wtype_of(t);
  return t;
}

// Inputs of one slot: several linears share one Hessian.
int slot_width(const LlamaConfig& c, LinearSlot s) {
  switch (s) {
    case LinearSlot::kQKV: case LinearSlot::kGateUp: return c.hidden_size;
    case LinearSlot::kO: return c.q_dim();
    case LinearSlot::kDown: return c.intermediate_size;
  }
  return 0;
}

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// Adds to `acc` the seconds until it goes out of scope.
struct Timer {
  explicit Timer(double& acc) : acc_(acc), t0_(now()) {}
  ~Timer() { acc_ += now() - t0_; }
  double& acc_;
  double t0_;
};

struct HessianObserver : LinearObserver {
  std::array<Hessian*, 4> h{};
  ThreadPool* pool = nullptr;
  double* seconds = nullptr;
  void on_input(int, LinearSlot slot, const float* x, int M, int) override {
    Timer t(*seconds);
    if (Hessian* p = h[size_t(slot)]) p->add(x, M, *pool);
  }
};

}  // namespace

void release_pages(const void* p, size_t n) {
  const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  uintptr_t b = (uintptr_t(p) + page - 1) / page * page, e = (uintptr_t(p) + n) / page * page;
  if (e > b) ::madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);
}

const char* linear_name(int i) { return kInfo[i].name; }

int linear_n_out(const LlamaConfig& c, int i) {
  switch (i) {
    case kQ: return c.q_dim();
    case kK: case kV: return c.kv_dim();
    case kO: case kDown: return c.hidden_size;
    default: return c.intermediate_size;
  }
}

int linear_n_in(const LlamaConfig& c, int i) {
  return i == kO ? c.q_dim() : i == kDown ? c.intermediate_size : c.hidden_size;
}

ActStore::ActStore(int S, int T, int width, bool f16)
    : S_(S), T_(T), width_(width), f16_(f16), data_(size_t(S) * size_t(T) * size_t(width) * (f16 ? 2 : 4)) {}

void ActStore::load(int s, float* out) const {
  const size_t n = sample_floats();
  if (!f16_) {
    std::memcpy(out, data_.data() + size_t(s) * n * 4, n * 4);
    return;
  }
  const uint16_t* p = reinterpret_cast<const uint16_t*>(data_.data()) + size_t(s) * n;
  for (size_t i = 0; i < n; ++i) out[i] = fp16_to_f32(p[i]);
}

void ActStore::store(int s, const float* in) {
  const size_t n = sample_floats();
  if (!f16_) {
    std::memcpy(data_.data() + size_t(s) * n * 4, in, n * 4);
    return;
  }
  uint16_t* p = reinterpret_cast<uint16_t*>(data_.data()) + size_t(s) * n;
  for (size_t i = 0; i < n; ++i) p[i] = f32_to_fp16(in[i]);
}

LayerQuantizer::LayerQuantizer(const LlamaConfig& c, const TensorStore& src, int seqlen, int threads)
    : c_(c), src_(&src), T_(seqlen), threads_(threads) {
  one_.config = c;
  one_.config.num_hidden_layers = 1;
  one_.layers.resize(1);
  RuntimeOptions ro;
  ro.n_ctx = seqlen;
  ro.n_seq = 1;
  ro.max_batch = seqlen;
  ro.n_threads = threads;
  rt_ = std::make_unique<LlamaRuntime>(one_, ro);
  for (int t = 0; t < T_; ++t) toks_.push_back({0, t, 0, false});
  const size_t T = size_t(T_);
  x_.resize(T * size_t(c.hidden_size));
  xb_.resize(T * size_t(c.hidden_size));
  tmp_.resize(T * size_t(c.hidden_size));
  att_.resize(T * size_t(c.q_dim()));
  hg_.resize(T * size_t(c.intermediate_size));
  hu_.resize(T * size_t(c.intermediate_size));
}

LayerQuantizer::~LayerQuantizer() = default;

void LayerQuantizer::embed(const int32_t* ids, float* out) const {
  const TensorView& e = src_->get("model.embed_tokens.weight");
  const int d = c_.hidden_size;
  for (int t = 0; t < T_; ++t) tensor_rows_to_f32(e, ids[t], 1, out + size_t(t) * size_t(d));
}

void LayerQuantizer::load_layer(int l) {
  const std::string p = cat("model.layers.", l, ".");
  LayerWeights& L = one_.layers[0];
  L.attn_norm = tensor_to_f32(get_checked(*src_, p + "input_layernorm.weight", {c_.hidden_size}));
  L.ffn_norm = tensor_to_f32(get_checked(*src_, p + "post_attention_layernorm.weight", {c_.hidden_size}));
  for (int i = 0; i < kNumLinears; ++i) {
    const int N = linear_n_out(c_, i), K = linear_n_in(c_, i);
    const TensorView& t = get_checked(*src_, p + kInfo[i].name + ".weight", {N, K});
    L.*kInfo[i].member = ops::make_dense_linear(wtype_of(t), t.data, N, K);
    fake_[size_t(i)].clear();
    fake_[size_t(i)].shrink_to_fit();
  }
}

void LayerQuantizer::set_fake_quant(int i, std::vector<float> w) {
  fake_[size_t(i)] = std::move(w);
  one_.layers[0].*kInfo[i].member =
      ops::make_dense_linear(kernels::WType::kF32, fake_[size_t(i)].data(), linear_n_out(c_, i), linear_n_in(c_, i));
}

LinearOutcome LayerQuantizer::quantize_linear(int l, int i, const LayerJobOptions& o, std::vector<float>* H) {
  const int N = linear_n_out(c_, i), K = linear_n_in(c_, i);
  const TensorView& t = src_->get(cat("model.layers.", l, ".", kInfo[i].name, ".weight"));
  std::vector<float> W = tensor_to_f32(t);
  Timer timer(timing_.solve);
  LinearOutcome out;
  out.quantized = true;
  if (o.method == LayerJobOptions::Method::kRtn) {
    out.q = rtn_quantize(W.data(), N, K, o.qc, pool());
  } else {
    out.q = gptq_quantize(W.data(), N, K, *H, o.qc, pool(), threads_);
  }
  std::vector<float> Wq(W.size());
  dequantize(out.q, o.fp16_scales, Wq.data());
  out.rel_weight_error = rel_weight_error(W.data(), Wq.data(), W.size());
  if (o.method == LayerJobOptions::Method::kGptq) set_fake_quant(i, std::move(Wq));
  return out;
}

void LayerQuantizer::rms(const float* x, const std::vector<float>& w, float* out) {
  const int d = c_.hidden_size;
  const float eps = float(c_.rms_norm_eps);
  pool().parallel_for(T_, 1, [&](int64_t b, int64_t e, int) {
    for (int64_t t = b; t < e; ++t) ops::rmsnorm(x + t * d, w.data(), eps, d, out + t * d);
  });
}

std::array<LinearOutcome, kNumLinears> LayerQuantizer::run(int l, const LayerJobOptions& o, ActStore* X, ActStore* A,
                                                           const LayerProgress& progress,
                                                           const std::function<void()>& after_first_sublist) {
  load_layer(l);
  timing_ = {};
  std::array<LinearOutcome, kNumLinears> res;
  int order = 0;
  const LayerWeights& L = one_.layers[0];
  auto quant = [&](int i, std::vector<float>* H) {
    if (!o.quantize[size_t(i)]) return;
    progress(cat(kInfo[i].name, o.method == LayerJobOptions::Method::kRtn ? " (rtn)" : " (gptq)"), order);
    res[size_t(i)] = quantize_linear(l, i, o, H);
    res[size_t(i)].order = order++;
    progress(kInfo[i].name, order);
  };
  // Quantizes the linears of one slot from its finished Hessian (each gets its own copy).
  auto quant_slot = [&](std::initializer_list<int> ids, Hessian* h) {
    std::vector<int> todo;
    for (int i : ids)
      if (o.quantize[size_t(i)]) todo.push_back(i);
    if (todo.empty()) return;
    std::vector<float> H = h->finish();
    for (size_t j = 0; j < todo.size(); ++j) {
      std::vector<float> Hc = j + 1 < todo.size() ? H : std::move(H);
      quant(todo[j], &Hc);
    }
  };
  auto any = [&](std::initializer_list<int> ids) {
    for (int i : ids)
      if (o.quantize[size_t(i)]) return true;
    return false;
  };
  auto release = [&] {
    for (int i = 0; i < kNumLinears; ++i) {
      const TensorView& t = src_->get(cat("model.layers.", l, ".", kInfo[i].name, ".weight"));
      release_pages(t.data, t.nbytes);
    }
  };

  if (o.method == LayerJobOptions::Method::kRtn) {
    for (int i = 0; i < kNumLinears; ++i) quant(i, nullptr);
    if (after_first_sublist) after_first_sublist();
    release();
    return res;
  }

  MH_CHECK(X && X->samples() > 0, "gptq: no calibration activations");
  const int S = X->samples();
  const int d = c_.hidden_size, ffn = c_.intermediate_size;
  auto hessian = [&](LinearSlot s, bool needed) {
    return needed ? std::make_unique<Hessian>(slot_width(c_, s)) : nullptr;
  };
  auto each_window = [&](const std::string& what, auto&& fn) {
    const double t0 = now(), h0 = timing_.hessian;
    for (int s = 0; s < S; ++s) {
      progress(cat(what, ", window ", s + 1, "/", S), order);
      fn(s);
    }
    timing_.forward += (now() - t0) - (timing_.hessian - h0);
  };
  auto add = [&](Hessian& h, const float* x) {
    Timer t(timing_.hessian);
    h.add(x, T_, pool());
  };

  if (!o.true_sequential) {
    // All Hessians from one pass of the unquantized layer, then one pass with the quantized one.
    auto hq = hessian(LinearSlot::kQKV, any({kQ, kK, kV})), ho = hessian(LinearSlot::kO, any({kO}));
    auto hg = hessian(LinearSlot::kGateUp, any({kGate, kUp})), hd = hessian(LinearSlot::kDown, any({kDown}));
    if (hq || ho || hg || hd) {
      HessianObserver obs;
      obs.h = {hq.get(), ho.get(), hg.get(), hd.get()};
      obs.pool = &pool();
      obs.seconds = &timing_.hessian;
      rt_->set_observer(&obs);
      each_window("pass 1/2", [&](int s) {
        X->load(s, x_.data());
        rt_->layer_forward(0, toks_, x_.data());
      });
      rt_->set_observer(nullptr);
      quant_slot({kQ, kK, kV}, hq.get());
      quant_slot({kO}, ho.get());
      quant_slot({kGate, kUp}, hg.get());
      quant_slot({kDown}, hd.get());
      if (after_first_sublist) after_first_sublist();
    }
    each_window("pass 2/2", [&](int s) {
      X->load(s, x_.data());
      rt_->layer_forward(0, toks_, x_.data());
      X->store(s, x_.data());
    });
    release();
    return res;
  }

  // True-sequential: [k, v, q] -> [o] -> [up, gate] -> [down]; each sub-list's inputs come from
  // the quantized sub-lists before it, one pass over the windows per sub-list.
  MH_CHECK(A && A->samples() == S, "gptq: no attention store");
  A->allocate();  // needed from the o inputs to the up/gate inputs only
  if (auto h = hessian(LinearSlot::kQKV, any({kQ, kK, kV}))) {
    each_window("k,v,q inputs", [&](int s) {
      X->load(s, x_.data());
      rms(x_.data(), L.attn_norm, xb_.data());
      add(*h, xb_.data());
    });
    quant_slot({kK, kV, kQ}, h.get());
  }
  if (after_first_sublist) after_first_sublist();
  {
    auto h = hessian(LinearSlot::kO, any({kO}));
    each_window("o inputs", [&](int s) {
      X->load(s, x_.data());
      rms(x_.data(), L.attn_norm, xb_.data());
      rt_->attention(0, toks_, xb_.data(), att_.data());
      A->store(s, att_.data());
      if (h) add(*h, att_.data());
    });
    if (h) quant_slot({kO}, h.get());
  }
  {
    auto h = hessian(LinearSlot::kGateUp, any({kGate, kUp}));
    each_window("up,gate inputs", [&](int s) {
      X->load(s, x_.data());
      A->load(s, att_.data());
      ops::linear(L.wo, att_.data(), T_, tmp_.data(), pool());
      for (int t = 0; t < T_; ++t) ops::add(x_.data() + size_t(t) * d, tmp_.data() + size_t(t) * d, d);
      X->store(s, x_.data());
      if (h) {
        rms(x_.data(), L.ffn_norm, xb_.data());
        add(*h, xb_.data());
      }
    });
    A->release();
    if (h) quant_slot({kUp, kGate}, h.get());
  }
  auto mlp = [&](int s) {  // xb, hg = silu(gate) * up for window s (x_ holds its residual)
    X->load(s, x_.data());
    rms(x_.data(), L.ffn_norm, xb_.data());
    ops::LinearOut gu[2] = {{&L.w_gate, hg_.data()}, {&L.w_up, hu_.data()}};
    ops::linear_multi(gu, 2, xb_.data(), T_, pool());
    pool().parallel_for(T_, 1, [&](int64_t b, int64_t e, int) {
      for (int64_t t = b; t < e; ++t) ops::silu_mul(hg_.data() + t * ffn, hu_.data() + t * ffn, ffn);
    });
  };
  if (auto h = hessian(LinearSlot::kDown, any({kDown}))) {
    each_window("down inputs", [&](int s) {
      mlp(s);
      add(*h, hg_.data());
    });
    quant_slot({kDown}, h.get());
  }
  each_window("layer output", [&](int s) {
    mlp(s);
    ops::linear(L.w_down, hg_.data(), T_, tmp_.data(), pool());
    for (int t = 0; t < T_; ++t) ops::add(x_.data() + size_t(t) * d, tmp_.data() + size_t(t) * d, d);
    X->store(s, x_.data());
  });
  release();
  return res;
}

}  // namespace metharme::quant
