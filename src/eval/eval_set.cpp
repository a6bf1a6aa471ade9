#include "eval/eval_set.h"

#include <unordered_map>

#include "util/error.h"

namespace metharme::eval {

namespace {

const char* window_flag(Protocol p) { return p == Protocol::kGptq ? "--seqlen" : "--ctx"; }

std::string quoted_sep(Dataset d) {
  return (d == Dataset::kWikitext2 || d == Dataset::kPtb) ? "\"\\n\\n\"" : "\" \"";
}

// Cuts ids into whole windows (the tail is dropped) and applies --limit.
void cut_windows(EvalSet& s, std::vector<int32_t> ids, int limit) {
  s.corpus_tokens = int64_t(ids.size());
  s.windows_available = s.corpus_tokens / s.window;
  MH_CHECK(s.windows_available > 0, s.source.empty() ? std::string("input") : s.source, ": the evaluation text is ",
           s.corpus_tokens, " tokens, shorter than one window of ", s.window, " tokens (", window_flag(s.protocol), " ",
           s.window, ")");
  int64_t keep = s.windows_available;
  if (limit > 0 && limit < keep) keep = limit;
  ids.resize(size_t(keep) * size_t(s.window));
  s.tokens = std::move(ids);
}

void set_protocol(EvalSet& s, Protocol p, int window, int bos_id) {
  s.protocol = p;
  s.window = window;
  s.bos_id = bos_id;
  if (p == Protocol::kLlamaCpp) {
    MH_CHECK(window >= 4, "--ctx ", window, " is too small (at least 4)");
    s.first_scored = window / 2;
    s.bos_each_window = true;
  } else {
    MH_CHECK(window >= 2, "--seqlen ", window, " is too small (at least 2)");
    s.first_scored = 0;
    s.bos_each_window = false;
  }
}

std::vector<int32_t> encode(const Tokenizer& tok, const std::string& text) {
  std::vector<int> ids = tok.encode(text, true);
  return std::vector<int32_t>(ids.begin(), ids.end());
}

// The old c4 protocol: 256 random windows of separately tokenized validation documents.
std::vector<int32_t> c4_windows(EvalSet& s, const Corpus& c, const Tokenizer& tok) {
  const int W = s.window;
  std::vector<int64_t> lengths(c.rows.size(), -1);
  std::unordered_map<size_t, std::vector<int32_t>> long_docs;  // documents of >= W tokens
  auto doc_tokens = [&](size_t i) -> int64_t {
    if (lengths[i] < 0) {
      std::vector<int32_t> ids = encode(tok, c.rows[i]);
      lengths[i] = int64_t(ids.size());
      if (lengths[i] >= W) long_docs.emplace(i, std::move(ids));
    }
    return lengths[i];
  };
  C4Sample sample = sample_c4_windows(c.rows.size(), doc_tokens, W);
  std::vector<int32_t> out;
  out.reserve(sample.picks.size() * size_t(W));
  for (const C4Pick& p : sample.picks) {
    const std::vector<int32_t>& ids = long_docs.at(p.doc);
    out.insert(out.end(), ids.begin() + p.start, ids.begin() + p.start + W);
  }
  s.text_rule = cat(sample.picks.size(), " windows of ", W, " tokens drawn from ", c.rows.size(),
                    " documents (random.seed(0), ", sample.draws, " draws), each document tokenized alone with BOS");
  if (sample.exact_length_docs > 0)
    s.text_rule += cat("; ", sample.exact_length_docs,
                       " drawn documents had exactly seqlen tokens (start 0; GPTQ-for-LLaMa raises there)");
  return out;
}

}  // namespace

Protocol parse_protocol(const std::string& name) {
  if (name == "gptq") return Protocol::kGptq;
  if (name == "llamacpp" || name == "llama.cpp") return Protocol::kLlamaCpp;
  fail("unknown protocol \"", name, "\" (choose gptq or llamacpp)");
}

const char* protocol_name(Protocol p) { return p == Protocol::kGptq ? "gptq" : "llamacpp"; }

EvalSet build_eval_set(const Corpus& c, Dataset d, const Tokenizer& tok, const EvalSetOptions& opt) {
  EvalSet s;
  s.dataset = d;
  s.source = c.path;
  s.format = c.format;
  set_protocol(s, opt.protocol, opt.window, tok.bos());
  const int W = s.window;

  if (s.protocol == Protocol::kLlamaCpp) {
    // llama.cpp reads the file text unchanged; rows from JSON inputs are joined as the dataset does.
    std::string text;
    if (!c.is_json) {
      text = c.raw;
      s.text_rule = "file text as is, tokenized once with BOS; BOS replaces the first token of every chunk";
    } else {
      Dataset j = (d == Dataset::kC4 || d == Dataset::kC4New) ? Dataset::kC4New : d;
      MH_CHECK(j != Dataset::kText, c.path, ": JSON rows need a dataset that says how to join them");
      text = gptq_join(j, c.rows);
      s.text_rule = cat(std::min(c.rows.size(), j == Dataset::kC4New ? size_t(kC4NewDocuments) : c.rows.size()),
                        " rows joined with ", quoted_sep(j),
                        ", tokenized once with BOS; BOS replaces the first token of every chunk");
    }
    cut_windows(s, encode(tok, text), opt.limit);
    return s;
  }

  std::vector<int32_t> ids;
  switch (d) {
    case Dataset::kText:
      ids = encode(tok, c.raw);
      s.text_rule = "file text as is, tokenized once with one BOS";
      break;
    case Dataset::kC4:
      ids = c4_windows(s, c, tok);
      break;
    case Dataset::kC4New: {
      ids = encode(tok, gptq_join(d, c.rows));
      size_t cap = size_t(kC4Windows) * size_t(W);
      s.text_rule = cat("first ", std::min(c.rows.size(), size_t(kC4NewDocuments)), " of ", c.rows.size(),
                        " documents joined with \" \", tokenized once with one BOS, first ", kC4Windows, "x", W,
                        " tokens kept (of ", ids.size(), ")");
      if (ids.size() > cap) ids.resize(cap);
      break;
    }
    default:
      ids = encode(tok, gptq_join(d, c.rows));
      s.text_rule = cat(c.rows.size(), " rows joined with ", quoted_sep(d), ", tokenized once with one BOS");
      break;
  }
  cut_windows(s, std::move(ids), opt.limit);
  return s;
}

EvalSet eval_set_from_ids(std::vector<int32_t> ids, Protocol protocol, int window, int bos_id, int limit) {
  EvalSet s;
  set_protocol(s, protocol, window, bos_id);
  s.text_rule = "token ids given";
  cut_windows(s, std::move(ids), limit);
  return s;
}

}  // namespace metharme::eval
