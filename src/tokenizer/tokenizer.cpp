#include "tokenizer/tokenizer.h"

#include <sentencepiece_processor.h>

#include <filesystem>

#include "formats/gguf_reader.h"
#include "tokenizer/sp_model.h"
#include "util/error.h"

namespace metharme {

namespace {
const std::string kMetaSpace = "\xE2\x96\x81";  // U+2581
const std::string kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Length of the UTF-8 sequence starting with byte c, 0 if c cannot start one.
int utf8_len(unsigned char c) {
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return 2;
  if (c >= 0xE0 && c <= 0xEF) return 3;
  if (c >= 0xF0 && c <= 0xF4) return 4;
  return 0;
}

// Whether s[i..i+n) is one well-formed UTF-8 character (n from utf8_len).
bool utf8_valid(const std::string& s, size_t i, int n) {
  unsigned char c0 = uint8_t(s[i]);
  for (int k = 1; k < n; ++k)
    if ((uint8_t(s[i + size_t(k)]) & 0xC0) != 0x80) return false;
  if (n >= 3) {
    unsigned char c1 = uint8_t(s[i + 1]);
    if (c0 == 0xE0 && c1 < 0xA0) return false;  // overlong
    if (c0 == 0xED && c1 >= 0xA0) return false;  // surrogate
    if (c0 == 0xF0 && c1 < 0x90) return false;
    if (c0 == 0xF4 && c1 >= 0x90) return false;
  }
  return true;
}
}  // namespace

Tokenizer::Tokenizer(const std::string& model_path) : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  if (!std::filesystem::exists(model_path)) fail(model_path, ": tokenizer model not found");
  auto st = sp_->Load(model_path);
  if (!st.ok()) fail(model_path, ": cannot load SentencePiece model: ", st.ToString());
  init_tables();
}

Tokenizer::Tokenizer(FromProto, const std::string& proto, const std::string& origin)
    : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  auto st = sp_->LoadFromSerializedProto(absl::string_view(proto.data(), proto.size()));
  if (!st.ok()) fail(origin, ": SentencePiece rejects the vocabulary: ", st.ToString());
  init_tables();
}

void Tokenizer::init_tables() {
  bos_ = sp_->bos_id();
  eos_ = sp_->eos_id();
  int n = sp_->GetPieceSize();
  piece_text_.resize(size_t(n));
  byte_value_.assign(size_t(n), -1);
  for (int id = 0; id < n; ++id) {
    if (sp_->IsByte(id)) {
      byte_value_[size_t(id)] = int16_t(std::stoi(sp_->IdToPiece(id).substr(3, 2), nullptr, 16));
      continue;
    }
    if (sp_->IsControl(id)) continue;
    if (sp_->IsUnknown(id)) {
      piece_text_[size_t(id)] = " \xE2\x81\x87 ";  // what SentencePiece prints for <unk>: " ⁇ "
      continue;
    }
    std::string p = sp_->IdToPiece(id);
    std::string out;
    for (size_t i = 0; i < p.size();) {
      if (p.compare(i, kMetaSpace.size(), kMetaSpace) == 0) {
        out.push_back(' ');
        i += kMetaSpace.size();
      } else {
        out.push_back(p[i++]);
      }
    }
    piece_text_[size_t(id)] = out;
  }
}

Tokenizer Tokenizer::from_folder(const std::string& dir) {
  if (is_gguf_file(dir)) return from_gguf(dir);
  return Tokenizer((std::filesystem::path(dir) / "tokenizer.model").string());
}

