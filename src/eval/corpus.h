// Evaluation corpora: reading the files users have (WikiText raw, PTB sentence files, HF-style JSON
// lines, allenai/c4 .json.gz shards, any text) into the rows the Hugging Face datasets would give,
// and GPTQ-for-LLaMa's rules for joining those rows into one evaluation text.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace metharme::eval {

enum class Dataset { kWikitext2, kPtb, kPtbNew, kC4, kC4New, kText };

Dataset parse_dataset(std::string_view name);  // "wikitext2", "ptb", "ptb-new", "c4", "c4-new", "text"
const char* dataset_name(Dataset d);

// A data file split into rows. Row rules (those of the HF dataset scripts GPTQ-for-LLaMa loads):
//   wikitext2 text file: one row per line, newline kept; whitespace-only lines become "".
//   ptb / ptb-new text file: one row per line, stripped of surrounding whitespace.
//   JSON lines (any dataset, optionally gzip'd): the "text" field ("sentence" also for ptb).
//   c4 / c4-new: JSON lines only (the allenai/c4 shards), one document per row.
//   text: no rows; the whole file is the text.
struct Corpus {
  std::string path;
  std::string format;             // "text", "JSON lines", "JSON array", with ", gzip" when compressed
  bool is_json = false;
  std::string raw;                // the file content as text (empty for JSON inputs)
  std::vector<std::string> rows;  // see above
};

Corpus read_corpus(const std::string& path, Dataset d);


// Python's str.splitlines(keepends=True) restricted to what text-mode reading produces: "\r\n" and
// "\r" become "\n" (universal newlines), every line keeps its "\n".
std::vector<std::string> read_lines_universal(std::string_view text);
// Python's str.strip() with no argument (Unicode whitespace, UTF-8 input).
std::string py_strip(std::string_view s);

// GPTQ-for-LLaMa's evaluation text for the row-based datasets:
//   wikitext2 and ptb: rows joined with "\n\n"; ptb-new: joined with " ";
//   c4-new: the first 1100 documents joined with " ". (c4 samples documents instead, see below.)
std::string gptq_join(Dataset d, const std::vector<std::string>& rows);
constexpr int kC4NewDocuments = 1100;
constexpr int kC4Windows = 256;  // c4 and c4-new evaluate 256 windows of seqlen tokens

// GPTQ-for-LLaMa's old c4 evaluation windows: random.seed(seed); then `n_windows` times: draw
// documents with randint(0, n_docs-1) until one has >= seqlen tokens (BOS included), then a start
// with randint(0, n_tokens - seqlen - 1). `doc_tokens(i)` gives document i's token count.
struct C4Pick {
  size_t doc = 0;
  int64_t start = 0;
};
struct C4Sample {
  std::vector<C4Pick> picks;
  int64_t draws = 0;          // documents drawn, including the rejected short ones
  int exact_length_docs = 0;  // picks whose document had exactly seqlen tokens (start 0; the reference raises there)
};
C4Sample sample_c4_windows(size_t n_docs, const std::function<int64_t(size_t)>& doc_tokens, int seqlen,
                           int n_windows = kC4Windows, int64_t seed = 0);

}  // namespace metharme::eval
