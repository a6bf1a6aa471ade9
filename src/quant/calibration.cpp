#include "quant/calibration.h"


#include <filesystem>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "formats/npy.h"
#include "util/py_random.h"
#include "util/error.h"
#include "util/fs.h"

namespace metharme::quant {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::vector<std::string> parse_jsonl_texts(const std::string& content, const std::string& path) {
  std::vector<std::string> docs;
  size_t pos = 0;
  int line_no = 0;
  while (pos < content.size()) {
    size_t end = content.find('\n', pos);
    if (end == std::string::npos) end = content.size();
    std::string line = content.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      fail(path, ": line ", line_no, " is not valid JSON");
    }
    if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
      fail(path, ": line ", line_no, " has no \"text\" string field");
    docs.push_back(j["text"].get<std::string>());
  }
  if (docs.empty()) fail("no calibration text: ", path, " holds no documents");
  return docs;
}

CalibSet windows_from_stream(const std::vector<int32_t>& stream, const CalibOptions& opt, const std::string& what) {
  int64_t n_tok = int64_t(stream.size());
  if (n_tok < int64_t(opt.seqlen) + 1)
    fail("calibration data ", what, " has ", n_tok, " tokens, shorter than one window (--seqlen ", opt.seqlen,
         " needs at least ", opt.seqlen + 1, "); use a longer text or a smaller --seqlen");
  CalibSet c;
  c.nsamples = opt.nsamples;
  c.seqlen = opt.seqlen;
  c.ids.reserve(size_t(opt.nsamples) * size_t(opt.seqlen));
  for (int64_t s : draw_window_starts(n_tok, opt.seqlen, opt.nsamples, opt.seed))
    c.ids.insert(c.ids.end(), stream.begin() + s, stream.begin() + s + opt.seqlen);
  c.description = cat(what, ": ", n_tok, " tokens, ", opt.nsamples, " windows of ", opt.seqlen, " (seed ", opt.seed, ")");
  return c;
}

CalibSet windows_from_docs(const std::vector<std::string>& docs, const CalibOptions& opt, const Tokenizer& tok,
                           const std::string& what) {
  PyRandom rng(opt.seed);
  std::unordered_map<int64_t, std::vector<int>> cache;  // documents tokenized so far
  size_t too_short = 0;
  CalibSet c;
  c.nsamples = opt.nsamples;
  c.seqlen = opt.seqlen;
  for (int s = 0; s < opt.nsamples; ++s) {
    const std::vector<int>* doc = nullptr;
    for (;;) {
      int64_t i = rng.randint(0, int64_t(docs.size()) - 1);
      auto it = cache.find(i);
      if (it == cache.end()) {
        it = cache.emplace(i, tok.encode(docs[size_t(i)], true)).first;
        if (int64_t(it->second.size()) <= opt.seqlen) ++too_short;
      }
      // GPTQ-for-LLaMa accepts a document of exactly seqlen tokens and then fails drawing the
      // window start; we skip it instead.
      if (int64_t(it->second.size()) > opt.seqlen) {
        doc = &it->second;
        break;
      }
      if (too_short == docs.size())
        fail("calibration data ", what, ": no document has more than --seqlen ", opt.seqlen,
             " tokens; use longer documents or a smaller --seqlen");
    }
    int64_t start = rng.randint(0, int64_t(doc->size()) - opt.seqlen - 1);
    c.ids.insert(c.ids.end(), doc->begin() + start, doc->begin() + start + opt.seqlen);
  }
  c.description = cat(what, ": ", docs.size(), " documents, ", opt.nsamples, " windows of ", opt.seqlen,
                      " (seed ", opt.seed, ")");
  return c;
}

}  // namespace

CalibFormat parse_calib_format(const std::string& s) {
  if (s == "auto") return CalibFormat::kAuto;
  if (s == "text") return CalibFormat::kText;
  if (s == "jsonl") return CalibFormat::kJsonl;
  if (s == "jsonl.gz") return CalibFormat::kJsonlGz;
  if (s == "ids.npy" || s == "npy") return CalibFormat::kIdsNpy;
  fail("unknown calibration format '", s, "' (expected text, jsonl, jsonl.gz or ids.npy)");
}

