// GBNF grammars (llama.cpp's syntax) compiled to a flat table of rule elements that the matcher
// (grammar/matcher.h) walks. Syntax: `name ::= alternatives` per rule, `|` between alternatives,
// "literals", [classes] with ranges and ^ negation, `.` for any character, (groups), the
// postfix operators * + ? {m} {m,} {m,n} {,n}, escapes \n \r \t \\ \" \[ \] \xHH \uHHHH
// \UHHHHHHHH, and # comments. A rule ends at a newline unless inside parentheses or after `|`.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "util/error.h"

namespace metharme::grammar {

// Limits that keep a client's grammar from taking unbounded memory or time.
constexpr size_t kMaxGrammarBytes = 256 * 1024;
constexpr size_t kMaxElements = 200000;  // after repetitions are expanded
constexpr int kMaxNesting = 64;          // parentheses inside parentheses
constexpr int kMaxRepeat = 2000;         // m and n of {m,n}

// A malformed grammar: what() reads "grammar: line L, column C: message" (column in bytes, 1-based).
class GrammarError : public Error {
 public:
  GrammarError(const std::string& msg, int line, int column)
      : Error(cat("grammar: line ", line, ", column ", column, ": ", msg)), line_(line), column_(column) {}
  int line() const { return line_; }
  int column() const { return column_; }

 private:
  int line_, column_;
};

// A set of code points: sorted, merged ranges, possibly negated, with an ASCII bitmap.
struct CharClass {
  std::vector<std::pair<uint32_t, uint32_t>> ranges;  // inclusive [lo, hi]
  bool negated = false;
  uint64_t ascii[2] = {0, 0};  // bit c set: code point c (< 128) matches
  void finish();               // sorts ranges and fills the bitmap
  bool matches(uint32_t cp) const {
    if (cp < 128) return (ascii[cp >> 6] >> (cp & 63)) & 1;
    return matches_slow(cp);
  }
  bool matches_slow(uint32_t cp) const;
  bool may_match(uint32_t lo, uint32_t hi) const;  // some code point of [lo, hi] matches
};

enum class Kind : uint8_t { kEnd, kChar, kRef };

// One element of a rule alternative. kEnd closes an alternative (arg 1 when it is the rule's
// last); kChar matches one code point of classes[arg]; kRef expands rule arg.
struct Element {
  Kind kind;
  uint32_t arg;
};

// A compiled grammar. elems holds every alternative of every rule, each ending in kEnd;
// alts[alt_begin[r] .. alt_begin[r + 1]) are the element indices where rule r's alternatives start.
struct Grammar {
  std::vector<Element> elems;
  std::vector<uint32_t> alts, alt_begin;
  std::vector<CharClass> classes;
  std::vector<std::string> rule_names;  // user rules by name, helper rules as "name/3"
  uint32_t root = 0;
};

// Parses and checks GBNF text: undefined or twice-defined rules, a missing `root`, left
// recursion (also through rules that can match nothing) and the size limits are GrammarErrors.
std::shared_ptr<const Grammar> parse_gbnf(std::string_view text);

}  // namespace metharme::grammar
