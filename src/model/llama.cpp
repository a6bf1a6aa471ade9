#include "model/llama.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "model/offload.h"
#include "ops/attention.h"
#include "ops/elementwise.h"
#include "util/error.h"

namespace metharme {

namespace {
PageBuffer floats(size_t n) { return PageBuffer(n * sizeof(float)); }
}  // namespace

LlamaRuntime::LlamaRuntime(const ModelWeights& w, const RuntimeOptions& opt)
    : w_(&w), opt_(opt), pool_(opt.n_threads > 0 ? opt.n_threads : default_thread_count()) {
  const LlamaConfig& c = w.config;
  if (opt_.n_ctx <= 0) opt_.n_ctx = std::min(c.max_position_embeddings, 4096);
  opt_.max_batch = std::max(1, opt_.max_batch);
  rope_choice_ = choose_rope(c, opt_.rope, opt_.n_ctx);
  rope_ = ops::RopeTable(rope_choice_.freqs, opt_.n_ctx);
  if (opt_.log_rope && !rope_choice_.summary.empty()) std::fprintf(stderr, "%s\n", rope_choice_.summary.c_str());
  // GPU offload: the offloaded layers keep their KV cache on the device; the CPU cache holds
  // the layers before them only (same layer numbers).
  cpu_layers_ = c.num_hidden_layers;
  if (opt_.gpu_layers != 0 || opt_.gpu_auto) gpu_ = make_gpu_offload(w, opt_, opt_.n_ctx, rope_);
  if (gpu_) cpu_layers_ = gpu_->plan().first_layer;
  LlamaConfig cpu_cfg = c;
  cpu_cfg.num_hidden_layers = cpu_layers_;
  kv_ = KvCache(cpu_cfg, opt_.n_ctx, opt_.n_seq, opt_.kv_type_k, opt_.kv_type_v);
  kv_.set_mirror(gpu_.get());
  group_ = c.num_attention_heads / c.num_key_value_heads;
  const size_t B = size_t(opt_.max_batch);
  x_ = floats(B * size_t(c.hidden_size));
  xb_ = floats(B * size_t(std::max(c.hidden_size, c.q_dim())));
  q_ = floats(B * size_t(c.q_dim()));
  k_ = floats(B * size_t(c.kv_dim()));
  v_ = floats(B * size_t(c.kv_dim()));
  att_ = floats(B * size_t(c.q_dim()));
  hg_ = floats(B * size_t(c.intermediate_size));
  hu_ = floats(B * size_t(c.intermediate_size));
  // Decode attention (ops::attend_group): one work area per thread (64-byte aligned slices).
  decode_work_floats_ = (ops::decode_work_floats(group_, c.head_dim) + 15) / 16 * 16;
  decode_work_ = floats(size_t(pool_.size()) * decode_work_floats_);
  // Flash prefill tiles: one work area per thread (64-byte aligned slices).
  tile_work_floats_ = (ops::prefill_work_floats(ops::prefill_tile_rows(group_) * group_, c.head_dim) + 15) / 16 * 16;
  tile_work_ = floats(size_t(pool_.size()) * tile_work_floats_);
  logits_ = floats(size_t(c.vocab_size));
  logit_rows_.reserve(B);
  eval_batch_.reserve(B);
}

LlamaRuntime::~LlamaRuntime() = default;

template <class F>
void LlamaRuntime::per_token(int n, F&& f) {
  if (n < 4) {
    for (int i = 0; i < n; ++i) f(i);
    return;
  }
  pool_.parallel_for(n, 1, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) f(int(i));
  });
}

void LlamaRuntime::embed(std::span<const BatchToken> tokens, float* x) const {
  const int d = config().hidden_size;
  for (size_t i = 0; i < tokens.size(); ++i) {
    int id = tokens[i].id;
    MH_CHECK(id >= 0 && id < n_vocab(), "token id ", id, " is outside the vocabulary (", n_vocab(), ")");
    tensor_rows_to_f32(w_->embed, id, 1, x + i * size_t(d));
  }
}