const char* calib_format_name(CalibFormat f) {
  switch (f) {
    case CalibFormat::kAuto: return "auto";
    case CalibFormat::kText: return "text";
    case CalibFormat::kJsonl: return "jsonl";
    case CalibFormat::kJsonlGz: return "jsonl.gz";
    case CalibFormat::kIdsNpy: return "ids.npy";
  }
  return "?";
}

std::vector<int64_t> draw_window_starts(int64_t n_tokens, int seqlen, int n, uint64_t seed) {
  PyRandom rng(seed);
  std::vector<int64_t> starts;
  for (int i = 0; i < n; ++i) starts.push_back(rng.randint(0, n_tokens - seqlen - 1));
  return starts;
}

CalibSet load_calibration(const CalibOptions& opt, const Tokenizer& tok, int vocab_size) {
  if (opt.path.empty()) fail("no calibration text: pass --calib FILE (GPTQ needs calibration data)");
  namespace fs = std::filesystem;
  if (!fs::exists(opt.path)) fail("calibration file ", opt.path, " does not exist");
  if (fs::is_directory(opt.path)) fail("calibration file ", opt.path, " is a folder");
  MH_CHECK(opt.seqlen > 0 && opt.nsamples > 0, "--nsamples and --seqlen must be positive");
  CalibFormat f = opt.format;
  if (f == CalibFormat::kAuto) {
    if (ends_with(opt.path, ".npy")) f = CalibFormat::kIdsNpy;
    else if (ends_with(opt.path, ".jsonl.gz") || ends_with(opt.path, ".json.gz")) f = CalibFormat::kJsonlGz;
    else if (ends_with(opt.path, ".jsonl") || ends_with(opt.path, ".json")) f = CalibFormat::kJsonl;
    else f = CalibFormat::kText;
  }
  const std::string what = opt.path;
  CalibSet c;
  switch (f) {
    case CalibFormat::kText: {
      std::string text = read_text_file(opt.path);
      if (text.find_first_not_of(" \t\r\n") == std::string::npos)
        fail("no calibration text: ", opt.path, " is empty");
      std::vector<int> ids = tok.encode(text, true);
      c = windows_from_stream(std::vector<int32_t>(ids.begin(), ids.end()), opt, what);
      break;
    }
    case CalibFormat::kJsonl:
    case CalibFormat::kJsonlGz: {
      std::string content = f == CalibFormat::kJsonl ? read_text_file(opt.path) : read_maybe_gzip(opt.path);
      c = windows_from_docs(parse_jsonl_texts(content, opt.path), opt, tok, what);
      break;
    }
    case CalibFormat::kIdsNpy: {
      NpyArray a = read_npy(opt.path);
      std::vector<int64_t> v;
      try {
        v = a.to_i64();
      } catch (const Error&) {
        fail(opt.path, ": calibration ids must be an integer array, not ", dtype_name(a.dtype));
      }
      if (a.shape.size() == 1) {
        c = windows_from_stream(std::vector<int32_t>(v.begin(), v.end()), opt, what);
      } else if (a.shape.size() == 2) {
        int64_t rows = a.shape[0], cols = a.shape[1];
        if (rows == 0 || cols == 0) fail("no calibration text: ", opt.path, " is an empty array");
        int n = opt.nsamples_given ? opt.nsamples : int(rows);
        int L = opt.seqlen_given ? opt.seqlen : int(cols);
        if (n > rows) fail(opt.path, " holds ", rows, " windows, fewer than --nsamples ", n);
        if (L != cols) fail(opt.path, " holds windows of ", cols, " tokens but --seqlen is ", L);
        c.nsamples = n;
        c.seqlen = L;
        c.ids.assign(v.begin(), v.begin() + int64_t(n) * L);
        c.description = cat(what, ": ", n, " given windows of ", L, " tokens");
      } else {
        fail(opt.path, ": calibration ids must be 1-D (a token stream) or 2-D [windows, seqlen], not ",
             shape_str(a.shape));
      }
      break;
    }
    case CalibFormat::kAuto: break;
  }
  for (size_t i = 0; i < c.ids.size(); ++i)
    if (c.ids[i] < 0 || c.ids[i] >= vocab_size)
      fail(opt.path, ": token id ", c.ids[i], " is outside the model's vocabulary (", vocab_size, ")");
  return c;
}

}  // namespace metharme::quant
