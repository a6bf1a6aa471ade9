// Builds a serialized SentencePiece ModelProto from a vocabulary (pieces, scores, types), so
// that vocabularies stored elsewhere (GGUF's tokenizer.ggml.*) tokenize with SentencePiece
// itself. The protobuf wire format is written directly (Debian ships no sentencepiece_model.pb.h);
// field numbers follow sentencepiece_model.proto and were checked against LLaMA's tokenizer.model.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace metharme {

// Piece types, as in SentencePiece's ModelProto.SentencePiece.Type (GGUF's token_type uses the
// same values).
enum class SpPieceType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

struct SpVocab {
  std::vector<std::string> pieces;
  std::vector<float> scores;                            // same length as pieces
  std::vector<int32_t> types;                           // same length as pieces (SpPieceType values)
  bool bpe = true;                                      // BPE (LLaMA) or unigram
  int unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;  // -1: none
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = false;
};

// Checks the vocabulary (lengths, ids in range, types known; errors start with `origin`) and
// returns the serialized ModelProto.
std::string sp_model_proto(const SpVocab& v, const std::string& origin);

// The vocabulary of a serialized ModelProto (a tokenizer.model file's bytes): pieces, scores,
// types, the special ids and the normalizer flags above. Malformed input is an error naming origin.
SpVocab sp_vocab_parse(const std::string& proto, const std::string& origin);

}  // namespace metharme
