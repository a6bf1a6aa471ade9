// The GBNF parser and matcher: each piece of syntax against texts it must accept and refuse,
// malformed grammars with the line and column of the fault, UTF-8 split across byte tokens, the
// limits, JSON and JSON Schema grammars, and mutated grammars that must never crash.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

#include "chat/generate.h"
#include "grammar/gbnf.h"
#include "grammar/json_schema.h"
#include "grammar/matcher.h"
#include "support/test_util.h"
#include "tokenizer/tokenizer.h"

namespace metharme::grammar {
namespace {

// A vocabulary of the 256 single bytes (ids 0..255; 0x80 and up are byte pieces), an empty
// control token 256, then whole UTF-8 characters on demand.
struct Vocab {
  std::vector<std::string> texts;
  std::unique_ptr<TokenTable> table;
  Vocab() {
    for (int b = 0; b < 256; ++b) texts.push_back(std::string(1, char(b)));
    texts.push_back("");
    for (const char* t : {"é", "€", "😀", "hello", " {", "{\"", "\":", "\"}", "ab"}) texts.push_back(t);
    table = std::make_unique<TokenTable>(texts);
  }
  int id(const std::string& t) const {
    for (size_t i = 0; i < texts.size(); ++i)
      if (texts[i] == t) return int(i);
    return -1;
  }
};
const Vocab& vocab() {
  static Vocab v;
  return v;
}

// Feeds text one byte token at a time (multi-byte characters as byte pieces).
bool accepts_bytes(Matcher& m, const std::string& text) {
  for (unsigned char c : text)
    if (!m.accept(c)) return false;
  return true;
}

// True when the grammar matches the whole text (fed byte by byte).
bool full_match(const std::string& gbnf, const std::string& text) {
  Matcher m(parse_gbnf(gbnf), *vocab().table);
  return accepts_bytes(m, text) && m.can_end();
}

// True when the text is a prefix of some match.
bool prefix_ok(const std::string& gbnf, const std::string& text) {
  Matcher m(parse_gbnf(gbnf), *vocab().table);
  return accepts_bytes(m, text);
}

TEST(Grammar, LiteralsAndAlternatives) {
  const char* g = "root ::= \"yes\" | \"no\" | \"maybe\"";
  EXPECT_TRUE(full_match(g, "yes"));
  EXPECT_TRUE(full_match(g, "maybe"));
  EXPECT_FALSE(full_match(g, "ye"));
  EXPECT_TRUE(prefix_ok(g, "ye"));
  EXPECT_FALSE(prefix_ok(g, "yes!"));
  EXPECT_FALSE(prefix_ok(g, "x"));
}

TEST(Grammar, ClassesRangesNegationAndAny) {
  EXPECT_TRUE(full_match("root ::= [a-c0-9_]+", "ab9_c"));
  EXPECT_FALSE(full_match("root ::= [a-c0-9_]+", "abd"));
  EXPECT_FALSE(full_match("root ::= [a-c]+", ""));
  EXPECT_TRUE(full_match("root ::= [^\"\\n]*", "no quote here"));
  EXPECT_FALSE(full_match("root ::= [^\"\\n]*", "a\"b"));
  EXPECT_TRUE(full_match("root ::= . . .", "a\xc3\xa9z"));  // three characters, one of them two bytes
  EXPECT_TRUE(full_match("root ::= [-a]+", "-a-"));         // a leading '-' is literal
  EXPECT_TRUE(full_match("root ::= [a-]+", "a-"));          // and so is a trailing one
}

TEST(Grammar, Escapes) {
  EXPECT_TRUE(full_match("root ::= \"\\x41\\u00e9\\U0001F600\\t\\n\\\\\\\"\"", "A\xc3\xa9\xf0\x9f\x98\x80\t\n\\\""));
  EXPECT_TRUE(full_match("root ::= [\\x30-\\x39\\]]+", "1]2"));
}

TEST(Grammar, Repetitions) {
  const char* g = "root ::= \"a\"{2} \"b\"{1,3} \"c\"{2,} \"d\"{,1} \"e\"?";
  EXPECT_TRUE(full_match(g, "aabcc"));
  EXPECT_TRUE(full_match(g, "aabbbcccccde"));
  EXPECT_FALSE(full_match(g, "abcc"));
  EXPECT_FALSE(full_match(g, "aabbbbcc"));
  EXPECT_FALSE(full_match(g, "aabc"));
  EXPECT_FALSE(full_match(g, "aabccdd"));
  // A repeated literal repeats as a whole.
  EXPECT_TRUE(full_match("root ::= \"ab\"+", "ababab"));
  EXPECT_FALSE(full_match("root ::= \"ab\"+", "aba"));
}

TEST(Grammar, RulesGroupsCommentsAndLines) {
  const char* g =
      "# a list of words\r\n"
      "root ::= word (\",\" ws word)*   # comment after a rule\n"
      "\n"
      "word ::= [a-z]+\n"
      "ws ::= (\n"
      "  \" \" |\n"
      "  \"\"\n"
      ")\n";
  EXPECT_TRUE(full_match(g, "cat, dog,fish"));
  EXPECT_FALSE(full_match(g, "cat,,dog"));
  EXPECT_FALSE(full_match(g, "cat,"));
  EXPECT_TRUE(prefix_ok(g, "cat,"));
}

TEST(Grammar, NestingUsesTheStack) {
  const char* g = "root ::= \"(\" root \")\" | \"x\"";
  EXPECT_TRUE(full_match(g, "((((x))))"));
  EXPECT_FALSE(full_match(g, "((x)"));
  // Deeper than the stack limit the path is dropped: the grammar refuses, nothing crashes.
  std::string deep(size_t(kMaxStackDepth) + 10, '(');
  EXPECT_FALSE(prefix_ok(g, deep));
}

TEST(Grammar, AmbiguityStaysBounded) {
  const char* g = "root ::= (\"a\" | \"a\" | [a-b])*";
  EXPECT_TRUE(full_match(g, std::string(2000, 'a')));
}

TEST(Grammar, Utf8AcrossByteTokens) {
  const Vocab& v = vocab();
  auto g = parse_gbnf("root ::= \"é\" [€-€]");
  Matcher m(g, *v.table);
  EXPECT_TRUE(m.allows(0xC3));   // could start é
  EXPECT_FALSE(m.allows(0xE2));  // a three-byte character cannot be é
  EXPECT_TRUE(m.allows(v.id("é")));
  EXPECT_FALSE(m.allows('e'));
  ASSERT_TRUE(m.accept(0xC3));
  EXPECT_FALSE(m.allows('a'));  // the character must be finished first
  EXPECT_FALSE(m.can_end());
  ASSERT_TRUE(m.accept(0xA9));
  EXPECT_TRUE(m.allows(v.id("€")));
  EXPECT_FALSE(m.allows(v.id("é")));
  ASSERT_TRUE(m.accept(v.id("€")));
  EXPECT_TRUE(m.can_end());
  EXPECT_FALSE(m.allows(256));  // an empty (control) token never fits
}

TEST(Grammar, OverlongAndInvalidUtf8NeverMatch) {
  // F0 80 81 BB would decode to '{' if overlong forms were allowed.
  EXPECT_FALSE(prefix_ok("root ::= \"{\"", "\xf0\x80\x81\xbb"));
  EXPECT_FALSE(prefix_ok("root ::= \"{\"", "\xf0"));
  EXPECT_FALSE(prefix_ok("root ::= .", "\xc1\xbf"));          // overlong two-byte form
  EXPECT_FALSE(prefix_ok("root ::= .", "\xed\xa0\x80"));      // a surrogate
  EXPECT_FALSE(prefix_ok("root ::= .", "\xf4\x90\x80\x80"));  // past U+10FFFF
  EXPECT_FALSE(prefix_ok("root ::= .*", "\x80"));             // a stray continuation byte
  EXPECT_TRUE(full_match("root ::= .", "\xf4\x8f\xbf\xbf"));  // U+10FFFF itself
}

TEST(Grammar, MultiCharacterTokensAndLeadingSpace) {
  const Vocab& v = vocab();
  auto g = parse_gbnf("root ::= \"{\" [a-z]* \"}\"");
  Matcher m(g, *v.table);
  EXPECT_FALSE(m.allows(v.id(" {")));
  m.set_skip_leading_space(true);  // the text's first space is dropped, so " {" reads as "{"
  EXPECT_TRUE(m.allows(v.id(" {")));
  ASSERT_TRUE(m.accept(v.id(" {")));
  EXPECT_TRUE(m.allows(v.id("hello")));
  EXPECT_FALSE(m.allows(' '));  // only the first token's space is skipped
  EXPECT_FALSE(m.allows(v.id("\"}")));
  ASSERT_TRUE(m.accept(v.id("hello")));
  ASSERT_TRUE(m.accept('}'));
  EXPECT_TRUE(m.can_end());
  EXPECT_FALSE(m.allows('a'));
}

// The error text of a grammar that must not parse.
std::string error_of(const std::string& gbnf, int& line, int& col) {
  try {
    parse_gbnf(gbnf);
  } catch (const GrammarError& e) {
    line = e.line();
    col = e.column();
    return e.what();
  }
  return "";
}

struct Bad {
  const char* gbnf;
  int line, col;
  const char* words;
};

TEST(Grammar, MalformedGrammarsNameLineAndColumn) {
  const Bad cases[] = {
      {"rot ::= \"a\"", 1, 12, "no 'root' rule"},
      {"root ::= a\n", 1, 10, "rule 'a' is not defined"},
      {"root ::= \"abc", 1, 10, "unterminated string literal"},
      {"root ::= [abc", 1, 10, "unterminated character class"},
      {"root ::= \"a\"\nx ::= \"\\q\"", 2, 8, "unknown escape"},
      {"root ::= [z-a]", 1, 12, "range ends before it starts"},
      {"root ::= \"a\" \"b\" )", 1, 18, "expected the end of the line"},
      {"root ::= * \"a\"", 1, 10, "nothing before it"},
      {"root = \"a\"", 1, 6, "expected '::='"},
      {"root ::= (\"a\"", 1, 10, "unclosed '('"},
      {"root ::= \"a\"{3,1}", 1, 13, "max below min"},
      {"root ::= \"a\"{5000}", 1, 14, "limited to"},
      {"root ::= \"a\"\nroot ::= \"b\"", 2, 1, "defined twice"},
      {"root ::= root \"a\" | \"b\"", 1, 1, "left-recursive"},
      {"root ::= x\nx ::= y \"a\"\ny ::= \"\" | x", 2, 1, "left-recursive"},
      {"root ::= (\"\")* \"a\"", 1, 1, "left-recursive"},
      {"root ::= \"\\x4\"", 1, 14, "hex digits"},
  };
  for (const Bad& b : cases) {
    int line = 0, col = 0;
    std::string msg = error_of(b.gbnf, line, col);
    EXPECT_NE(msg.find(b.words), std::string::npos) << b.gbnf << " -> " << msg;
    EXPECT_EQ(line, b.line) << b.gbnf << " -> " << msg;
    EXPECT_EQ(col, b.col) << b.gbnf << " -> " << msg;
  }
}

TEST(Grammar, SizeLimits) {
  int line = 0, col = 0;
  std::string nest = "root ::= " + std::string(kMaxNesting + 1, '(') + "\"a\"" + std::string(kMaxNesting + 1, ')');
  EXPECT_NE(error_of(nest, line, col).find("nest deeper"), std::string::npos);
  std::string big = "root ::= \"b\"";
  for (int i = 0; i < 101; ++i) big += " | \"a\"{2000}";
  EXPECT_NE(error_of(big, line, col).find("more than"), std::string::npos);
  EXPECT_NE(error_of(std::string(kMaxGrammarBytes + 1, ' '), line, col).find("longer than"), std::string::npos);
}

TEST(Grammar, JsonObject) {
  const std::string g = json_object_gbnf();
  EXPECT_TRUE(full_match(g, R"({})"));
  EXPECT_TRUE(full_match(g, "{\n  \"a\": [1, -2.5e3, true, null, \"x\\\"\\u00e9\"],\n  \"b\": {\"c\": {}}\n}"));
  EXPECT_FALSE(full_match(g, R"([1])"));
  EXPECT_FALSE(full_match(g, R"({"a":})"));
  EXPECT_FALSE(full_match(g, R"({"a":01})"));
  EXPECT_FALSE(full_match(g, "{\"a\n\":1}"));
  EXPECT_TRUE(prefix_ok(g, R"({"a": [1, 2)"));
}

TEST(Grammar, JsonSchemaSubset) {
  nlohmann::json schema = {{"type", "object"},
                           {"properties",
                            {{"name", {{"type", "string"}, {"maxLength", 5}}},
                             {"age", {{"type", "integer"}}},
                             {"tags", {{"type", "array"}, {"items", {{"enum", {"a", "b"}}}}, {"maxItems", 2}}},
                             {"ok", {{"type", {"boolean", "null"}}}}}},
                           {"required", {"name", "age"}}};
  const std::string g = schema_to_gbnf(schema);
  // nlohmann orders properties by name: age, name, ok, tags.
  EXPECT_TRUE(full_match(g, R"({"age": 3, "name": "Lily"})")) << g;
  EXPECT_TRUE(full_match(g, R"({"age":3,"name":"Lily","ok":null,"tags":["a","b"]})"));
  EXPECT_TRUE(full_match(g, R"({"age":3,"name":"Lily","tags":[]})"));
  EXPECT_FALSE(full_match(g, R"({"name":"Lily"})"));                            // age is required
  EXPECT_FALSE(full_match(g, R"({"age":3,"name":"Lilyanne"})"));                // maxLength 5
  EXPECT_FALSE(full_match(g, R"({"age":3.5,"name":"L"})"));                     // integer
  EXPECT_FALSE(full_match(g, R"({"age":3,"name":"L","tags":["a","b","a"]})"));  // maxItems 2
  EXPECT_FALSE(full_match(g, R"({"age":3,"name":"L","extra":1})"));
  EXPECT_TRUE(full_match(schema_to_gbnf(nlohmann::json::object()), "[1, {\"x\": \"y\"}]"));
  EXPECT_TRUE(full_match(schema_to_gbnf({{"const", "hi"}}), "\"hi\""));
}

TEST(Grammar, JsonSchemaRefusesWhatItCannotDo) {
  auto err = [](const nlohmann::json& s) {
    try {
      schema_to_gbnf(s);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(err({{"type", "string"}, {"pattern", "^a"}}).find("'pattern' at $"), std::string::npos);
  EXPECT_NE(err({{"type", "object"}, {"properties", {{"x", {{"$ref", "#/a"}}}}}}).find("'$ref' at $.properties.x"),
            std::string::npos);
  EXPECT_NE(err({{"type", "thing"}}).find("unknown type 'thing'"), std::string::npos);
  EXPECT_NE(err({{"type", "object"}, {"additionalProperties", true}}).find("additionalProperties"), std::string::npos);
  EXPECT_NE(
      err({{"type", "object"}, {"properties", {{"a", {{"type", "null"}}}}}, {"required", {"b"}}}).find("'required'"),
      std::string::npos);
}

// The trie walk that filters the whole vocabulary agrees with checking each token, on the
// 32000-token LLaMA vocabulary, in JSON states from strict to permissive.
TEST(Grammar, WholeVocabularyWalkAgreesWithEachToken) {
  Tokenizer tok(test::fixture("tokenizer/llama/tokenizer.model"));
  TokenTable table(grammar_token_texts(tok, tok.vocab_size()));
  Matcher m(parse_gbnf(json_object_gbnf()), table);
  m.set_skip_leading_space(true);
  std::vector<int> reply = tok.encode("{\"name\": \"Li\u00e9\", \"n\": [1.5, -2], \"ok\": true}", false);
  std::vector<uint8_t> ok;
  int states = 0;
  for (size_t i = 0; i <= reply.size(); ++i) {
    m.allowed_tokens(ok);
    int n_ok = 0;
    for (int id = 0; id < tok.vocab_size(); ++id) {
      ASSERT_EQ(bool(ok[size_t(id)]), m.allows(id)) << "token " << id << " '" << tok.piece(id) << "' after " << i;
      n_ok += ok[size_t(id)];
    }
    EXPECT_GT(n_ok + int(m.can_end()), 0);
    ++states;
    if (i < reply.size()) {
      ASSERT_TRUE(m.accept(reply[i])) << tok.piece(reply[i]);
    }
  }
  EXPECT_TRUE(m.can_end());
  EXPECT_GT(states, 10);
}

// Random mutations of valid grammars: each parses or fails with a GrammarError, never crashes
// or hangs, and what parses can be matched against random tokens.
TEST(Grammar, MutatedGrammarsNeverCrash) {
  const std::vector<std::string> seeds = {
      "root ::= \"a\" | [b-d]+ (x | \"\\x41\")?\nx ::= \"q\"{1,3} .*",
      json_object_gbnf(),
      "root ::= item{2,4}\nitem ::= [^\\n]* \"\\n\" # comment",
  };
  const char alphabet[] = "()[]{}|*+?.\"\\-^#:= \nabx019,";
  std::mt19937 rng(1234);
  int parsed = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string g = seeds[size_t(iter) % seeds.size()];
    int edits = 1 + int(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      size_t at = rng() % (g.size() + 1);
      char c = alphabet[rng() % (sizeof alphabet - 1)];
      switch (rng() % 3) {
        case 0:
          g.insert(g.begin() + ptrdiff_t(at), c);
          break;
        case 1:
          if (at < g.size()) g.erase(at, 1);
          break;
        default:
          if (at < g.size()) g[at] = c;
          break;
      }
    }
    std::shared_ptr<const Grammar> gr;
    try {
      gr = parse_gbnf(g);
    } catch (const GrammarError&) {
      continue;
    }
    ++parsed;
    Matcher m(gr, *vocab().table);
    for (int t = 0; t < 20 && !m.dead(); ++t) m.accept(int(rng() % 256));
  }
  EXPECT_GT(parsed, 100);  // the mutations also reach the matcher
}

}  // namespace
}  // namespace metharme::grammar
