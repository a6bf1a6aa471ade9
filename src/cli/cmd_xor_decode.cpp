// metharme xor-decode: rebuild an XOR-encoded release (e.g. Metharme 7B) from its base model.
#include <chrono>
#include <cstdio>

#include "cli/command.h"
#include "formats/xor_release.h"

namespace metharme::cli {
namespace {

struct Args {
  std::string base, payload, out;
  bool force = false, quiet = false;
};

Registrar reg("xor-decode", "Rebuild XOR-encoded weights (payload XOR base), verifying the release's checksums",
              [](CLI::App& app) {
  auto a = std::make_shared<Args>();
  app.add_option("--base", a->base, "Folder with the base model's files (e.g. LLaMA-7B in HF format)")->required();
  app.add_option("--xor", a->payload, "Folder with the XOR payload files")->required();
  app.add_option("-o,--out", a->out, "Output folder (must not exist unless --force)")->required();
  app.add_flag("--force", a->force, "Replace the output folder if it exists");
  app.add_flag("-q,--quiet", a->quiet, "No progress bar");
  return [a] {
    XorDecodeOptions o;
    o.force = a->force;
    o.progress = !a->quiet;
    o.report = [](const std::string& line) {
      std::printf("%s\n", line.c_str());
      std::fflush(stdout);
    };
    auto t0 = std::chrono::steady_clock::now();
    XorDecodeResult r = xor_decode(a->base, a->payload, a->out, o);
    double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    uint64_t bytes = 0;
    for (const auto& f : r.files) bytes += f.bytes;
    std::printf("decoded %zu files (%.1f MB) into %s in %.2f s: %zu verified, %zu not listed in a checksum file%s\n",
                r.files.size(), double(bytes) / 1e6, a->out.c_str(), sec, r.verified, r.unlisted,
                r.wrote_manifest ? "; wrote checksums.sha256" : "");
    return 0;
  };
});

}  // namespace
}  // namespace metharme::cli
