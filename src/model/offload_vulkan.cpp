// GPU offload on Vulkan: the plan (what fits where) and the device half of the forward pass,
// which reads like LlamaRuntime::layer_forward with gpu:: calls in place of ops:: calls.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "gpu/device.h"
#include "gpu/ops.h"
#include "gpu/selftest.h"
#include "kernels/kv.h"
#include "model/offload.h"
#include "util/error.h"

namespace metharme {

namespace {

constexpr size_t kHeadChunkBytes = size_t(16) << 20;  // logits rows computed per head pass

size_t layer_weight_bytes(const LayerWeights& L, int d) {
  size_t b = 2 * size_t(d) * 4;
  for (const ops::Linear* l : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down})
    b += gpu::linear_device_bytes(*l);
  return b;
}

size_t kv_layer_bytes(const LlamaConfig& c, int n_ctx, int n_seq, const RuntimeOptions& opt) {
  const size_t rows = size_t(n_seq) * c.num_key_value_heads * size_t(n_ctx);
  return rows *
         (gpu::DeviceKv::row_stride(opt.kv_type_k, c.head_dim) + gpu::DeviceKv::row_stride(opt.kv_type_v, c.head_dim));
}

int head_rows(const LlamaConfig& c, int batch, uint64_t max_buffer) {
  const size_t row = size_t(c.vocab_size) * 4;
  return int(std::clamp<size_t>(std::min<size_t>(kHeadChunkBytes, max_buffer) / row, 1, size_t(batch)));
}

size_t scratch_bytes(const LlamaConfig& c, int n_ctx, int batch, int rows) {
  const size_t B = size_t(batch), d = size_t(c.hidden_size), qd = size_t(c.q_dim()), kvd = size_t(c.kv_dim());
  const size_t acts = B * (d + std::max(d, qd) + 2 * qd + 2 * kvd + 2 * size_t(c.intermediate_size)) + B * 2;
  const size_t rope = size_t(n_ctx) * size_t(c.head_dim);  // cos and sin, hd/2 each per position
  return (acts + rope + size_t(rows) * (d + size_t(c.vocab_size))) * 4;
}

// The memory the plan may use: the largest device-local heap, less 10% for the driver and
// other programs. METHARME_VK_HEAP_BYTES (a documented test hook) pretends a smaller heap.
uint64_t heap_budget(const gpu::DeviceInfo& info) {
  uint64_t heap = 0;
  for (uint64_t h : info.device_local_heaps) heap = std::max(heap, h);
  if (const char* e = std::getenv("METHARME_VK_HEAP_BYTES")) heap = std::strtoull(e, nullptr, 10);
  return heap / 10 * 9;
}

std::string mib(size_t b) { return cat(double(b * 10 / (1 << 20)) / 10, " MiB"); }

void check_supported(const ModelWeights& w, const OffloadPlan& p) {
  std::string why;
  const char* names[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  for (int l = p.first_layer; l < p.n_layers; ++l) {
    const LayerWeights& L = w.layers[size_t(l)];
    int i = 0;
    for (const ops::Linear* lin : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) {
      MH_CHECK(gpu::linear_supported(*lin, &why), "GPU offload: layer ", l, " ", names[i], " cannot run on the GPU (",
               why, "); use fewer --gpu-layers");
      ++i;
    }
  }
  MH_CHECK(!p.head || gpu::linear_supported(w.lm_head, &why), "GPU offload: lm_head cannot run on the GPU (", why,
           "); use --gpu-layers ", p.n_layers, " or fewer");
  MH_CHECK(w.config.head_dim % 2 == 0 && w.config.head_dim <= 256, "GPU offload: head_dim ", w.config.head_dim,
           " (the attention shader takes even sizes up to 256)");
}

OffloadPlan make_plan(const ModelWeights& w, const RuntimeOptions& opt, int n_ctx, const gpu::DeviceInfo& info) {
  const LlamaConfig& c = w.config;
  const int L = c.num_hidden_layers;
  const int want = opt.gpu_layers == 0 && opt.gpu_auto ? kGpuAll : opt.gpu_layers;
  OffloadPlan p;
  p.n_layers = L;
  p.first_layer = L - std::min(want, L);
  p.head = want > L;
  const int rows = head_rows(c, opt.max_batch, info.max_buffer_bytes);
  p.scratch_bytes = scratch_bytes(c, n_ctx, opt.max_batch, rows);
  const uint64_t budget = heap_budget(info);
  for (;;) {
    p.weight_bytes = p.head ? gpu::linear_device_bytes(w.lm_head) + size_t(c.hidden_size) * 4 : 0;
    p.kv_bytes = 0;
    for (int l = p.first_layer; l < L; ++l) {
      p.weight_bytes += layer_weight_bytes(w.layers[size_t(l)], c.hidden_size);
      p.kv_bytes += kv_layer_bytes(c, n_ctx, opt.n_seq, opt);
    }
    if (p.total() <= budget || (p.first_layer == L && !p.head)) break;
    MH_CHECK(opt.gpu_auto, "GPU offload: ", p.describe(), " = ", mib(p.total()), ", more than the ", mib(budget),
             " usable on '", info.name,
             "' (90% of its largest device-local heap); use --gpu-layers auto, fewer "
             "layers, a smaller context (-c) or a smaller --kv-type (f16, q8, q4)");
    if (p.head)
      p.head = false;  // auto: the head goes first (it is read once per token, like one layer)
    else
      ++p.first_layer;
  }
  return p;
}

struct DeviceLayer {
  gpu::DeviceLinear wq, wk, wv, wo, gate, up, down;
  gpu::Buffer attn_norm, ffn_norm;
  gpu::DeviceKv kv;
};

class VulkanOffload final : public GpuOffload {
 public:
  VulkanOffload(std::unique_ptr<gpu::Context> ctx, const ModelWeights& w, const RuntimeOptions& opt, int n_ctx,
                const OffloadPlan& plan, const ops::RopeTable& rope);
  ~VulkanOffload() override;
  const OffloadPlan& plan() const override { return plan_; }
  void run(std::span<const BatchToken> toks, float* x, std::span<const int> logit_rows, float* logits) override;
  void shift(int seq, int src, int dst, int count, const ops::RopeTable& rope) override;
  void copy_prefix(int from, int to, int count) override;

 private:
  void record_layer(const DeviceLayer& L, int n);
  void record_head(std::span<const int> rows);
  gpu::Buffer floats(size_t n, const char* what) { return ctx_->alloc(n * 4, what); }

  std::unique_ptr<gpu::Context> ctx_;
  LlamaConfig c_;
  OffloadPlan plan_;
  int batch_ = 0, rows_ = 0, n_ctx_ = 0;
  std::vector<DeviceLayer> layers_;  // layers [first_layer, n_layers)
  gpu::DeviceLinear head_;
  gpu::Buffer final_norm_, x_, xb_, q_, k_, v_, att_, hg_, hu_, tok_, cos_, sin_, xh_, logits_;
  std::vector<int32_t> tok_host_;  // [batch][2]: position, sequence
  // METHARME_VK_FAIL_SEQ=S:C (a documented test hook): the next C steps that include sequence S
  // report a lost device, counting from the step METHARME_VK_FAIL_SUBMIT names (default: the first).
  int fail_seq_ = -1, fail_left_ = 0;
  long steps_ = 0, fail_from_ = 1;
};

VulkanOffload::VulkanOffload(std::unique_ptr<gpu::Context> ctx, const ModelWeights& w, const RuntimeOptions& opt,
                             int n_ctx, const OffloadPlan& plan, const ops::RopeTable& rope)
    : ctx_(std::move(ctx)), c_(w.config), plan_(plan), batch_(opt.max_batch), n_ctx_(n_ctx) {
  const LlamaConfig& c = c_;
  const size_t B = size_t(batch_), d = size_t(c.hidden_size);
  auto upload_floats = [&](const std::vector<float>& v, const char* what) {
    gpu::Buffer b = floats(v.size(), what);
    ctx_->upload(b, v.data(), v.size() * 4);
    return b;
  };
  for (int l = plan.first_layer; l < plan.n_layers; ++l) {
    const LayerWeights& L = w.layers[size_t(l)];
    const std::string p = cat("layer ", l, " ");
    DeviceLayer D;
    D.wq = gpu::upload_linear(*ctx_, L.wq, p + "q_proj");
    D.wk = gpu::upload_linear(*ctx_, L.wk, p + "k_proj");
    D.wv = gpu::upload_linear(*ctx_, L.wv, p + "v_proj");
    D.wo = gpu::upload_linear(*ctx_, L.wo, p + "o_proj");
    D.gate = gpu::upload_linear(*ctx_, L.w_gate, p + "gate_proj");
    D.up = gpu::upload_linear(*ctx_, L.w_up, p + "up_proj");
    D.down = gpu::upload_linear(*ctx_, L.w_down, p + "down_proj");
    D.attn_norm = upload_floats(L.attn_norm, "attention norm");
    D.ffn_norm = upload_floats(L.ffn_norm, "ffn norm");
    D.kv.kv_heads = c.num_key_value_heads;
    D.kv.hd = c.head_dim;
    D.kv.n_ctx = n_ctx;
    D.kv.n_seq = opt.n_seq;
    D.kv.tk = opt.kv_type_k;
    D.kv.tv = opt.kv_type_v;
    D.kv.k = ctx_->alloc(D.kv.k_bytes(), p + "K cache");
    D.kv.v = ctx_->alloc(D.kv.v_bytes(), p + "V cache");
    layers_.push_back(D);
  }
  x_ = floats(B * d, "hidden states");
  xb_ = floats(B * std::max(d, size_t(c.q_dim())), "normed states");
  q_ = floats(B * size_t(c.q_dim()), "queries");
  k_ = floats(B * size_t(c.kv_dim()), "keys");
  v_ = floats(B * size_t(c.kv_dim()), "values");
  att_ = floats(B * size_t(c.q_dim()), "attention output");
  hg_ = floats(B * size_t(c.intermediate_size), "ffn gate");
  hu_ = floats(B * size_t(c.intermediate_size), "ffn up");
  tok_ = ctx_->alloc(B * 8, "token positions");
  const size_t half = size_t(c.head_dim / 2) * size_t(n_ctx);
  cos_ = floats(half, "rope cos");
  sin_ = floats(half, "rope sin");
  ctx_->upload(cos_, rope.cos(0), half * 4);
  ctx_->upload(sin_, rope.sin(0), half * 4);
  size_t staging = B * (d * 4 + 8) + 64;
  if (plan.head) {
    rows_ = head_rows(c, batch_, ctx_->info().max_buffer_bytes);
    head_ = gpu::upload_linear(*ctx_, w.lm_head, "lm_head");
    final_norm_ = upload_floats(w.final_norm, "final norm");
    xh_ = floats(size_t(rows_) * d, "head input");
    logits_ = floats(size_t(rows_) * size_t(c.vocab_size), "logits");
    staging += size_t(rows_) * size_t(c.vocab_size) * 4;
  }
  ctx_->reserve_staging(staging);
  tok_host_.resize(B * 2);
  const char* fs = std::getenv("METHARME_VK_FAIL_SEQ");
  if (fs && std::sscanf(fs, "%d:%d", &fail_seq_, &fail_left_) == 2) {
    if (const char* f = std::getenv("METHARME_VK_FAIL_SUBMIT")) fail_from_ = std::atol(f);
  } else {
    fail_seq_ = -1;
    ctx_->arm_fail_hook();  // METHARME_VK_FAIL_SUBMIT counts forward steps only
  }
}

VulkanOffload::~VulkanOffload() = default;  // the Context frees every buffer

// One layer, as LlamaRuntime::layer_forward: x [n][d] in x_, updated in place.
void VulkanOffload::record_layer(const DeviceLayer& L, int n) {
  gpu::Context& g = *ctx_;
  const LlamaConfig& c = c_;
  const int d = c.hidden_size, H = c.num_attention_heads, KVH = c.num_key_value_heads, hd = c.head_dim;
  const float eps = float(c.rms_norm_eps), scale = float(1.0 / std::sqrt(double(hd)));

  // Attention block.
  gpu::rmsnorm(g, x_, L.attn_norm, xb_, n, d, eps);
  gpu::matmul(g, L.wq, xb_, q_, n);
  gpu::matmul(g, L.wk, xb_, k_, n);
  gpu::matmul(g, L.wv, xb_, v_, n);
  gpu::rope(g, q_, tok_, cos_, sin_, n, H, hd);
  gpu::rope(g, k_, tok_, cos_, sin_, n, KVH, hd);
  gpu::kv_store(g, L.kv, k_, v_, tok_, n);
  gpu::attention(g, L.kv, q_, tok_, att_, n, H, scale);
  gpu::matmul(g, L.wo, att_, xb_, n);
  gpu::add(g, x_, xb_, n * d);

  // Feed-forward block.
  gpu::rmsnorm(g, x_, L.ffn_norm, xb_, n, d, eps);
  gpu::matmul(g, L.gate, xb_, hg_, n);
  gpu::matmul(g, L.up, xb_, hu_, n);
  gpu::silu_mul(g, hg_, hu_, n * c.intermediate_size);
  gpu::matmul(g, L.down, hg_, xb_, n);
  gpu::add(g, x_, xb_, n * d);
}

// Final norm and lm_head for `rows` (rows of x_, at most rows_); logits_ gets [rows][vocab].
void VulkanOffload::record_head(std::span<const int> rows) {
  const size_t d4 = size_t(c_.hidden_size) * 4;
  for (size_t j = 0; j < rows.size(); ++j) ctx_->copy(x_, size_t(rows[j]) * d4, xh_, j * d4, d4);
  gpu::rmsnorm(*ctx_, xh_, final_norm_, xb_, int(rows.size()), c_.hidden_size, float(c_.rms_norm_eps));
  gpu::matmul(*ctx_, head_, xb_, logits_, int(rows.size()));
}

void VulkanOffload::run(std::span<const BatchToken> toks, float* x, std::span<const int> logit_rows, float* logits) {
  const int n = int(toks.size());
  MH_CHECK(n > 0 && n <= batch_, "GPU offload: batch of ", n, " tokens (at most ", batch_, ")");
  if (fail_seq_ >= 0 && ++steps_ >= fail_from_ && fail_left_ > 0 &&
      std::any_of(toks.begin(), toks.end(), [&](const BatchToken& t) { return t.seq == fail_seq_; })) {
    --fail_left_;
    fail("Vulkan: VK_ERROR_DEVICE_LOST (simulated for sequence ", fail_seq_, ")");
  }
  for (int i = 0; i < n; ++i) {
    tok_host_[size_t(2 * i)] = toks[size_t(i)].pos;
    tok_host_[size_t(2 * i) + 1] = toks[size_t(i)].seq;
  }
  const size_t xbytes = size_t(n) * size_t(c_.hidden_size) * 4, vocab = size_t(c_.vocab_size);
  ctx_->begin();
  ctx_->stage_in(tok_, tok_host_.data(), size_t(n) * 8);
  ctx_->stage_in(x_, x, xbytes);
  for (const DeviceLayer& L : layers_) record_layer(L, n);
  if (!plan_.head) {
    ctx_->stage_out(x_, x, xbytes);
    ctx_->submit();
    return;
  }
  // Logits in passes of rows_ rows; the first pass shares the layers' command buffer.
  size_t done = 0;
  do {
    const size_t r = std::min(logit_rows.size() - done, size_t(rows_));
    if (done > 0) ctx_->begin();
    if (r > 0) {
      record_head(logit_rows.subspan(done, r));
      ctx_->stage_out(logits_, logits + done * vocab, r * vocab * 4);
    }
    ctx_->submit();
    done += r;
  } while (done < logit_rows.size());
}

// Context shift of one sequence (rare: when a chat outgrows the context): the sequence's block of
// each layer comes to the host, is moved and turned exactly as KvCache::shift does (keys decoded,
// turned, encoded again by the CPU's kernels; values moved as bytes), and goes back.
void VulkanOffload::shift(int seq, int src, int dst, int count, const ops::RopeTable& rope) {
  const int kvh = c_.num_key_value_heads, hd = c_.head_dim;
  const auto& kern = kernels::kv_kernels();
  std::vector<float> tmp(size_t(count) * hd);
  for (DeviceLayer& L : layers_) {
    const size_t rsk = gpu::DeviceKv::row_stride(L.kv.tk, hd), rsv = gpu::DeviceKv::row_stride(L.kv.tv, hd);
    const size_t kb_bytes = size_t(kvh) * n_ctx_ * rsk, vb_bytes = size_t(kvh) * n_ctx_ * rsv;
    const size_t krb = kernels::kv_row_bytes(L.kv.tk, hd);
    std::vector<uint8_t> kb(kb_bytes), vb(vb_bytes), packed(size_t(count) * krb);
    ctx_->download(L.kv.k, kb.data(), kb_bytes, size_t(seq) * kb_bytes);
    ctx_->download(L.kv.v, vb.data(), vb_bytes, size_t(seq) * vb_bytes);
    for (int h = 0; h < kvh; ++h) {
      uint8_t* khead = kb.data() + size_t(h) * n_ctx_ * rsk;
      for (int r = 0; r < count; ++r) std::memcpy(&packed[size_t(r) * krb], khead + size_t(src + r) * rsk, krb);
      kern.to_f32(L.kv.tk, packed.data(), hd, count, tmp.data());
      ops::apply_rope_delta(tmp.data(), count, rope, dst - src);
      kern.from_f32(L.kv.tk, tmp.data(), hd, count, packed.data());
      for (int r = 0; r < count; ++r) std::memcpy(khead + size_t(dst + r) * rsk, &packed[size_t(r) * krb], krb);
      uint8_t* vhead = vb.data() + size_t(h) * n_ctx_ * rsv;
      std::memmove(vhead + size_t(dst) * rsv, vhead + size_t(src) * rsv, size_t(count) * rsv);
    }
    ctx_->upload(L.kv.k, kb.data(), kb_bytes, size_t(seq) * kb_bytes);
    ctx_->upload(L.kv.v, vb.data(), vb_bytes, size_t(seq) * vb_bytes);
  }
}

void VulkanOffload::copy_prefix(int from, int to, int count) {
  const int kvh = c_.num_key_value_heads, hd = c_.head_dim;
  ctx_->begin();
  for (DeviceLayer& L : layers_) {
    for (const auto& [buf, rs] : {std::pair{L.kv.k, gpu::DeviceKv::row_stride(L.kv.tk, hd)},
                                  std::pair{L.kv.v, gpu::DeviceKv::row_stride(L.kv.tv, hd)}}) {
      const size_t head = size_t(n_ctx_) * rs, bytes = size_t(count) * rs;
      for (int h = 0; h < kvh; ++h)
        ctx_->copy(buf, (size_t(from) * kvh + h) * head, buf, (size_t(to) * kvh + h) * head, bytes);
    }
  }
  ctx_->submit();
}

}  // namespace

std::unique_ptr<GpuOffload> make_gpu_offload(const ModelWeights& w, const RuntimeOptions& opt, int n_ctx,
                                             const ops::RopeTable& rope) {
  // No loader or no device: one line, and the CPU runs everything. A device number that does not
  // exist among those present is the user's mistake and an error.
  std::string why;
  const auto devices = gpu::list_devices(&why);
  if (devices.empty()) {
    std::fprintf(stderr, "GPU offload: Vulkan: %s; running on the CPU\n", why.c_str());
    return nullptr;
  }
  MH_CHECK(opt.gpu_device >= 0 && size_t(opt.gpu_device) < devices.size(), "--gpu-device ", opt.gpu_device, ": there ",
           devices.size() == 1 ? "is 1 Vulkan device" : cat("are ", devices.size(), " Vulkan devices"),
           " (`metharme info --gpu` lists them)");
  std::unique_ptr<gpu::Context> ctx = gpu::Context::open(opt.gpu_device);
  std::string bad;
  try {
    bad = gpu::device_self_test(*ctx);
  } catch (const Error& e) {
    bad = e.what();
  }
  if (!bad.empty()) {
    std::fprintf(stderr, "GPU offload: warning: '%s' failed the known-answer self-test (%s); running on the CPU\n",
                 ctx->info().name.c_str(), bad.c_str());
    return nullptr;
  }
  const OffloadPlan plan = make_plan(w, opt, n_ctx, ctx->info());
  if (plan.first_layer == plan.n_layers && !plan.head) {
    std::fprintf(stderr, "GPU offload: not even one layer fits '%s'; running on the CPU\n", ctx->info().name.c_str());
    return nullptr;
  }
  check_supported(w, plan);
  std::fprintf(stderr, "GPU offload on '%s': %s\n", ctx->info().name.c_str(), plan.describe().c_str());
  return std::make_unique<VulkanOffload>(std::move(ctx), w, opt, n_ctx, plan, rope);
}

}  // namespace metharme
