// Opening and converting PyTorch checkpoints: a synthetic slice of LLaMA-7B (the fp16 embedding
// plus one decoder layer, 650 MB) written as a torch.save zip and as the legacy layout.
//   ./build/bench/torch_checkpoint_bench [--benchmark_filter=...]
// The files go to $TMPDIR (default /tmp) and are removed at exit.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>

#include "formats/convert.h"
#include "formats/tensor_store.h"
#include "support/torch_writer.h"

namespace metharme {
namespace {

namespace fs = std::filesystem;

struct Slice {
  std::string root, zip_dir, legacy_dir;
  uint64_t bytes = 0;
  Slice() {
    root = (fs::temp_directory_path() / ("metharme-bench-" + std::to_string(::getpid()))).string();
    zip_dir = root + "/zip";
    legacy_dir = root + "/legacy";
    fs::create_directories(zip_dir);
    fs::create_directories(legacy_dir);
    const int64_t d = 4096, ffn = 11008, vocab = 32000;
    std::vector<std::pair<std::string, std::vector<int64_t>>> shapes = {{"model.embed_tokens.weight", {vocab, d}}};
    for (const char* p : {"q_proj", "k_proj", "v_proj", "o_proj"})
      shapes.push_back({std::string("model.layers.0.self_attn.") + p + ".weight", {d, d}});
    shapes.push_back({"model.layers.0.mlp.gate_proj.weight", {ffn, d}});
    shapes.push_back({"model.layers.0.mlp.up_proj.weight", {ffn, d}});
    shapes.push_back({"model.layers.0.mlp.down_proj.weight", {d, ffn}});
    std::vector<test::FakeTensor> ts;
    std::vector<std::pair<std::string, std::string>> storages;
    std::vector<test::LegacyStorage> legacy;
    uint16_t h = 0x3c00;
    for (size_t i = 0; i < shapes.size(); ++i) {
      int64_t n = shapes[i].second[0] * shapes[i].second[1];
      ts.push_back({shapes[i].first, "HalfStorage", std::to_string(i), n, 0, shapes[i].second, {}});
      std::string data(size_t(n) * 2, '\0');
      for (size_t k = 0; k < data.size(); k += 2, h = uint16_t(h * 31 + 7) & 0x7bff) std::memcpy(&data[k], &h, 2);
      bytes += data.size();
      legacy.push_back({std::to_string(i), n, data});
      storages.push_back({std::to_string(i), std::move(data)});
    }
    test::write_bytes(zip_dir + "/pytorch_model.bin", test::torch_zip(test::state_dict_pickle(ts), storages));
    storages.clear();
    test::write_bytes(legacy_dir + "/pytorch_model.bin", test::torch_legacy(test::state_dict_pickle(ts, true), legacy));
  }
  ~Slice() {
    std::error_code ec;
    fs::remove_all(root, ec);
  }
};

Slice& slice() {
  static Slice s;
  return s;
}

void BM_OpenTorchZip(benchmark::State& st) {
  for (auto _ : st) benchmark::DoNotOptimize(TensorStore::open_folder(slice().zip_dir).size());
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(slice().bytes));
}

void BM_OpenTorchLegacy(benchmark::State& st) {  // unaligned storages: every tensor is copied
  for (auto _ : st) benchmark::DoNotOptimize(TensorStore::open_folder(slice().legacy_dir).size());
  st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(slice().bytes));
}

void BM_Convert(benchmark::State& st, std::optional<DType> to) {
  ConvertOptions o;
  o.progress = false;
  o.force = true;
  o.dtype = to;
  const std::string out = slice().root + "/out";
  uint64_t written = 0;
  for (auto _ : st) written += convert_to_safetensors(slice().zip_dir, out, o).bytes;
  st.SetBytesProcessed(int64_t(written));
}

// Rates use wall time: converting is bound by disk writes (each shard is fsynced), not CPU.
BENCHMARK(BM_OpenTorchZip)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_OpenTorchLegacy)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Convert, same_dtype_f16, std::nullopt)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
BENCHMARK_CAPTURE(BM_Convert, f16_to_bf16, DType::BF16)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
BENCHMARK_CAPTURE(BM_Convert, f16_to_f32, DType::F32)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();

}  // namespace
}  // namespace metharme

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  metharme::slice();  // write the checkpoints before any timing starts
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
