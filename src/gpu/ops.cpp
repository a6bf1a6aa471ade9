#include "gpu/ops.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/i8_linear.h"
#include "ops/q4_linear.h"
#include "util/error.h"
#include "util/half.h"

namespace metharme::gpu {

namespace {

int wtype_code(kernels::WType t) { return t == kernels::WType::kF32 ? 0 : t == kernels::WType::kF16 ? 1 : 2; }

// Groups of 64 invocations covering n elements.
uint32_t groups64(size_t n) { return uint32_t((n + 63) / 64); }

// Up to this many rows (decode, small batches) int4 runs q4_matmul (or its _sg build).
constexpr int kDecodeRows = 8;

}  // namespace

bool linear_supported(const ops::Linear& l, std::string* why) {
  if (l.kind == ops::Linear::Kind::kDense || l.kind == ops::Linear::Kind::kI8) return true;
  if (l.kind == ops::Linear::Kind::kQ4) {
    // Offsets are added per 32 input rows in the shader, which needs the identity row order.
    const bool offsets = !l.q4->offsets.empty() || l.q4->mat.ksc;  // Q4_K's mins become offsets
    if (!offsets || (l.q4->perm.empty() && l.q4->n_in % 32 == 0)) return true;
    if (why) *why = "int4 with per-block offsets and a row permutation";
    return false;
  }
  if (why) *why = l.describe() + " weights";
  return false;
}

size_t linear_device_bytes(const ops::Linear& l) {
  if (l.kind == ops::Linear::Kind::kDense) return size_t(l.n_out) * size_t(l.n_in) * kernels::wtype_size(l.dense.type);
  if (l.kind == ops::Linear::Kind::kI8) {
    const kernels::I8Matrix& m = l.i8->mat;
    const size_t cols = size_t(m.n_tiles) * kernels::kI8TileCols;
    return cols * size_t(m.kp) + cols * size_t(m.kp / m.sb) * 4 + (m.adds || m.kmin ? cols * size_t(m.kp / 32) * 4 : 0);
  }
  if (l.kind != ops::Linear::Kind::kQ4) return l.weight_bytes();  // not offloadable (linear_supported says why)
  const ops::Q4Weight& q = *l.q4;
  const size_t cells = size_t(q.mat.n_tiles) * size_t(q.mat.n_groups) * kernels::kQ4TileCols;
  const size_t offsets = q.mat.ksc ? size_t(q.n_out) * size_t(q.mat.n_groups) : q.offsets.size();
  return q.qs.size() + cells * 5 + size_t(q.mat.kp) * 4 + size_t(q.n_out) * 4 + offsets * 4;
}

namespace {

void upload_i8(Context& ctx, const ops::I8Weight& q, const std::string& name, DeviceLinear& d) {
  const kernels::I8Matrix& m = q.mat;
  d.kind = DeviceLinear::Kind::kI8;
  d.kp = m.kp;
  d.sb = m.sb;
  const size_t cols = size_t(m.n_tiles) * kernels::kI8TileCols, nsc = cols * size_t(m.kp / m.sb);
  d.qs = ctx.alloc(cols * size_t(m.kp), name + " codes");
  ctx.upload(d.qs, m.qs, cols * size_t(m.kp));
  const ops::I8Scales sc = ops::i8_scales(q);  // fp32 scales and adds, whatever the host layout
  d.scales = ctx.alloc(nsc * 4, name + " scales");
  ctx.upload(d.scales, sc.scales.data(), nsc * 4);
  d.has_adds = !sc.adds.empty();
  const size_t nadd = d.has_adds ? cols * size_t(m.kp / 32) : 1;
  d.adds = ctx.alloc(nadd * 4, name + " adds");
  if (d.has_adds) ctx.upload(d.adds, sc.adds.data(), nadd * 4);
}

}  // namespace

DeviceLinear upload_linear(Context& ctx, const ops::Linear& l, const std::string& name) {
  std::string why;
  MH_CHECK(linear_supported(l, &why), name, ": cannot run on the GPU (", why, ")");
  DeviceLinear d;
  d.n = l.n_out;
  d.k = l.n_in;
  if (l.kind == ops::Linear::Kind::kDense) {
    const size_t es = kernels::wtype_size(l.dense.type), row = size_t(l.n_in) * es;
    d.wtype = wtype_code(l.dense.type);
    d.w = ctx.alloc(size_t(l.n_out) * row, name);
    const auto* src = static_cast<const uint8_t*>(l.dense.data);
    if (size_t(l.dense.ld) == size_t(l.n_in)) {
      ctx.upload(d.w, src, size_t(l.n_out) * row);
    } else {  // strided rows (a slice of a fused tensor): packed on the way
      std::vector<uint8_t> packed(size_t(l.n_out) * row);
      for (int n = 0; n < l.n_out; ++n)
        std::memcpy(&packed[size_t(n) * row], src + size_t(n) * size_t(l.dense.ld) * es, row);
      ctx.upload(d.w, packed.data(), packed.size());
    }
    return d;
  }
  if (l.kind == ops::Linear::Kind::kI8) {
    upload_i8(ctx, *l.i8, name, d);
    return d;
  }
  const ops::Q4Weight& q = *l.q4;
  const kernels::Q4Matrix& m = q.mat;
  d.kind = DeviceLinear::Kind::kQ4;
  d.kp = m.kp;
  d.gs = m.gs;
  d.n_groups = m.n_groups;
  const size_t cells = size_t(m.n_tiles) * size_t(m.n_groups) * kernels::kQ4TileCols;
  const ops::Q4Groups grp = ops::q4_groups(q);  // the shaders' form of any layout (Q4_K's included)
  std::vector<int32_t> perm(size_t(m.kp));
  for (int j = 0; j < m.kp; ++j) perm[size_t(j)] = q.perm.empty() ? (j < q.n_in ? j : -1) : q.perm[size_t(j)];
  d.qs = ctx.alloc(q.qs.size(), name + " codes");
  ctx.upload(d.qs, m.qs, size_t(m.n_tiles) * m.tile_qs_bytes());
  d.scales = ctx.alloc(cells * 4, name + " scales");
  ctx.upload(d.scales, grp.scales.data(), cells * 4);
  d.zeros = ctx.alloc(cells, name + " zeros");
  ctx.upload(d.zeros, grp.zeros.data(), cells);
  d.perm = ctx.alloc(perm.size() * 4, name + " row order");
  ctx.upload(d.perm, perm.data(), perm.size() * 4);
  d.has_bias = !q.bias.empty();
  d.bias = ctx.alloc(size_t(q.n_out) * 4, name + " bias");
  if (d.has_bias) ctx.upload(d.bias, q.bias.data(), size_t(q.n_out) * 4);
  d.n_blocks = grp.offsets.empty() ? 0 : q.n_in / 32;
  d.offsets = ctx.alloc(std::max<size_t>(grp.offsets.size(), 1) * 4, name + " offsets");
  if (d.n_blocks) ctx.upload(d.offsets, grp.offsets.data(), grp.offsets.size() * 4);
  return d;
}

void free_linear(Context& ctx, DeviceLinear& l) {
  for (Buffer* b : {&l.qs, &l.scales, &l.zeros, &l.perm, &l.bias, &l.offsets, &l.adds, &l.w}) ctx.free(*b);
}

void matmul(Context& ctx, const DeviceLinear& w, Buffer x, Buffer y, int M) {
  // Workgroups of 8 columns x 4 rows (shaders/*_matmul.comp; device.cpp swaps in their _sg builds),
  // or for int4 / int8-code prefill with subgroups 8 columns x 64 rows (shaders/*_prefill_sg.comp).
  const bool rows64 = M > kDecodeRows && ctx.info().subgroup_prefill;
  const uint32_t row_blocks = uint32_t(rows64 ? (M + 63) / 64 : (M + 3) / 4), col_blocks = uint32_t((w.n + 7) / 8);
  if (w.kind == DeviceLinear::Kind::kQ4) {
    const int32_t pc[9] = {w.n, w.kp, w.gs, w.n_groups, M, w.k, w.n, w.has_bias ? 1 : 0, w.n_blocks};
    ctx.dispatch(rows64 ? Shader::kQ4PrefillSg : Shader::kQ4Matmul,
                 {w.qs, w.scales, w.zeros, w.perm, w.bias, x, y, w.offsets}, pc, sizeof pc, col_blocks, row_blocks);
  } else if (w.kind == DeviceLinear::Kind::kI8) {
    const int32_t pc[8] = {w.n, w.kp, w.sb, w.k, M, w.k, w.n, w.has_adds ? 1 : 0};
    ctx.dispatch(rows64 ? Shader::kI8PrefillSg : Shader::kI8Matmul, {w.qs, w.scales, w.adds, x, y}, pc, sizeof pc,
                 col_blocks, row_blocks);
  } else {
    const int32_t pc[7] = {w.n, w.k, M, w.k, w.k, w.n, w.wtype};
    ctx.dispatch(Shader::kDenseMatmul, {w.w, x, y}, pc, sizeof pc, col_blocks, uint32_t((M + 3) / 4));
  }
}

void rmsnorm(Context& ctx, Buffer x, Buffer w, Buffer out, int M, int d, float eps) {
  struct {
    int32_t M, d, ldx, ldo;
    float eps;
  } pc{M, d, d, d, eps};
  ctx.dispatch(Shader::kRmsnorm, {x, w, out}, &pc, sizeof pc, uint32_t(M));
}

void rope(Context& ctx, Buffer x, Buffer tok, Buffer cos, Buffer sin, int M, int n_heads, int hd) {
  const int32_t pc[4] = {M, n_heads * hd, n_heads, hd};
  ctx.dispatch(Shader::kRope, {x, tok, cos, sin}, pc, sizeof pc, groups64(size_t(M) * n_heads * (hd / 2)));
}

void kv_store(Context& ctx, const DeviceKv& kv, Buffer k, Buffer v, Buffer tok, int M) {
  const int32_t pc[8] = {M,
                         kv.kv_heads,
                         kv.hd,
                         kv.n_ctx,
                         int(kv.tk),
                         int(kv.tv),
                         int32_t(DeviceKv::row_stride(kv.tk, kv.hd)),
                         int32_t(DeviceKv::row_stride(kv.tv, kv.hd))};
  ctx.dispatch(Shader::kKvStore, {k, v, kv.k, kv.v, tok}, pc, sizeof pc, groups64(size_t(M) * kv.kv_heads));
}

namespace {

struct AttnPush {
  int32_t M, n_heads, kv_heads, hd, n_ctx, tk, tv, rsk, rsv, ld;
  float scale;
};

AttnPush attn_push(const DeviceKv& kv, int M, int n_heads, float scale) {
  return {M,
          n_heads,
          kv.kv_heads,
          kv.hd,
          kv.n_ctx,
          int32_t(kv.tk),
          int32_t(kv.tv),
          int32_t(DeviceKv::row_stride(kv.tk, kv.hd)),
          int32_t(DeviceKv::row_stride(kv.tv, kv.hd)),
          n_heads * kv.hd,
          scale};
}

}  // namespace

void attention(Context& ctx, const DeviceKv& kv, Buffer q, Buffer tok, Buffer out, int M, int n_heads, float scale) {
  if (M >= kTiledRows && kv.hd <= 128)
    attention_tiled(ctx, kv, q, tok, out, M, n_heads, scale);
  else
    attention_rows(ctx, kv, q, tok, out, M, n_heads, scale);
}

void attention_rows(Context& ctx, const DeviceKv& kv, Buffer q, Buffer tok, Buffer out, int M, int n_heads,
                    float scale) {
  MH_CHECK(kv.hd <= 256 && kv.hd % 2 == 0, "GPU attention: head_dim ", kv.hd, " (even and at most 256)");
  const AttnPush pc = attn_push(kv, M, n_heads, scale);
  ctx.dispatch(Shader::kAttention, {q, kv.k, kv.v, tok, out}, &pc, sizeof pc, uint32_t(M) * uint32_t(n_heads));
}

void attention_tiled(Context& ctx, const DeviceKv& kv, Buffer q, Buffer tok, Buffer out, int M, int n_heads,
                     float scale) {
  MH_CHECK(kv.hd <= 128 && kv.hd % 2 == 0, "GPU tiled attention: head_dim ", kv.hd, " (even and at most 128)");
  const AttnPush pc = attn_push(kv, M, n_heads, scale);
  const uint32_t tiles = uint32_t((M + 7) / 8);
  ctx.dispatch(Shader::kAttentionTiled, {q, kv.k, kv.v, tok, out}, &pc, sizeof pc, tiles * uint32_t(n_heads));
}

void silu_mul(Context& ctx, Buffer a, Buffer b, int n) {
  const int32_t pc[1] = {n};
  ctx.dispatch(Shader::kSiluMul, {a, b}, pc, sizeof pc, groups64(size_t(n)));
}

void add(Context& ctx, Buffer y, Buffer x, int n) {
  const int32_t pc[1] = {n};
  ctx.dispatch(Shader::kAdd, {y, x}, pc, sizeof pc, groups64(size_t(n)));
}

}  // namespace metharme::gpu
