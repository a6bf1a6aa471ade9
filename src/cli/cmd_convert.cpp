// metharme convert: any model folder the loader reads -> a Hugging Face safetensors folder.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "cli/command.h"
#include "formats/convert.h"
#include "quant/gguf_export.h"
#include "util/error.h"

namespace metharme::cli {
namespace {

// "5GB", "500MB", "2GiB", "123" (bytes); decimal and binary units, case-insensitive.
uint64_t parse_size(const std::string& s) {
  size_t i = 0;
  while (i < s.size() && (std::isdigit(uint8_t(s[i])) || s[i] == '.')) ++i;
  double v = 0;
  try {
    v = i ? std::stod(s.substr(0, i)) : -1;
  } catch (const std::exception&) {
    v = -1;
  }
  std::string unit;
  for (char c : s.substr(i))
    if (c != ' ') unit.push_back(char(std::tolower(uint8_t(c))));
  double mult = 0;
  const std::pair<const char*, double> units[] = {
      {"", 1}, {"b", 1}, {"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
      {"k", 1e3}, {"m", 1e6}, {"g", 1e9}, {"kib", 1024.0}, {"mib", 1048576.0}, {"gib", 1073741824.0},
      {"tib", 1099511627776.0}};
  for (const auto& [name, m] : units)
    if (unit == name) mult = m;
  if (v <= 0 || mult == 0 || v * mult < 1)
    fail("--shard-size: cannot read '", s, "' as a size (examples: 5GB, 500MB, 2GiB)");
  return uint64_t(v * mult);
}

struct Args {
  std::string model, out, dtype, shard_size = "5GB", to = "safetensors", type = "auto";
  bool force = false, quiet = false;
};

// --to gguf: writes the file and prints, per tensor, its type, whether GPTQ codes were kept, and
// the largest weight error against the source.
int write_gguf(const Args& a) {
  if (!a.dtype.empty()) fail("convert: --dtype applies to --to safetensors; use --type with --to gguf");
  if (std::filesystem::exists(a.out) && !a.force) fail(a.out, ": exists (pass --force to replace it)");
  GgufExportOptions o;
  o.type = a.type;
  o.quiet = a.quiet;
  auto t0 = std::chrono::steady_clock::now();
  GgufExportReport r = export_gguf(a.model, a.out, o);
  double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  size_t kept = 0, exact = 0;
  double worst = 0;
  for (const auto& t : r.tensors) {
    kept += t.codes_kept, exact += t.exact, worst = std::max(worst, t.max_err);
    if (!a.quiet)
      std::printf("%-28s %-5s %-12s max weight error %.3g\n", t.name.c_str(), t.type.c_str(),
                  t.exact ? "exact" : t.codes_kept ? "codes kept" : "requantized", t.max_err);
  }
  std::printf("wrote %s: %zu tensors, %.1f MB, %zu exact, %zu with GPTQ codes kept, largest weight error %.3g, %.2f s\n",
              a.out.c_str(), r.tensors.size(), double(r.bytes) / 1e6, exact, kept, worst, sec);
  return 0;
}

Registrar reg("convert", "Write any model folder the loader reads (safetensors, PyTorch .bin/.pt) as a safetensors folder, or a GPTQ or 16-bit folder as one GGUF file (--to gguf)",
              [](CLI::App& app) {
  auto a = std::make_shared<Args>();
  app.add_option("-m,--model", a->model, "Input model folder")->required();
  app.add_option("-o,--out", a->out, "Output folder (must not exist unless --force)")->required();
  app.add_option("--dtype", a->dtype, "Convert float tensors to f16, bf16 or f32 (default: keep each tensor's type)")
      ->check(CLI::IsMember({"f16", "bf16", "f32"}));
  app.add_option("--shard-size", a->shard_size, "Largest shard (tensor bytes), e.g. 5GB, 500MB, 2GiB (default 5GB)");
  app.add_flag("--force", a->force, "Replace the output folder if it exists");
  app.add_option("--to", a->to, "Output format: safetensors (a folder, default) or gguf (one file for llama.cpp/KoboldCpp)")
      ->check(CLI::IsMember({"safetensors", "gguf"}));
  app.add_option("--type", a->type,
                 "GGUF tensor type: auto (GPTQ codes kept as Q4_1 where exact), q4_1, q4_k, q4_k_m (llama.cpp's Q4_K_M "
                 "mix: Q6_K output and half of attn_v/ffn_down), q8_0, f16, f32 (default auto)");
  app.add_flag("-q,--quiet", a->quiet, "No progress bar");
  return [a] {
    if (a->to == "gguf") return write_gguf(*a);
    if (a->type != "auto") fail("convert: --type applies to --to gguf only");
    ConvertOptions o;
    if (a->dtype == "f16") o.dtype = DType::F16;
    if (a->dtype == "bf16") o.dtype = DType::BF16;
    if (a->dtype == "f32") o.dtype = DType::F32;
    o.max_shard_bytes = parse_size(a->shard_size);
    o.force = a->force;
    o.progress = !a->quiet;
    auto t0 = std::chrono::steady_clock::now();
    ConvertResult r = convert_to_safetensors(a->model, a->out, o);
    double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("wrote %s: %zu tensors in %zu shard%s, %.1f MB", a->out.c_str(), r.tensors, r.shards,
                r.shards == 1 ? "" : "s", double(r.bytes) / 1e6);
    if (o.dtype) std::printf(" (%zu tensors converted to %s)", r.converted, a->dtype.c_str());
    std::printf(", %zu files, %.2f s (%.0f MB/s)\n", r.files.size(), sec, double(r.bytes) / 1e6 / std::max(sec, 1e-9));
    return 0;
  };
});

}  // namespace
}  // namespace metharme::cli
