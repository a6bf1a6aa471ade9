// A GGUF file: header, metadata and tensor infos, the llama.* config, the tokenizer.ggml.*
// vocabulary as a SentencePiece model, and dequantization of the first blocks of every tensor.
#include <vector>

#include "formats/ggml_quants.h"
#include "formats/gguf_llama.h"
#include "formats/gguf_reader.h"
#include "fuzz/fuzz_util.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace metharme;
  const std::string path = fuzz::write_input("x.gguf", data, size);
  try {
    GgufFile f(path);
    for (const auto& t : f.tensors()) {
      const int64_t n = std::min<int64_t>(t.numel, 4 * ggml_block_elems(t.type)) / ggml_block_elems(t.type) *
                        ggml_block_elems(t.type);
      std::vector<float> out(static_cast<size_t>(n));
      ggml_dequantize(t.type, t.data, n, out.data());
    }
    try {
      gguf_llama_config(f);
    } catch (const Error&) {
    }
    Tokenizer tok = Tokenizer::from_gguf(path);
    tok.encode("Hello world", true);
  } catch (const Error&) {
  }
  return 0;
}
