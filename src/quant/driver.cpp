#include "quant/driver.h"

#include <cblas.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "formats/hf_config.h"
#include "formats/npy.h"
#include "formats/safetensors.h"
#include "formats/tensor_store.h"
#include "quant/layer_quant.h"
#include "quant/output.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/progress.h"
#include "util/sysinfo.h"

namespace metharme::quant {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr int kStateVersion = 1;
constexpr double kF32ActBudget = 2.0 * (1ull << 30);  // bytes of f32 activations kept before switching to f16

// Test hook: METHARME_QUANT_TEST_KILL="<layer>:mid" or "<layer>:end" sends this process SIGKILL
// there (mid: after the layer's first sub-list is quantized; end: after its checkpoint).
void test_kill_point(int layer, const char* where) {
  const char* env = std::getenv("METHARME_QUANT_TEST_KILL");
  if (env && cat(layer, ":", where) == env) std::raise(SIGKILL);
}

std::string layer_file(const std::string& partial, int l) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "/layer-%05d.safetensors", l);
  return partial + buf;
}
std::string hidden_file(const std::string& partial, int l) { return partial + cat("/hidden-", l, ".bin"); }

uint64_t file_size_or_zero(const std::string& p) {
  std::error_code ec;
  auto n = fs::file_size(p, ec);
  return ec ? 0 : uint64_t(n);
}

void validate(const QuantizeOptions& o) {
  const QuantConfig& q = o.qc;
  if (q.bits != 2 && q.bits != 4 && q.bits != 8) fail("--wbits ", q.bits, " is not supported (2, 4 or 8)");
  if (q.group_size == 0 || q.group_size < -1) fail("--groupsize ", q.group_size, " must be positive or -1");
  if (q.static_groups && q.group_size <= 0) fail("--static-groups needs --groupsize");
  if (!(q.percdamp >= 0 && q.percdamp <= 1)) fail("--percdamp ", q.percdamp, " must be in [0, 1]");
  if (o.method == QuantizeOptions::Method::kRtn && (q.act_order || o.true_sequential || q.static_groups))
    fail("--act-order, --true-sequential and --static-groups apply to --method gptq only");
  if (o.format == PackFormat::kG1 && q.act_order && q.group_size > 0 && !q.static_groups)
    fail("--format g1 has no g_idx, so --act-order with --groupsize needs --static-groups (or use --format g2)");
  if (o.act_dtype != "auto" && o.act_dtype != "f32" && o.act_dtype != "f16")
    fail("--act-dtype must be auto, f32 or f16, not '", o.act_dtype, "'");
  if (o.out_dir.empty()) fail("no output folder (-o)");
  if (o.method == QuantizeOptions::Method::kGptq && o.calib.path.empty())
    fail("no calibration text: pass --calib FILE (GPTQ needs calibration data; --method rtn does not)");
}

json settings_json(const QuantizeOptions& o, const TensorStore& store) {
  json files = json::array();
  for (const auto& f : store.files()) files.push_back({{"name", fs::path(f).filename().string()}, {"size", file_size_or_zero(f)}});
  json s = {
      {"model", fs::absolute(o.model_dir).lexically_normal().string()},
      {"model_files", files},
      {"method", o.method == QuantizeOptions::Method::kGptq ? "gptq" : "rtn"},
      {"bits", o.qc.bits},
      {"group_size", o.qc.group_size},
      {"sym", o.qc.sym},
      {"act_order", o.qc.act_order},
      {"static_groups", o.qc.static_groups},
      {"true_sequential", o.true_sequential},
      {"percdamp", o.qc.percdamp},
      {"block_size", o.qc.block_size},
      {"format", pack_format_name(o.format)},
      {"act_dtype", o.act_dtype},
  };
  if (o.method == QuantizeOptions::Method::kGptq) {
    s["calib"] = {{"path", fs::absolute(o.calib.path).lexically_normal().string()},
                  {"size", file_size_or_zero(o.calib.path)},
                  {"format", calib_format_name(o.calib.format)},
                  {"nsamples", o.calib.nsamples_given ? o.calib.nsamples : -1},
                  {"seqlen", o.calib.seqlen_given ? o.calib.seqlen : -1},
                  {"seed", o.calib.seed}};
  }
  return s;
}

void write_state(const std::string& partial, const json& state) {
  write_file_atomic(partial + "/state.json", state.dump(1) + "\n");
}

void write_hidden(const std::string& path, ActStore& X) {
  AtomicFile f(path);
  f.write(X.bytes(), X.size_bytes());
  f.commit();
}

