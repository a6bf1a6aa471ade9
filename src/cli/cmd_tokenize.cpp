// metharme tokenize: print the token ids of a text.
#include <cstdio>
#include <filesystem>

#include "cli/command.h"
#include "formats/gguf_reader.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace metharme::cli {
namespace {

struct Args {
  std::string model, text;
  bool no_bos = false, pieces = false;
};

Registrar reg("tokenize", "Print the token ids of TEXT, space-separated, on one line", [](CLI::App& app) {
  auto a = std::make_shared<Args>();
  app.add_option("-m,--model", a->model, "Model folder (or a tokenizer.model file)")->required();
  app.add_flag("--no-bos", a->no_bos, "Do not prepend the BOS token");
  app.add_flag("--pieces", a->pieces, "Print id:piece pairs instead of bare ids");
  app.add_option("text", a->text, "Text to tokenize")->required();
  return [a] {
    namespace fs = std::filesystem;
    if (!fs::exists(a->model)) fail(a->model, ": no such model folder or tokenizer file");
    Tokenizer tok = fs::is_directory(a->model) || is_gguf_file(a->model) ? Tokenizer::from_folder(a->model) : Tokenizer(a->model);
    auto ids = tok.encode(a->text, !a->no_bos);
    std::string line;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i) line += ' ';
      line += std::to_string(ids[i]);
      if (a->pieces) line += ":" + tok.piece(ids[i]);
    }
    std::printf("%s\n", line.c_str());
    return 0;
  };
});

}  // namespace
}  // namespace metharme::cli
