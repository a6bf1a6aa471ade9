#include "eval/corpus.h"


#include <nlohmann/json.hpp>
#include <unordered_set>

#include "util/py_random.h"
#include "util/error.h"
#include "util/fs.h"

namespace metharme::eval {

namespace {

struct DatasetName {
  Dataset d;
  const char* name;
};
constexpr DatasetName kNames[] = {{Dataset::kWikitext2, "wikitext2"}, {Dataset::kPtb, "ptb"},
                                  {Dataset::kPtbNew, "ptb-new"},      {Dataset::kC4, "c4"},
                                  {Dataset::kC4New, "c4-new"},        {Dataset::kText, "text"}};

// Decodes the UTF-8 character starting at s[i] (length in *n); invalid bytes decode as themselves.
uint32_t decode_utf8(std::string_view s, size_t i, int* n) {
  unsigned char c = uint8_t(s[i]);
  int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
  if (i + size_t(len) > s.size()) len = 1;
  uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1Fu) : len == 3 ? (c & 0x0Fu) : (c & 0x07u);
  for (int k = 1; k < len; ++k) {
    unsigned char cc = uint8_t(s[i + size_t(k)]);
    if ((cc & 0xC0) != 0x80) {
      *n = 1;
      return c;
    }
    cp = (cp << 6) | (cc & 0x3Fu);
  }
  *n = len;
  return cp;
}

bool py_isspace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

// Length of the whitespace character that ends s (0 if s does not end in whitespace).
size_t trailing_space_len(std::string_view s) {
  for (size_t back = 1; back <= 4 && back <= s.size(); ++back) {
    size_t i = s.size() - back;
    if ((uint8_t(s[i]) & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    int n = 0;
    uint32_t cp = decode_utf8(s, i, &n);
    return size_t(n) == back && py_isspace(cp) ? back : 0;
  }
  return 0;
}

// The string field a JSON row holds its text in.
const char* field_for(Dataset d, const nlohmann::json& row) {
  if (row.contains("text")) return "text";
  if ((d == Dataset::kPtb || d == Dataset::kPtbNew) && row.contains("sentence")) return "sentence";
  return nullptr;
}

std::string row_text(Dataset d, const nlohmann::json& row, const std::string& where) {
  if (row.is_string()) return row.get<std::string>();
  MH_CHECK(row.is_object(), where, ": expected a JSON object (or string) per row, got ", row.type_name());
  const char* f = field_for(d, row);
  MH_CHECK(f != nullptr, where, ": row has no \"text\"",
           (d == Dataset::kPtb || d == Dataset::kPtbNew) ? " or \"sentence\"" : "", " field");
  const auto& v = row[f];
  MH_CHECK(v.is_string(), where, ": field \"", f, "\" is ", v.type_name(), ", not a string");
  return v.get<std::string>();
}

size_t first_non_space(std::string_view s) {
  size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  return i;
}

// JSON lines: one value per non-blank line. Returns false (rows untouched) when the first
// non-blank line is not a JSON object, i.e. the file is plain text.
bool parse_json_lines(std::string_view text, Dataset d, const std::string& path, std::vector<std::string>& rows) {
  size_t pos = 0;
  int64_t line_no = 0;
  bool first = true;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (first_non_space(line) == line.size()) continue;
    nlohmann::json row = nlohmann::json::parse(line, nullptr, false);
    if (first) {
      if (!row.is_object()) return false;
      first = false;
    }
    std::string where = cat(path, ":", line_no);
    MH_CHECK(!row.is_discarded(), where, ": not valid JSON (the file's first line is a JSON object, so every line must be one)");
    rows.push_back(row_text(d, row, where));
  }
  return !first;
}

}  // namespace

Dataset parse_dataset(std::string_view name) {
  for (const auto& n : kNames)
    if (name == n.name) return n.d;
  fail("unknown dataset \"", name, "\" (choose wikitext2, ptb, ptb-new, c4, c4-new or text)");
}

const char* dataset_name(Dataset d) {
  for (const auto& n : kNames)
    if (n.d == d) return n.name;
  return "?";
}

std::vector<std::string> read_lines_universal(std::string_view text) {
  std::vector<std::string> lines;
  std::string cur;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '\r' || c == '\n') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      cur.push_back('\n');
      lines.push_back(std::move(cur));
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  if (!cur.empty()) lines.push_back(std::move(cur));
  return lines;
}

