// Evaluation corpora: CPython-compatible random draws, file formats, GPTQ-for-LLaMa's join rules
// per dataset, c4 window sampling and the windows each protocol cuts.
#include <gtest/gtest.h>
#include <zlib.h>

#include <fstream>

#include "eval/corpus.h"
#include "eval/eval_set.h"
#include "util/py_random.h"
#include "support/test_util.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/fs.h"

namespace metharme::eval {
namespace {

void write_file(const std::string& path, const std::string& s) { std::ofstream(path, std::ios::binary) << s; }

void write_gz(const std::string& path, const std::string& s) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, s.data(), unsigned(s.size())), int(s.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

std::string jsonl(const std::vector<std::string>& texts, const char* field = "text") {
  std::string out;
  for (const auto& t : texts) out += nlohmann::json{{field, t}, {"url", "x"}}.dump() + "\n";
  return out;
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

Tokenizer llama_tok() { return Tokenizer(test::fixture("tokenizer/llama/tokenizer.model")); }

std::vector<int32_t> enc(const Tokenizer& t, const std::string& s) {
  auto v = t.encode(s, true);
  return {v.begin(), v.end()};
}

// Expected values printed by CPython 3.11's random module.
TEST(PyRandom, MatchesCPython) {
  PyRandom r(0);
  EXPECT_EQ(r.next_u32(), 3626764237u);
  EXPECT_EQ(r.next_u32(), 1654615998u);
  EXPECT_EQ(r.next_u32(), 3255389356u);
  r.seed_int(0);  // random.seed(0); [random.randint(0, 45575) for _ in range(8)]
  std::vector<int64_t> want = {25247, 27562, 2653, 16968, 33506, 31845, 26537, 19877};
  for (int64_t w : want) EXPECT_EQ(r.randint(0, 45575), w);
  r.seed_int(0);  // [random.getrandbits(k) for k in (1, 7, 31, 33, 64)]
  EXPECT_EQ(r.getrandbits(1), 1u);
  EXPECT_EQ(r.getrandbits(7), 49u);
  EXPECT_EQ(r.getrandbits(31), 1627694678u);
  EXPECT_EQ(r.getrandbits(33), 3823568514u);
  EXPECT_EQ(r.getrandbits(64), 4776171008201404212u);
  PyRandom big(int64_t(1234567890123456789));  // a two-word key
  big.seed_int(-5);                             // seed(-5) == seed(5)
  EXPECT_EQ(big.next_u32(), 2675342405u);
  EXPECT_EQ(big.next_u32(), 1097127993u);
}

TEST(Corpus, PyStripUsesPythonWhitespace) {
  EXPECT_EQ(py_strip("  a b \t\n"), "a b");
  EXPECT_EQ(py_strip("\xE3\x80\x80 x \xC2\xA0\x1f"), "x");  // U+3000, NBSP, unit separator
  EXPECT_EQ(py_strip("\xC3\xA9t\xC3\xA9"), "\xC3\xA9t\xC3\xA9");  // "été": letters are kept
  EXPECT_EQ(py_strip(" \xE2\x80\x83 "), "");                       // em space only
}

TEST(Corpus, WikitextRawRowsJoinLikeTheHfDataset) {
  test::TempDir tmp;
  // wiki.test.raw layout: blank lines hold a space; one line uses CRLF.
  write_file(tmp / "wiki.test.raw", " \n = A = \n \n B \r\n C \n");
  Corpus c = read_corpus(tmp / "wiki.test.raw", Dataset::kWikitext2);
  EXPECT_EQ(c.format, "text");
  EXPECT_EQ(c.rows, (std::vector<std::string>{"", " = A = \n", "", " B \n", " C \n"}));
  EXPECT_EQ(gptq_join(Dataset::kWikitext2, c.rows), "\n\n = A = \n\n\n\n\n B \n\n\n C \n");
  // The same rows as HF JSON lines give the same text.
  write_file(tmp / "wiki.jsonl", jsonl({"", " = A = \n", "", " B \n", " C \n"}));
  Corpus j = read_corpus(tmp / "wiki.jsonl", Dataset::kWikitext2);
  EXPECT_EQ(j.format, "JSON lines");
  EXPECT_EQ(j.rows, c.rows);
  // And as a JSON array of strings.
  write_file(tmp / "wiki.json", R"(["", " = A = \n"])");
  EXPECT_EQ(read_corpus(tmp / "wiki.json", Dataset::kWikitext2).rows, (std::vector<std::string>{"", " = A = \n"}));
}

TEST(Corpus, PtbSentencesAreStrippedAndJoinedPerProtocol) {
  test::TempDir tmp;
  write_file(tmp / "ptb.txt", " a b \n c <unk> d\n e");
  Corpus c = read_corpus(tmp / "ptb.txt", Dataset::kPtb);
  EXPECT_EQ(c.rows, (std::vector<std::string>{"a b", "c <unk> d", "e"}));
  EXPECT_EQ(gptq_join(Dataset::kPtb, c.rows), "a b\n\nc <unk> d\n\ne");
  EXPECT_EQ(gptq_join(Dataset::kPtbNew, c.rows), "a b c <unk> d e");
  write_file(tmp / "ptb.jsonl", jsonl({"x y", "z"}, "sentence"));
  EXPECT_EQ(read_corpus(tmp / "ptb.jsonl", Dataset::kPtbNew).rows, (std::vector<std::string>{"x y", "z"}));
}

TEST(Corpus, SharedDataFilesReadAsDocumented) {
  Corpus w = read_corpus(test::shared("data/wikitext2-test.txt"), Dataset::kWikitext2);
  EXPECT_EQ(w.rows.size(), 2891u);
  EXPECT_EQ(w.rows[0], " = Robert Boulter = \n");
  Corpus p = read_corpus(test::shared("data/ptb-test.txt"), Dataset::kPtbNew);
  EXPECT_EQ(p.rows.size(), 3761u);
  EXPECT_EQ(p.rows[0], "no it was n't black monday");
}

TEST(Corpus, C4JsonGzShardAndC4NewJoin) {
  test::TempDir tmp;
  std::vector<std::string> docs;
  for (int i = 0; i < 1105; ++i) docs.push_back("doc" + std::to_string(i));
  write_gz(tmp / "c4-validation.00000-of-00008.json.gz", jsonl(docs));
  Corpus c = read_corpus(tmp / "c4-validation.00000-of-00008.json.gz", Dataset::kC4New);
  EXPECT_EQ(c.format, "JSON lines, gzip");
  ASSERT_EQ(c.rows.size(), 1105u);
  std::string joined = gptq_join(Dataset::kC4New, c.rows);
  EXPECT_EQ(joined.substr(0, 14), "doc0 doc1 doc2");
  EXPECT_NE(joined.find(" doc1099"), std::string::npos);
  EXPECT_EQ(joined.find("doc1100"), std::string::npos);  // only the first 1100 documents
  EXPECT_EQ(joined.back(), '9');
}

// Expected picks from CPython: random.seed(0), then the reference loop over these lengths.
TEST(Corpus, C4SamplerDrawsLikeGptqForLlama) {
  std::vector<int64_t> len = {5, 40, 12, 100, 7, 64, 33, 16, 200, 3, 15, 17};
  C4Sample s = sample_c4_windows(len.size(), [&](size_t i) { return len[i]; }, 16, 10, 0);
  std::vector<std::pair<size_t, int64_t>> want = {{6, 13}, {8, 124}, {6, 9}, {7, 0}, {5, 37},
                                                  {3, 64}, {1, 19},  {8, 180}, {1, 23}, {1, 21}};
  ASSERT_EQ(s.picks.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(s.picks[i].doc, want[i].first) << i;
    EXPECT_EQ(s.picks[i].start, want[i].second) << i;
  }
  EXPECT_EQ(s.draws, 19);
  EXPECT_EQ(s.exact_length_docs, 1);  // document 7 has exactly 16 tokens
  std::vector<int64_t> short_docs = {3, 5, 7};
  EXPECT_NE(error_of([&] { sample_c4_windows(3, [&](size_t i) { return short_docs[i]; }, 16); })
                .find("none of the 3 documents has 16 tokens"),
            std::string::npos);
}

TEST(EvalSet, C4WindowsAreSlicesOfSeparatelyTokenizedDocuments) {
  test::TempDir tmp;
  Tokenizer tok = llama_tok();
  std::vector<std::string> docs;
  for (int i = 0; i < 40; ++i) {
    std::string d;
    for (int k = 0; k < (i % 7) * 5; ++k) d += "word" + std::to_string(i * 100 + k) + " ";
    docs.push_back(d);
  }
  write_gz(tmp / "c4.json.gz", jsonl(docs));
  Corpus c = read_corpus(tmp / "c4.json.gz", Dataset::kC4);
  EvalSet s = build_eval_set(c, Dataset::kC4, tok, {Protocol::kGptq, 32, 0});
  ASSERT_EQ(s.n_windows(), kC4Windows);
  C4Sample want = sample_c4_windows(docs.size(), [&](size_t i) { return int64_t(enc(tok, docs[i]).size()); }, 32);
  for (int w = 0; w < s.n_windows(); ++w) {
    auto ids = enc(tok, docs[want.picks[size_t(w)].doc]);
    std::vector<int32_t> expect(ids.begin() + want.picks[size_t(w)].start, ids.begin() + want.picks[size_t(w)].start + 32);
    std::vector<int32_t> got(s.tokens.begin() + w * 32, s.tokens.begin() + (w + 1) * 32);
    ASSERT_EQ(got, expect) << "window " << w;
  }
  EXPECT_EQ(s.first_scored, 0);
  EXPECT_FALSE(s.bos_each_window);
}

TEST(EvalSet, GptqWindowsC4NewCapAndLlamaCppChunks) {
  test::TempDir tmp;
  Tokenizer tok = llama_tok();
  std::vector<std::string> docs;
  for (int i = 0; i < 1200; ++i) docs.push_back("the quick brown fox " + std::to_string(i));
  write_file(tmp / "c4.jsonl", jsonl(docs));
  Corpus c = read_corpus(tmp / "c4.jsonl", Dataset::kC4New);
  EvalSet s = build_eval_set(c, Dataset::kC4New, tok, {Protocol::kGptq, 16, 0});
  auto all = enc(tok, gptq_join(Dataset::kC4New, c.rows));
  ASSERT_GT(all.size(), size_t(kC4Windows) * 16);
  EXPECT_EQ(s.n_windows(), kC4Windows);  // 256 x seqlen tokens kept
  EXPECT_EQ(std::vector<int32_t>(all.begin(), all.begin() + kC4Windows * 16), s.tokens);

  // wikitext2 rows: one BOS at the very start, windows cut without overlap, tail dropped, --limit.
  write_file(tmp / "w.raw", " \n = Title = \n \n Some text here , and more text . \n");
  Corpus w = read_corpus(tmp / "w.raw", Dataset::kWikitext2);
  auto ids = enc(tok, gptq_join(Dataset::kWikitext2, w.rows));
  EvalSet g = build_eval_set(w, Dataset::kWikitext2, tok, {Protocol::kGptq, 4, 2});
  EXPECT_EQ(g.corpus_tokens, int64_t(ids.size()));
  EXPECT_EQ(g.windows_available, int64_t(ids.size() / 4));
  EXPECT_EQ(g.n_windows(), 2);
  EXPECT_EQ(g.tokens, std::vector<int32_t>(ids.begin(), ids.begin() + 8));
  EXPECT_EQ(g.token(1, 0), ids[4]);  // no BOS re-inserted

  // llama.cpp: the file as is; BOS replaces the first token of every chunk; second half scored.
  EvalSet l = build_eval_set(w, Dataset::kWikitext2, tok, {Protocol::kLlamaCpp, 6, 0});
  auto raw = enc(tok, w.raw);
  EXPECT_EQ(l.corpus_tokens, int64_t(raw.size()));
  EXPECT_EQ(l.first_scored, 3);
  EXPECT_EQ(l.scored_per_window(), 2);
  EXPECT_EQ(l.token(1, 0), tok.bos());
  EXPECT_EQ(l.token(1, 1), raw[7]);
}

TEST(EvalSet, ClearErrorsForBadInput) {
  test::TempDir tmp;
  Tokenizer tok = llama_tok();
  write_file(tmp / "empty.txt", "");
  EXPECT_NE(error_of([&] { read_corpus(tmp / "empty.txt", Dataset::kText); }).find("empty.txt: the file is empty"),
            std::string::npos);
  write_file(tmp / "blank.txt", " \n\n ");
  EXPECT_NE(error_of([&] { read_corpus(tmp / "blank.txt", Dataset::kWikitext2); }).find("is empty"), std::string::npos);
  EXPECT_NE(error_of([&] { read_corpus(tmp / "missing.txt", Dataset::kText); }).find("missing.txt: cannot open"),
            std::string::npos);
  write_file(tmp / "short.txt", "Hello world, this is short.");
  Corpus c = read_corpus(tmp / "short.txt", Dataset::kText);
  EXPECT_NE(error_of([&] { build_eval_set(c, Dataset::kText, tok, {Protocol::kGptq, 2048, 0}); })
                .find("short.txt: the evaluation text is 8 tokens, shorter than one window of 2048 tokens (--seqlen 2048)"),
            std::string::npos);
  EXPECT_NE(error_of([&] { read_corpus(tmp / "short.txt", Dataset::kC4); }).find("c4 expects an allenai/c4 shard"),
            std::string::npos);
  write_file(tmp / "bad.jsonl", "{\"text\": \"a\"}\n{\"text\": \"b\"\n");
  EXPECT_NE(error_of([&] { read_corpus(tmp / "bad.jsonl", Dataset::kWikitext2); }).find("bad.jsonl:2: not valid JSON"),
            std::string::npos);
  write_file(tmp / "nofield.jsonl", "{\"body\": \"a\"}\n");
  EXPECT_NE(error_of([&] { read_corpus(tmp / "nofield.jsonl", Dataset::kC4); }).find("nofield.jsonl:1: row has no \"text\" field"),
            std::string::npos);
  write_file(tmp / "trunc.gz", "");
  {
    std::string big(100000, 'x');
    write_gz(tmp / "full.gz", big);
    std::ifstream in(tmp / "full.gz", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    write_file(tmp / "trunc.gz", bytes.substr(0, bytes.size() / 2));
  }
  EXPECT_NE(error_of([&] { read_maybe_gzip(tmp / "trunc.gz"); }).find("trunc.gz"), std::string::npos);
  EXPECT_NE(error_of([] { parse_dataset("wiki"); }).find("unknown dataset \"wiki\""), std::string::npos);
  EXPECT_NE(error_of([] { parse_protocol("hf"); }).find("unknown protocol"), std::string::npos);
}

}  // namespace
}  // namespace metharme::eval