void read_hidden(const std::string& path, ActStore& X) {
  MH_CHECK(file_size_or_zero(path) == X.size_bytes(), path, ": checkpoint of the calibration activations is missing or ",
           "has the wrong size (", file_size_or_zero(path), " bytes, expected ", X.size_bytes(), ")");
  std::FILE* f = std::fopen(path.c_str(), "rb");
  MH_CHECK(f, path, ": cannot open");
  size_t n = std::fread(X.bytes(), 1, X.size_bytes(), f);
  std::fclose(f);
  MH_CHECK(n == X.size_bytes(), path, ": short read");
}

// quantization_order counts over the whole model, as GPTQ-for-LLaMa's log does (7 per layer).
json module_log(const LinearOutcome& r, int layer) {
  return {{"loss", r.q.loss},
          {"rel_weight_error_fro", r.rel_weight_error},
          {"quantization_order", layer * kNumLinears + r.order},
          {"shape", {r.q.n_out, r.q.n_in}},
          {"groups", r.q.n_groups},
          {"dead_columns", r.q.dead_columns},
          {"damp", r.q.damp},
          {"damp_retries", r.q.damp_retries}};
}

}  // namespace

void run_quantize(const QuantizeOptions& opt_in) {
  QuantizeOptions o = opt_in;
  validate(o);
  const bool gptq = o.method == QuantizeOptions::Method::kGptq;
  while (o.out_dir.size() > 1 && o.out_dir.back() == '/') o.out_dir.pop_back();
  const std::string out = o.out_dir, partial = out + ".partial";

  // Everything that can be wrong with the input is checked before anything is written.
  if (fs::exists(out) && !o.force) fail(out, " already exists (pass --force to replace it)");
  if (fs::exists(partial) && !o.resume && !o.force)
    fail(partial, " holds an interrupted run: pass --resume to continue it or --force to start over");
  if (o.resume && !fs::exists(fs::path(partial) / "state.json"))
    fail("--resume: nothing to resume (", partial, "/state.json does not exist)");
  if (fs::absolute(out).lexically_normal() == fs::absolute(o.model_dir).lexically_normal())
    fail("the output folder must differ from the model folder");

  const LlamaConfig cfg = load_llama_config(o.model_dir);
  const TensorStore store = TensorStore::open_folder(o.model_dir);
  for (const auto& n : store.names())
    if (n.size() > 8 && n.compare(n.size() - 8, 8, ".qweight") == 0)
      fail(o.model_dir, ": the model is already quantized (has ", n, "); quantize a 16-bit model");
  const int L = cfg.num_hidden_layers;

  // Which linears can be packed; groups must divide the input size of those that are.
  std::array<bool, kNumLinears> quantize{};
  for (int i = 0; i < kNumLinears; ++i) {
    const int N = linear_n_out(cfg, i), K = linear_n_in(cfg, i);
    quantize[size_t(i)] = packable(N, K);
    if (quantize[size_t(i)] && o.qc.group_size > 0 && K % o.qc.group_size != 0)
      fail("--groupsize ", o.qc.group_size, " does not divide the input size ", K, " of ", linear_name(i));
  }

  if (std::none_of(quantize.begin(), quantize.end(), [](bool b) { return b; }))
    fail(o.model_dir, ": nothing to quantize: no linear has both dimensions a multiple of 32");

  json settings = settings_json(o, store);
  json state;
  if (o.resume) {
    try {
      state = json::parse(read_text_file(partial + "/state.json"));
    } catch (const json::exception&) {
      fail(partial, "/state.json is corrupt; delete ", partial, " and start over");
    }
    MH_CHECK(state.value("version", 0) == kStateVersion, partial, "/state.json is from another version");
    for (auto it = settings.begin(); it != settings.end(); ++it)
      if (state["settings"].value(it.key(), json()) != it.value())
        fail("--resume: setting '", it.key(), "' was ", state["settings"].value(it.key(), json()).dump(), ", now ",
             it.value().dump(), " (resume with the same options, or --force to start over)");
    // The Cholesky steps run on that many OpenBLAS threads, and their rounding depends on it:
    // resuming with another count would not give the bytes of an uninterrupted run.
    const json saved = state.value("threads", json());
    MH_CHECK(saved.is_number_integer() && saved.get<int64_t>() >= 1 && saved.get<int64_t>() <= 65536, partial,
             "/state.json: 'threads' is not a thread count");
    const int threads = int(saved.get<int64_t>());
    if (o.threads > 0 && o.threads != threads)
      std::fprintf(stderr,
                   "quantize: --resume continues with the interrupted run's %d threads, not -t %d (the result "
                   "depends on the thread count)\n",
                   threads, o.threads);
    o.threads = threads;
  }
  if (o.threads <= 0) o.threads = default_thread_count();

  // Calibration windows (fresh: from the data; resume: the saved ones).
  CalibSet calib;
  if (gptq) {
    if (o.resume) {
      NpyArray a = read_npy(partial + "/calibration_ids.npy");
      MH_CHECK(a.shape.size() == 2, partial, "/calibration_ids.npy is not 2-D");
      auto v = a.to_i64();
      calib.nsamples = int(a.shape[0]);
      calib.seqlen = int(a.shape[1]);
      calib.ids.assign(v.begin(), v.end());
      calib.description = state.value("calibration", "");
    } else {
      Tokenizer tok = Tokenizer::from_folder(o.model_dir);
      calib = load_calibration(o.calib, tok, cfg.vocab_size);
    }
    if (calib.seqlen > cfg.max_position_embeddings)
      fail("--seqlen ", calib.seqlen, " is beyond the model's max_position_embeddings (", cfg.max_position_embeddings, ")");
  }

  // Activations between layers: f32 unless that would be large.
  const int S = calib.nsamples, T = calib.seqlen;
  const double act_bytes =
      double(S) * T * (cfg.hidden_size + (o.true_sequential ? cfg.q_dim() : 0)) * 4.0;
  const bool f16_acts = o.act_dtype == "f16" || (o.act_dtype == "auto" && act_bytes > kF32ActBudget);

  if (o.force && !o.resume && fs::exists(partial)) fs::remove_all(partial);
  if (!o.resume) {
    std::error_code ec;
    if (!fs::create_directory(partial, ec) || ec)
      fail("cannot create ", partial, ": ", ec ? ec.message() : "it exists");
    state = {{"version", kStateVersion},          {"settings", settings},
             {"threads", o.threads},              {"layers_done", 0},
             {"calibration", calib.description}, {"modules", json::object()}};
    if (gptq)
      write_npy(partial + "/calibration_ids.npy", DType::I32, {S, T}, calib.ids.data());
    write_state(partial, state);
  }
  int done = state.value("layers_done", 0);
  MH_CHECK(done >= 0 && done <= L, partial, "/state.json: layers_done ", done, " is out of range");

  openblas_set_num_threads(1);  // our pool parallelizes; Cholesky steps raise it temporarily
  LayerQuantizer lq(cfg, store, gptq ? T : 1, o.threads);
  ActStore X, A;
  if (gptq) {
    X = ActStore(S, T, cfg.hidden_size, f16_acts);
    if (o.true_sequential) {
      A = ActStore(S, T, cfg.q_dim(), f16_acts);
      A.release();  // allocated by each layer while it needs it
    }
    if (done == 0) {
      std::vector<float> x(size_t(T) * size_t(cfg.hidden_size));
      for (int s = 0; s < S; ++s) {
        lq.embed(calib.sample(s), x.data());
        X.store(s, x.data());
      }
      const TensorView& e = store.get("model.embed_tokens.weight");
      release_pages(e.data, e.nbytes);
    } else if (done < L) {
      read_hidden(hidden_file(partial, done), X);
    }
  }

  LayerJobOptions jo;
  jo.method = gptq ? LayerJobOptions::Method::kGptq : LayerJobOptions::Method::kRtn;
  jo.qc = o.qc;
  jo.qc.zero_at_least_one = stores_zero_minus_one(o.format);
  jo.true_sequential = o.true_sequential;
  // Later layers see W' with the fp32 scales, as in GPTQ-for-LLaMa (the checkpoint rounds them to
  // fp16; the difference is ~5e-4 of a weight, and this way runs reproduce the reference's).
  jo.fp16_scales = false;
  jo.quantize = quantize;
  int per_layer = 0;
  for (bool b : quantize) per_layer += b;

  const bool tty = ::isatty(STDERR_FILENO) != 0;
  if (o.progress)
    std::fprintf(stderr, "quantize: %s -> %s: %d layers, %d of 7 linears per layer, %s, %d threads%s\n",
                 o.model_dir.c_str(), out.c_str(), L, per_layer, gptq ? calib.description.c_str() : "rtn", o.threads,
                 done > 0 ? cat(", resuming after layer ", done).c_str() : "");
  // Counts this run's linears only, so that rate and ETA stay right after a resume.
  const int64_t todo = int64_t(L - done) * per_layer;
  Progress prog("quantize", todo, "linear", o.progress);
  const auto t_start = std::chrono::steady_clock::now();
  for (int l = done; l < L; ++l) {
    const auto t0 = std::chrono::steady_clock::now();
    auto res = lq.run(
        l, jo, gptq ? &X : nullptr, o.true_sequential ? &A : nullptr,
        [&](const std::string& what, int n) {
          // Never "done" before finish(): the last layer's output pass still follows its linears.
          prog.update(std::min<int64_t>(int64_t(l - done) * per_layer + n, todo - 1), cat("layer ", l + 1, "/", L, " ", what));
        },
        [&] { test_kill_point(l, "mid"); });
    // Checkpoint: packed tensors, then the activations, then the state that points at them.
    SafetensorsWriter w(layer_file(partial, l));
    std::vector<OwnedTensor> tensors;
    for (int i = 0; i < kNumLinears; ++i) {
      if (!res[size_t(i)].quantized) continue;
      auto t = pack_linear(res[size_t(i)].q, cat("model.layers.", l, ".", linear_name(i)), o.format, o.qc.bits);
      for (auto& x : t) tensors.push_back(std::move(x));
    }
    for (const auto& t : tensors) w.declare(t.name, t.dtype, t.shape);
    for (const auto& t : tensors) w.write_tensor(t.name, t.data.data());
    w.commit();
    if (gptq && l + 1 < L) write_hidden(hidden_file(partial, l + 1), X);
    std::string summary;
    for (int i = 0; i < kNumLinears; ++i) {
      if (!res[size_t(i)].quantized) continue;
      state["modules"][cat("model.layers.", l, ".", linear_name(i))] = module_log(res[size_t(i)], l);
      const std::string name = linear_name(i);
      summary += cat(" ", name.substr(name.find('.') + 1), " ", res[size_t(i)].q.loss);
    }
    state["layers_done"] = l + 1;
    write_state(partial, state);
    std::error_code ec;
    fs::remove(hidden_file(partial, l), ec);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (l + 1 < L) prog.update(int64_t(l + 1 - done) * per_layer, cat("layer ", l + 1, "/", L, " done"));
    if (o.progress && !tty) {
      const auto& tm = lq.timing();
      std::fprintf(stderr, "quantize: layer %d/%d done in %s (passes %s, hessians %s, solves %s); loss%s\n", l + 1, L,
                   Progress::format_duration(secs).c_str(), Progress::format_duration(tm.forward).c_str(),
                   Progress::format_duration(tm.hessian).c_str(), Progress::format_duration(tm.solve).c_str(),
                   summary.c_str());
    }
    test_kill_point(l, "end");
  }
  if (todo > 0) prog.update(todo, cat(L, " layers"));
  prog.finish(cat(L, " layers"));

  // The finished folder: written inside the partial folder, then renamed into place.
  OutputSpec spec;
  spec.model_dir = o.model_dir;
  spec.config = &cfg;
  spec.source = &store;
  for (int l = 0; l < L; ++l) spec.layer_files.push_back(layer_file(partial, l));
  spec.quantized = quantize;
  spec.format = o.format;
  spec.qc = o.qc;
  spec.true_sequential = o.true_sequential;
  json unq = json::array();
  for (int i = 0; i < kNumLinears; ++i)
    if (!quantize[size_t(i)])
      unq.push_back(cat(linear_name(i), ": shape [", linear_n_out(cfg, i), ", ", linear_n_in(cfg, i),
                        "] is not a multiple of 32 in both dimensions; kept in the source dtype"));
  double total = 0;
  for (auto it = state["modules"].begin(); it != state["modules"].end(); ++it) total += it.value()["loss"].get<double>();
  spec.log = {{"tool", std::string("metharme quantize ") + METHARME_VERSION},
              {"settings", settings},
              {"calibration", state.value("calibration", "")},
              {"loss_meaning", gptq ? "sum over the matrix of (w - q)^2 / Hinv_cc^2 / 2 (GPTQ-for-LLaMa's printed error)"
                                    : "sum over the matrix of (w - q)^2"},
              {"total_loss", total},
              {"unquantized", unq},
              {"per_module", state["modules"]}};
  const std::string staged = partial + "/out";
  if (fs::exists(staged)) fs::remove_all(staged);
  write_model_folder(staged, spec);
  std::string old;
  if (fs::exists(out)) {
    old = cat(out, ".old-", ::getpid());
    fs::rename(out, old);
  }
  fs::rename(staged, out);
  if (!old.empty()) fs::remove_all(old);
  fs::remove_all(partial);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  if (o.progress)
    std::fprintf(stderr, "quantize: wrote %s (%.1f MB model.safetensors) in %s, peak RSS %.2f GiB; total loss %.6g\n",
                 out.c_str(), double(file_size_or_zero(out + "/model.safetensors")) / 1e6,
                 Progress::format_duration(secs).c_str(), double(peak_rss_bytes()) / double(1ull << 30), total);
}

}  // namespace metharme::quant
