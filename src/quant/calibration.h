// Calibration data for GPTQ: token windows drawn reproducibly from a text, a set of documents, or
// given directly as ids, the way GPTQ-for-LLaMa draws them (CPython random, same seed rules).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace metharme::quant {

enum class CalibFormat { kAuto, kText, kJsonl, kJsonlGz, kIdsNpy };

// "text", "jsonl", "jsonl.gz", "ids.npy" (and "auto": by file name).
CalibFormat parse_calib_format(const std::string& s);
const char* calib_format_name(CalibFormat f);

struct CalibOptions {
  std::string path;
  CalibFormat format = CalibFormat::kAuto;
  int nsamples = 128;
  int seqlen = 2048;
  bool nsamples_given = false;  // for ids.npy [n, L]: defaults come from the array otherwise
  bool seqlen_given = false;
  uint64_t seed = 0;
};

struct CalibSet {
  int nsamples = 0, seqlen = 0;
  std::vector<int32_t> ids;  // [nsamples][seqlen]
  std::string description;   // one line for the log: source, tokens, windows

  const int32_t* sample(int s) const { return ids.data() + size_t(s) * size_t(seqlen); }
};

// Formats:
//  text      the whole file is tokenized in one call with BOS in front (GPTQ-for-LLaMa's wikitext2
//            and ptb loaders); window i starts at randint(0, n_tokens - seqlen - 1).
//  jsonl(.gz) one JSON object with a "text" string per line (C4's format); per window a random
//            document with more than seqlen tokens (tokenized alone, with BOS), then a random
//            window inside it (GPTQ-for-LLaMa's c4 loader).
//  ids.npy   integer array: [n, L] = the windows themselves; [n] = a token stream sampled like text.
// Token ids are checked against `vocab_size`.
CalibSet load_calibration(const CalibOptions& opt, const Tokenizer& tok, int vocab_size);

// Draws `n` window starts for a stream of `n_tokens` tokens (shared by text and 1-D ids).
std::vector<int64_t> draw_window_starts(int64_t n_tokens, int seqlen, int n, uint64_t seed);

}  // namespace metharme::quant
