#include "tokenizer/sp_model.h"

#include <cstring>

#include "util/error.h"

namespace metharme {

namespace {

// Protobuf wire format: a key is (field << 3 | wire type); 0 = varint, 2 = length-delimited,
// 5 = 32-bit little-endian.
void put_varint(std::string& s, uint64_t v) {
  while (v >= 0x80) {
    s.push_back(char(uint8_t(v) | 0x80));
    v >>= 7;
  }
  s.push_back(char(v));
}
void put_key(std::string& s, int field, int wire) { put_varint(s, uint64_t(field) << 3 | uint64_t(wire)); }
void put_int(std::string& s, int field, int64_t v) {  // int32/enum/bool: negatives take 10 bytes
  put_key(s, field, 0);
  put_varint(s, uint64_t(v));
}
void put_bytes(std::string& s, int field, const std::string& b) {
  put_key(s, field, 2);
  put_varint(s, b.size());
  s += b;
}
void put_float(std::string& s, int field, float f) {
  put_key(s, field, 5);
  char b[4];
  std::memcpy(b, &f, 4);
  s.append(b, 4);
}

// ModelProto fields.
enum { kPieces = 1, kTrainerSpec = 2, kNormalizerSpec = 3 };
// SentencePiece (one piece).
enum { kPiece = 1, kScore = 2, kType = 3 };
// TrainerSpec.
enum {
  kModelType = 3,
  kVocabSize = 4,
  kByteFallback = 35,
  kUnkId = 40,
  kBosId = 41,
  kEosId = 42,
  kPadId = 43,
  kUnkPiece = 45,
  kBosPiece = 46,
  kEosPiece = 47,
  kPadPiece = 48,
};
// NormalizerSpec.
enum { kName = 1, kAddDummyPrefix = 3, kRemoveExtraWhitespaces = 4, kEscapeWhitespaces = 5 };

}  // namespace

std::string sp_model_proto(const SpVocab& v, const std::string& origin) {
  const size_t n = v.pieces.size();
  if (n == 0) fail(origin, ": the vocabulary is empty");
  if (n > (1u << 24)) fail(origin, ": the vocabulary has ", n, " pieces (too many)");
  if (v.scores.size() != n) fail(origin, ": ", v.scores.size(), " scores for ", n, " tokens");
  if (v.types.size() != n) fail(origin, ": ", v.types.size(), " token types for ", n, " tokens");
  auto check_id = [&](int id, const char* what, bool optional) {
    if (optional && id == -1) return;
    if (id < 0 || size_t(id) >= n) fail(origin, ": ", what, " id ", id, " is outside the vocabulary (", n, " tokens)");
  };
  check_id(v.unk_id, "unknown-token", false);
  check_id(v.bos_id, "bos", true);
  check_id(v.eos_id, "eos", true);
  check_id(v.pad_id, "padding", true);
  bool byte_fallback = false;
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    const int32_t t = v.types[i];
    if (t < 1 || t > 6) fail(origin, ": token ", i, " has type ", t, " (expected 1 to 6)");
    if (v.pieces[i].empty()) fail(origin, ": token ", i, " is an empty string");
    byte_fallback |= t == int32_t(SpPieceType::kByte);
    std::string p;
    put_bytes(p, kPiece, v.pieces[i]);
    put_float(p, kScore, v.scores[i]);
    if (t != int32_t(SpPieceType::kNormal)) put_int(p, kType, t);
    put_bytes(out, kPieces, p);
  }
  if (v.types[size_t(v.unk_id)] != int32_t(SpPieceType::kUnknown))
    fail(origin, ": unknown-token id ", v.unk_id, " ('", v.pieces[size_t(v.unk_id)], "') is not of the unknown type");
  std::string ts;
  put_int(ts, kModelType, v.bpe ? 2 : 1);
  put_int(ts, kVocabSize, int64_t(n));
  put_int(ts, kByteFallback, byte_fallback ? 1 : 0);
  put_int(ts, kUnkId, v.unk_id);
  put_int(ts, kBosId, v.bos_id);
  put_int(ts, kEosId, v.eos_id);
  put_int(ts, kPadId, v.pad_id);
  // SentencePiece finds bos/eos/pad through these piece strings.
  put_bytes(ts, kUnkPiece, v.pieces[size_t(v.unk_id)]);
  if (v.bos_id >= 0) put_bytes(ts, kBosPiece, v.pieces[size_t(v.bos_id)]);
  if (v.eos_id >= 0) put_bytes(ts, kEosPiece, v.pieces[size_t(v.eos_id)]);
  if (v.pad_id >= 0) put_bytes(ts, kPadPiece, v.pieces[size_t(v.pad_id)]);
  put_bytes(out, kTrainerSpec, ts);
  std::string ns;
  put_bytes(ns, kName, "identity");
  put_int(ns, kAddDummyPrefix, v.add_dummy_prefix ? 1 : 0);
  put_int(ns, kRemoveExtraWhitespaces, v.remove_extra_whitespaces ? 1 : 0);
  put_int(ns, kEscapeWhitespaces, 1);
  put_bytes(out, kNormalizerSpec, ns);
  return out;
}