void LlamaRuntime::attention(int layer, std::span<const BatchToken> toks, const float* xb, float* att) {
  const LlamaConfig& c = config();
  const LayerWeights& L = w_->layers[size_t(layer)];
  const int n = int(toks.size());
  const int hd = c.head_dim, qd = c.q_dim(), kvd = c.kv_dim();
  float* q = q_.as<float>();
  float* k = k_.as<float>();
  float* v = v_.as<float>();
  if (observer_) observer_->on_input(layer, LinearSlot::kQKV, xb, n, c.hidden_size);
  ops::LinearOut qkv[3] = {{&L.wq, q}, {&L.wk, k}, {&L.wv, v}};
  ops::linear_multi(qkv, 3, xb, n, pool_);
  per_token(n, [&](int i) {
    float* qi = q + size_t(i) * qd;
    float* ki = k + size_t(i) * kvd;
    ops::apply_rope(qi, c.num_attention_heads, rope_, toks[size_t(i)].pos);
    ops::apply_rope(ki, c.num_key_value_heads, rope_, toks[size_t(i)].pos);
    kv_.store(layer, toks[size_t(i)].seq, toks[size_t(i)].pos, ki, v + size_t(i) * kvd);
  });
  // A prefill of one sequence (consecutive positions, any cache type): flash tiles of query rows
  // x the heads of one kv head, in parallel over kv heads x tiles.
  const auto t0 = std::chrono::steady_clock::now();
  bool prefill = n >= ops::kPrefillQueries;
  for (int i = 1; prefill && i < n; ++i)
    prefill = toks[size_t(i)].seq == toks[0].seq && toks[size_t(i)].pos == toks[0].pos + i;
  if (prefill) {
    const int tile = ops::prefill_tile_rows(group_), tiles = (n + tile - 1) / tile;
    const ops::KvSlice kv = kv_.slice(layer, toks[0].seq);
    pool_.run(c.num_key_value_heads * tiles, [&](int task, int thread) {
      const int g = task / tiles, r0 = (task % tiles) * tile;  // kv-head-major: K/V stay in cache
      const size_t off = size_t(r0) * qd + size_t(g) * size_t(group_) * hd;
      ops::attend_prefill_tile(q + off, qd, g, group_, hd, kv, toks[0].pos + r0, std::min(tile, n - r0), att + off, qd,
                               tile_work_.as<float>() + size_t(thread) * tile_work_floats_);
    });
    attn_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return;
  }
  // Otherwise token by token, head-major: consecutive tasks read the same kv head.
  const int n_groups = c.num_key_value_heads;
  pool_.run(n * n_groups, [&](int task, int thread) {
    int i = task % n, g = task / n;
    const BatchToken& t = toks[size_t(i)];
    float* work = decode_work_.as<float>() + size_t(thread) * decode_work_floats_;
    size_t off = size_t(i) * qd + size_t(g) * group_ * hd;
    ops::attend_group(q + off, g, group_, hd, kv_.slice(layer, t.seq), t.pos + 1, att + off, work);
  });
  attn_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void LlamaRuntime::layer_forward(int layer, std::span<const BatchToken> toks, float* x) {
  const LlamaConfig& c = config();
  MH_CHECK(layer >= 0 && layer < cpu_layers_, "layer ", layer, " is not on the CPU (", cpu_layers_, " are)");
  const LayerWeights& L = w_->layers[size_t(layer)];
  const int n = int(toks.size());
  const int d = c.hidden_size, qd = c.q_dim(), ffn = c.intermediate_size;
  const float eps = float(c.rms_norm_eps);
  float* xb = xb_.as<float>();
  float* att = att_.as<float>();
  float* hg = hg_.as<float>();
  float* hu = hu_.as<float>();

  // Attention block.
  per_token(n, [&](int i) { ops::rmsnorm(x + size_t(i) * d, L.attn_norm.data(), eps, d, xb + size_t(i) * d); });
  attention(layer, toks, xb, att);
  if (observer_) observer_->on_input(layer, LinearSlot::kO, att, n, qd);
  ops::linear(L.wo, att, n, xb, pool_);
  per_token(n, [&](int i) { ops::add(x + size_t(i) * d, xb + size_t(i) * d, d); });

  // Feed-forward block.
  per_token(n, [&](int i) { ops::rmsnorm(x + size_t(i) * d, L.ffn_norm.data(), eps, d, xb + size_t(i) * d); });
  if (observer_) observer_->on_input(layer, LinearSlot::kGateUp, xb, n, d);
  ops::LinearOut gu[2] = {{&L.w_gate, hg}, {&L.w_up, hu}};
  ops::linear_multi(gu, 2, xb, n, pool_);
  per_token(n, [&](int i) { ops::silu_mul(hg + size_t(i) * ffn, hu + size_t(i) * ffn, ffn); });
  if (observer_) observer_->on_input(layer, LinearSlot::kDown, hg, n, ffn);
  ops::linear(L.w_down, hg, n, xb, pool_);
  per_token(n, [&](int i) { ops::add(x + size_t(i) * d, xb + size_t(i) * d, d); });
}

void LlamaRuntime::step(std::span<const BatchToken> toks, float* logits) {
  const LlamaConfig& c = config();
  const int d = c.hidden_size;
  for (const BatchToken& t : toks) {
    MH_CHECK(t.seq >= 0 && t.seq < kv_.n_seq(), "sequence ", t.seq, " is outside the KV cache (", kv_.n_seq(),
             " slots)");
    MH_CHECK(t.pos >= 0 && t.pos < kv_.n_ctx(), "position ", t.pos, " is outside the context (", kv_.n_ctx(), ")");
  }
  float* x = x_.as<float>();
  embed(toks, x);
  for (int l = 0; l < cpu_layers_; ++l) layer_forward(l, toks, x);

  logit_rows_.clear();
  for (size_t i = 0; i < toks.size(); ++i)
    if (toks[i].logits) logit_rows_.push_back(int(i));
  if (gpu_) {  // the remaining layers (and maybe the head) on the device
    gpu_->run(toks, x, logit_rows_, logits);
    if (gpu_->plan().head) return;
  }
  if (logit_rows_.empty()) return;
  float* xb = xb_.as<float>();
  const float eps = float(c.rms_norm_eps);
  per_token(int(logit_rows_.size()), [&](int j) {
    ops::rmsnorm(x + size_t(logit_rows_[size_t(j)]) * d, w_->final_norm.data(), eps, d, xb + size_t(j) * d);
  });
  ops::linear(w_->lm_head, xb, int(logit_rows_.size()), logits, pool_);
}

void LlamaRuntime::forward(std::span<const BatchToken> tokens, float* logits) {
  size_t done = 0;
  while (done < tokens.size()) {
    size_t n = std::min(tokens.size() - done, size_t(opt_.max_batch));
    auto part = tokens.subspan(done, n);
    step(part, logits);
    if (logits)
      for (const auto& t : part)
        if (t.logits) logits += n_vocab();
    done += n;
  }
}

const float* LlamaRuntime::eval(std::span<const int> ids, int pos0, int seq) {
  MH_CHECK(!ids.empty(), "eval: no tokens");
  std::vector<BatchToken>& batch = eval_batch_;  // reserved for max_batch: no allocation here
  size_t done = 0;
  while (done < ids.size()) {
    size_t n = std::min(ids.size() - done, size_t(opt_.max_batch));
    batch.clear();
    for (size_t i = 0; i < n; ++i)
      batch.push_back({ids[done + i], int32_t(pos0 + int(done + i)), seq, done + i + 1 == ids.size()});
    step(batch, logits_.as<float>());
    done += n;
  }
  return logits_.as<float>();
}

}  // namespace metharme