Tokenizer Tokenizer::from_gguf(const std::string& path) {
  GgufFile f(path);
  const std::string model = f.get_str("tokenizer.ggml.model", "");
  if (model != "llama")
    fail(path, ": tokenizer.ggml.model is '", model,
         "'; only 'llama' (SentencePiece) vocabularies are supported, not GPT-2 style BPE or others");
  SpVocab v;
  v.pieces = f.get_str_array("tokenizer.ggml.tokens");
  const size_t n = v.pieces.size();
  v.scores = f.has("tokenizer.ggml.scores") ? f.get_f32_array("tokenizer.ggml.scores") : std::vector<float>(n, 0.0f);
  v.types = f.has("tokenizer.ggml.token_type") ? f.get_i32_array("tokenizer.ggml.token_type")
                                                : std::vector<int32_t>(n, int32_t(SpPieceType::kNormal));
  auto id = [&](const char* key, int def) {
    const int64_t x = f.get_int(key, def);
    if (x < -1 || x >= int64_t(n)) fail(path, ": metadata '", key, "' = ", x, " is outside the vocabulary (", n, " tokens)");
    return int(x);
  };
  v.unk_id = id("tokenizer.ggml.unknown_token_id", 0);
  v.bos_id = id("tokenizer.ggml.bos_token_id", 1);
  v.eos_id = id("tokenizer.ggml.eos_token_id", 2);
  v.pad_id = id("tokenizer.ggml.padding_token_id", -1);
  // A padding id that names an ordinary piece (some converters point it at <unk> or </s>) is not
  // a SentencePiece pad piece.
  if (v.pad_id >= 0 && (v.pad_id == v.unk_id || v.pad_id == v.bos_id || v.pad_id == v.eos_id)) v.pad_id = -1;
  v.add_dummy_prefix = f.get_bool("tokenizer.ggml.add_space_prefix", true);
  v.remove_extra_whitespaces = f.get_bool("tokenizer.ggml.remove_extra_whitespaces", false);
  Tokenizer t(FromProto{}, sp_model_proto(v, path), path);
  t.add_bos_ = f.get_bool("tokenizer.ggml.add_bos_token", true);
  t.add_eos_ = f.get_bool("tokenizer.ggml.add_eos_token", false);
  return t;
}

Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

std::vector<int> Tokenizer::encode(std::string_view text, bool add_bos) const {
  std::vector<int> ids;
  auto st = sp_->Encode(absl::string_view(text.data(), text.size()), &ids);
  if (!st.ok()) fail("tokenizer: cannot encode text: ", st.ToString());
  if (add_bos) ids.insert(ids.begin(), bos_);
  return ids;
}

std::string Tokenizer::decode(const std::vector<int>& ids) const {
  for (int id : ids)
    if (id < 0 || id >= vocab_size()) fail("tokenizer: token id ", id, " is outside the vocabulary (", vocab_size(), ")");
  return sp_->DecodeIds(ids);
}

int Tokenizer::vocab_size() const { return int(piece_text_.size()); }
std::string Tokenizer::piece(int id) const { return sp_->IdToPiece(id); }
float Tokenizer::score(int id) const { return sp_->GetScore(id); }
bool Tokenizer::is_byte(int id) const { return byte_value_[size_t(id)] >= 0; }
bool Tokenizer::is_control(int id) const { return sp_->IsControl(id); }
bool Tokenizer::is_unknown(int id) const { return sp_->IsUnknown(id); }
int Tokenizer::byte_value(int id) const { return byte_value_[size_t(id)]; }

void StreamDecoder::reset(bool at_start) {
  pending_.clear();
  at_start_ = at_start;
}

// Moves the complete characters at the front of pending_ out; invalid bytes become U+FFFD.
// With final=false an incomplete character at the end stays pending.
std::string StreamDecoder::take_valid_prefix(bool final) {
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    int n = utf8_len(uint8_t(pending_[i]));
    if (n == 0) {
      out += kReplacement;
      ++i;
      continue;
    }
    if (i + size_t(n) > pending_.size()) {
      // Incomplete: keep waiting unless the bytes so far already cannot be valid.
      bool prefix_ok = true;
      for (size_t k = i + 1; k < pending_.size(); ++k)
        if ((uint8_t(pending_[k]) & 0xC0) != 0x80) prefix_ok = false;
      if (!final && prefix_ok) break;
      out += kReplacement;
      ++i;
      continue;
    }
    if (utf8_valid(pending_, i, n)) {
      out.append(pending_, i, size_t(n));
      i += size_t(n);
    } else {
      out += kReplacement;
      ++i;
    }
  }
  pending_.erase(0, i);
  return out;
}

std::string StreamDecoder::push(int id) {
  if (id < 0 || id >= tok_->vocab_size()) fail("tokenizer: token id ", id, " is outside the vocabulary");
  int b = tok_->byte_value(id);
  if (b >= 0) {
    at_start_ = false;
    pending_.push_back(char(b));
    return take_valid_prefix(false);
  }
  std::string out = pending_.empty() ? std::string() : take_valid_prefix(true);
  const std::string& text = tok_->piece_text(id);
  if (tok_->is_control(id)) return out;
  // SentencePiece drops the dummy-prefix space of the first piece of a text.
  if (at_start_ && !text.empty() && text[0] == ' ')
    out.append(text, 1, std::string::npos);
  else
    out += text;
  at_start_ = false;
  return out;
}

std::string StreamDecoder::flush() {
  return take_valid_prefix(true);
}

}  // namespace metharme
