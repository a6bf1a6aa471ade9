// The LLaMA tokenizer: Google's SentencePiece library over the model folder's tokenizer.model.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace metharme {

class Tokenizer {
 public:
  explicit Tokenizer(const std::string& model_path);  // a tokenizer.model file
  // `dir`'s tokenizer.model, or the vocabulary of a GGUF file when `dir` is one.
  static Tokenizer from_folder(const std::string& dir);
  // A GGUF file's tokenizer.ggml.* vocabulary (model "llama") as a SentencePiece model.
  static Tokenizer from_gguf(const std::string& path);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  std::vector<int> encode(std::string_view text, bool add_bos) const;
  std::string decode(const std::vector<int>& ids) const;

  int vocab_size() const;
  int bos() const { return bos_; }
  int eos() const { return eos_; }
  std::string piece(int id) const;     // raw piece ("▁Hello", "<0x0A>")
  float score(int id) const;           // the model's piece score (merge priority)
  bool is_byte(int id) const;
  bool is_control(int id) const;
  bool is_unknown(int id) const;
  int byte_value(int id) const;         // 0..255 for byte pieces, else -1
  // Text of a piece with U+2581 turned into spaces; empty for control tokens.
  const std::string& piece_text(int id) const { return piece_text_[size_t(id)]; }
  // What the model file asks for (GGUF add_bos_token / add_eos_token; tokenizer.model: true, false).
  bool add_bos() const { return add_bos_; }
  bool add_eos() const { return add_eos_; }

 private:
  struct FromProto {};
  Tokenizer(FromProto, const std::string& proto, const std::string& origin);  // serialized ModelProto
  void init_tables();
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::vector<std::string> piece_text_;
  std::vector<int16_t> byte_value_;
  int bos_ = 1, eos_ = 2;
  bool add_bos_ = true, add_eos_ = false;
};

// Turns a stream of token ids into text as it grows, so that the concatenated outputs equal
// Tokenizer::decode of all ids: byte-fallback pieces are held until they complete a UTF-8
// character, and the dummy-prefix space of the very first piece is dropped.
class StreamDecoder {
 public:
  // at_start: the ids begin a text (drop the leading space); false when continuing a prompt.
  explicit StreamDecoder(const Tokenizer& tok, bool at_start = true) : tok_(&tok), at_start_(at_start) {}
  std::string push(int id);  // text that became printable with this token (maybe empty)
  std::string flush();       // pending bytes that never formed a character, as U+FFFD
  void reset(bool at_start);

 private:
  std::string take_valid_prefix(bool final);
  const Tokenizer* tok_;
  std::string pending_;  // bytes from byte pieces not yet forming a full character
  bool at_start_;
};

}  // namespace metharme
