#include "model/gptq_loader.h"

#include <algorithm>

#include "ops/q4_linear.h"
#include "util/error.h"
#include "util/mapped_file.h"
#include "util/thread_pool.h"

namespace metharme {

namespace {

using json = nlohmann::json;

kernels::WType float_type(const TensorView& t) {
  switch (t.dtype) {
    case DType::F32: return kernels::WType::kF32;
    case DType::F16: return kernels::WType::kF16;
    case DType::BF16: return kernels::WType::kBF16;
    default: fail("tensor '", t.name, "' has dtype ", dtype_name(t.dtype), ", expected F16, BF16 or F32");
  }
}

void expect_shape(const TensorView& t, const std::vector<int64_t>& want) {
  if (t.shape != want) fail("tensor '", t.name, "' has shape ", shape_str(t.shape), ", expected ", shape_str(want));
}

void expect_int32(const TensorView& t) {
  if (t.dtype != DType::I32) fail("tensor '", t.name, "' has dtype ", dtype_name(t.dtype), ", expected I32");
}

// A [N] vector, also accepted as [N, 1] (G0 files).
void expect_vector(const TensorView& t, int64_t n) {
  if (t.shape != std::vector<int64_t>{n} && t.shape != std::vector<int64_t>{n, 1})
    fail("tensor '", t.name, "' has shape ", shape_str(t.shape), ", expected [", n, "] or [", n, ", 1]");
}

// An integer setting from the quantization config (any of `keys`), or `def`.
int qc_int(const json& qc, std::initializer_list<const char*> keys, int def) {
  if (!qc.is_object()) return def;
  for (const char* k : keys) {
    if (!qc.contains(k) || qc[k].is_null()) continue;
    if (!qc[k].is_number_integer()) fail("quantization config field '", k, "' must be an integer, got ", qc[k].dump());
    return qc[k].get<int>();
  }
  return def;
}

std::string qc_str(const json& qc, const char* key) {
  if (qc.is_object() && qc.contains(key) && qc[key].is_string()) return qc[key].get<std::string>();
  return "";
}

// Bit width implied by qweight rows for K input rows (GPTQ packs K*bits/32 words per column).
int bits_from_rows(int64_t rows, int64_t K) {
  if (rows == (K + 7) / 8) return 4;
  for (int b : {2, 3, 8})
    if (rows * 32 == K * b) return b;
  return 0;
}

// Group size when no config gives one: ceil(K / gs) == G; prefer a power of two, then a multiple of 32.
int infer_group_size(int64_t K, int64_t G) {
  if (G == 1) return int(K);
  if (K % G == 0) return int(K / G);
  const int64_t lo = (K + G - 1) / G, hi = (K - 1) / (G - 1);  // gs with ceil(K/gs) == G
  int64_t best = 0;
  for (int64_t gs = lo; gs <= hi && !best; ++gs)
    if ((gs & (gs - 1)) == 0) best = gs;
  for (int64_t gs = lo; gs <= hi && !best; ++gs)
    if (gs % 32 == 0) best = gs;
  if (!best && lo <= hi) best = lo;
  if (!best) fail("qzeros/scales have ", G, " groups, which no group size gives for ", K, " input rows");
  return int(best);
}

// "gptq_v2" stores zero points without the -1 of GPTQ-for-LLaMa and AutoGPTQ.
bool is_gptq_v2(const LlamaConfig& c, const TensorStore& store) {
  std::string f = qc_str(c.quantization_config, "checkpoint_format");
  if (f.empty()) {
    auto it = store.metadata().find("gptq_checkpoint_format");
    if (it != store.metadata().end()) f = it->second;
  }
  if (!f.empty() && f != "gptq" && f != "gptq_v2")
    fail("quantization checkpoint_format '", f, "' is not supported (expected gptq or gptq_v2)");
  return f == "gptq_v2";
}

}  // namespace

bool has_gptq_linear(const TensorStore& store, const std::string& prefix) {
  return store.find(prefix + ".qweight") != nullptr;
}

ops::Linear load_gptq_linear(const TensorStore& store, const LlamaConfig& config, const std::string& prefix,
                             int n_out, int n_in, std::vector<std::string>& used) {
  const json& qc = config.quantization_config;
  const std::string method = qc_str(qc, "quant_method");
  if (!method.empty() && method != "gptq")
    fail(prefix, ": quantization method '", method, "' is not supported (only GPTQ)");
  const int64_t N = n_out, K = n_in;
  std::vector<const TensorView*> read;
  auto take = [&](const std::string& suffix) -> const TensorView* {
    const TensorView* t = store.find(prefix + suffix);
    if (t) read.push_back(t);
    return t;
  };
  const TensorView& qweight = *take(".qweight");
  expect_int32(qweight);
  if (qweight.rank() != 2) fail("tensor '", qweight.name, "' has shape ", shape_str(qweight.shape), ", expected rank 2");
  if (qweight.dim(1) != N) {
    if (qweight.dim(1) * 8 == N)
      fail("tensor '", qweight.name, "' is packed along the output features (shape ", shape_str(qweight.shape),
           "): AWQ-style packing is not GPTQ");
    fail("tensor '", qweight.name, "' has shape ", shape_str(qweight.shape), ", expected [", (K + 7) / 8, ", ", N, "]");
  }
  const int bits = bits_from_rows(qweight.dim(0), K);
  const int cfg_bits = qc_int(qc, {"bits", "w_bit"}, 0);
  if (!bits)
    fail("tensor '", qweight.name, "' has ", qweight.dim(0), " rows, which fits no GPTQ bit width for ", K,
         " input features");
  if (cfg_bits && cfg_bits != bits)
    fail("tensor '", qweight.name, "' holds ", bits, "-bit codes but the quantization config says bits = ", cfg_bits);
  if (bits != 4) fail("tensor '", qweight.name, "': ", bits, "-bit GPTQ weights are not supported (only 4-bit)");

  ops::GptqSource src;
  src.name = prefix;
  src.n = n_out;
  src.k = n_in;
  src.qweight = reinterpret_cast<const uint32_t*>(qweight.data);
  const TensorView* qzeros = take(".qzeros");
  const TensorView* zeros = qzeros ? nullptr : take(".zeros");
  const TensorView* scales = take(".scales");
  if (!scales) fail("missing tensor '", prefix, ".scales' (GPTQ qweight without scales)");
  src.scales = scales->data;
  src.scales_type = float_type(*scales);
  if (qzeros) {
    expect_int32(*qzeros);
    if (qzeros->rank() != 2 || qzeros->dim(1) != (N + 7) / 8)
      fail("tensor '", qzeros->name, "' has shape ", shape_str(qzeros->shape), ", expected [groups, ", (N + 7) / 8, "]");
    const int64_t G = qzeros->dim(0);
    if (G < 1 || G > K) fail("tensor '", qzeros->name, "' has ", G, " groups for ", K, " input rows");
    if (scales->rank() != 2 || scales->dim(1) != N)
      fail("tensor '", scales->name, "' has shape ", shape_str(scales->shape), ", expected [", G, ", ", N, "]");
    if (scales->dim(0) != G)
      fail("tensor '", scales->name, "' has ", scales->dim(0), " groups but '", qzeros->name, "' has ", G);
    src.n_groups = int(G);
    src.qzeros = reinterpret_cast<const uint32_t*>(qzeros->data);
    src.zero_offset = is_gptq_v2(config, store) ? 0 : 1;
    int gs = qc_int(qc, {"group_size", "q_group_size"}, 0);
    if (gs == -1 || gs >= K) gs = int(K);
    if (gs > 0) {
      if ((K + gs - 1) / gs != G)
        fail("tensor '", scales->name, "' has ", G, " groups, but group_size ", gs, " gives ", (K + gs - 1) / gs,
             " for ", K, " input rows");
    } else if (gs == 0) {
      gs = infer_group_size(K, G);
    } else {
      fail("quantization config group_size ", gs, " is invalid");
    }
    src.group_size = gs;
    if (const TensorView* g_idx = take(".g_idx")) {
      expect_int32(*g_idx);
      expect_shape(*g_idx, {K});
      // A g_idx equal to k / group_size (or all zero without groups) needs no reordering.
      const int32_t* gi = g_idx->as<int32_t>();
      bool trivial = true;
      for (int64_t k = 0; k < K && trivial; ++k) trivial = gi[k] == k / gs;
      if (!trivial) src.g_idx = gi;
    }
  } else if (zeros) {
    expect_vector(*zeros, N);
    expect_vector(*scales, N);
    src.n_groups = 1;
    src.group_size = int(K);
    src.zeros_g0 = zeros->data;
    src.zeros_g0_type = float_type(*zeros);
  } else {
    fail("missing tensor '", prefix, ".qzeros' (or '.zeros' of an old GPTQ file) beside '", qweight.name, "'");
  }
  if (const TensorView* bias = take(".bias")) {
    expect_vector(*bias, N);
    src.bias = bias->data;
    src.bias_type = float_type(*bias);
  }
  for (const TensorView* t : read) prefault_mapped_pages(t->data, t->nbytes);
  ops::Linear l = ops::make_q4_linear(ops::q4_repack(src, default_thread_count()));
  for (const TensorView* t : read) {
    used.push_back(t->name);
    drop_mapped_pages(t->data, t->nbytes);
  }
  return l;
}

}  // namespace metharme