std::string py_strip(std::string_view s) {
  size_t b = 0;
  while (b < s.size()) {
    int n = 0;
    uint32_t cp = decode_utf8(s, b, &n);
    if (!py_isspace(cp)) break;
    b += size_t(n);
  }
  std::string_view rest = s.substr(b);
  while (size_t n = trailing_space_len(rest)) rest.remove_suffix(n);
  return std::string(rest);
}

Corpus read_corpus(const std::string& path, Dataset d) {
  Corpus c;
  c.path = path;
  bool gz = false;
  std::string content = read_maybe_gzip(path, &gz);
  MH_CHECK(first_non_space(content) < content.size(), path, ": the file is empty (or only whitespace)");
  const char* gz_note = gz ? ", gzip" : "";

  if (d != Dataset::kText) {
    size_t i = first_non_space(content);
    if (content[i] == '[') {
      nlohmann::json arr = nlohmann::json::parse(content, nullptr, false);
      if (!arr.is_discarded() && arr.is_array()) {
        for (size_t k = 0; k < arr.size(); ++k) c.rows.push_back(row_text(d, arr[k], cat(path, ": row ", k)));
        c.is_json = true;
        c.format = cat("JSON array", gz_note);
      }
    } else if (content[i] == '{' && parse_json_lines(content, d, path, c.rows)) {
      c.is_json = true;
      c.format = cat("JSON lines", gz_note);
    }
  }
  if (c.is_json) {
    MH_CHECK(!c.rows.empty(), path, ": no rows");
    return c;
  }
  MH_CHECK(d != Dataset::kC4 && d != Dataset::kC4New, path,
           ": c4 expects an allenai/c4 shard (JSON lines with a \"text\" field, e.g. "
           "en/c4-validation.00000-of-00008.json.gz), but this file is plain text");
  c.format = cat("text", gz_note);
  if (d == Dataset::kWikitext2 || d == Dataset::kPtb || d == Dataset::kPtbNew) {
    c.rows = read_lines_universal(content);
    for (std::string& r : c.rows) {
      if (d == Dataset::kWikitext2) {
        if (py_strip(r).empty()) r.clear();
      } else {
        r = py_strip(r);
      }
    }
  }
  c.raw = std::move(content);
  return c;
}

std::string gptq_join(Dataset d, const std::vector<std::string>& rows) {
  std::string sep;
  size_t n = rows.size();
  switch (d) {
    case Dataset::kWikitext2:
    case Dataset::kPtb: sep = "\n\n"; break;
    case Dataset::kPtbNew: sep = " "; break;
    case Dataset::kC4New:
      sep = " ";
      n = std::min(n, size_t(kC4NewDocuments));
      break;
    default: fail("gptq_join: ", dataset_name(d), " is not joined from rows");
  }
  size_t bytes = 0;
  for (size_t i = 0; i < n; ++i) bytes += rows[i].size() + sep.size();
  std::string out;
  out.reserve(bytes);
  for (size_t i = 0; i < n; ++i) {
    if (i) out += sep;
    out += rows[i];
  }
  return out;
}

C4Sample sample_c4_windows(size_t n_docs, const std::function<int64_t(size_t)>& doc_tokens, int seqlen,
                           int n_windows, int64_t seed) {
  MH_CHECK(n_docs > 0, "c4: no documents");
  MH_CHECK(seqlen > 0, "c4: seqlen must be positive");
  PyRandom rng(seed);
  C4Sample s;
  std::unordered_set<size_t> too_short;  // documents known to be shorter than seqlen
  for (int w = 0; w < n_windows; ++w) {
    size_t doc = 0;
    int64_t len = 0;
    for (;;) {
      doc = size_t(rng.randint(0, int64_t(n_docs) - 1));
      ++s.draws;
      len = doc_tokens(doc);
      if (len >= seqlen) break;
      too_short.insert(doc);
      // The reference would loop forever here.
      MH_CHECK(too_short.size() < n_docs, "c4: none of the ", n_docs, " documents has ", seqlen,
               " tokens (the window length); use a smaller --seqlen or a larger shard");
    }
    C4Pick p{doc, 0};
    if (len == seqlen)
      ++s.exact_length_docs;
    else
      p.start = rng.randint(0, len - seqlen - 1);
    s.picks.push_back(p);
  }
  return s;
}

}  // namespace metharme::eval