namespace {

// A bounds-checked protobuf reader over one message.
struct PbReader {
  const std::string& b;
  size_t pos, end;
  const std::string& origin;

  bool done() const { return pos >= end; }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos >= end) fail(origin, ": truncated SentencePiece model");
      const uint8_t c = uint8_t(b[pos++]);
      v |= uint64_t(c & 0x7F) << shift;
      if (c < 0x80) return v;
    }
    fail(origin, ": malformed varint in the SentencePiece model");
  }
  // Reads a key; returns the field number and sets `wire`.
  int key(int* wire) {
    const uint64_t k = varint();
    *wire = int(k & 7);
    return int(k >> 3);
  }
  // The extent of a length-delimited field.
  std::pair<size_t, size_t> sub() {
    const uint64_t len = varint();
    if (len > end - pos) fail(origin, ": truncated SentencePiece model");
    std::pair<size_t, size_t> r{pos, pos + size_t(len)};
    pos += size_t(len);
    return r;
  }
  float f32() {
    if (end - pos < 4) fail(origin, ": truncated SentencePiece model");
    float f;
    std::memcpy(&f, b.data() + pos, 4);
    pos += 4;
    return f;
  }
  void skip(int wire) {
    if (wire == 0)
      varint();
    else if (wire == 2)
      sub();
    else if (wire == 5)
      f32();
    else if (wire == 1 && end - pos >= 8)
      pos += 8;
    else
      fail(origin, ": unsupported protobuf wire type ", wire, " in the SentencePiece model");
  }
};

}  // namespace

SpVocab sp_vocab_parse(const std::string& proto, const std::string& origin) {
  SpVocab v;  // the proto's defaults where a field is absent
  v.bpe = false;
  v.remove_extra_whitespaces = true;
  PbReader r{proto, 0, proto.size(), origin};
  while (!r.done()) {
    int wire;
    const int field = r.key(&wire);
    if (wire != 2) {
      r.skip(wire);
      continue;
    }
    auto [b, e] = r.sub();
    PbReader m{proto, b, e, origin};
    if (field == kPieces) {
      std::string piece;
      float score = 0;
      int32_t type = 1;
      while (!m.done()) {
        int w;
        const int f = m.key(&w);
        if (f == kPiece && w == 2) {
          auto [pb, pe] = m.sub();
          piece = proto.substr(pb, pe - pb);
        } else if (f == kScore && w == 5) {
          score = m.f32();
        } else if (f == kType && w == 0) {
          type = int32_t(m.varint());
        } else {
          m.skip(w);
        }
      }
      v.pieces.push_back(std::move(piece));
      v.scores.push_back(score);
      v.types.push_back(type);
    } else if (field == kTrainerSpec || field == kNormalizerSpec) {
      while (!m.done()) {
        int w;
        const int f = m.key(&w);
        if (w != 0) {
          m.skip(w);
          continue;
        }
        const int64_t x = int64_t(m.varint());
        if (field == kTrainerSpec) {
          if (f == kModelType) v.bpe = x == 2;
          if (f == kUnkId) v.unk_id = int(x);
          if (f == kBosId) v.bos_id = int(x);
          if (f == kEosId) v.eos_id = int(x);
          if (f == kPadId) v.pad_id = int(x);
        } else {
          if (f == kAddDummyPrefix) v.add_dummy_prefix = x != 0;
          if (f == kRemoveExtraWhitespaces) v.remove_extra_whitespaces = x != 0;
        }
      }
    }
  }
  if (v.pieces.empty()) fail(origin, ": the SentencePiece model has no pieces");
  return v;
}

}  // namespace metharme
