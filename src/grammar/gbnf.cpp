#include "grammar/gbnf.h"

#include <algorithm>
#include <map>

namespace metharme::grammar {

void CharClass::finish() {
  std::sort(ranges.begin(), ranges.end());
  std::vector<std::pair<uint32_t, uint32_t>> merged;
  for (const auto& r : ranges) {
    if (!merged.empty() && r.first <= merged.back().second + 1)
      merged.back().second = std::max(merged.back().second, r.second);
    else
      merged.push_back(r);
  }
  ranges.swap(merged);
  ascii[0] = ascii[1] = 0;
  for (uint32_t c = 0; c < 128; ++c)
    if (matches_slow(c)) ascii[c >> 6] |= uint64_t(1) << (c & 63);
}

bool CharClass::matches_slow(uint32_t cp) const {
  auto it = std::upper_bound(ranges.begin(), ranges.end(), std::make_pair(cp, UINT32_MAX));
  bool in = it != ranges.begin() && std::prev(it)->second >= cp;
  return in != negated;
}

bool CharClass::may_match(uint32_t lo, uint32_t hi) const {
  if (negated) {
    // Some point of [lo, hi] lies outside every range unless one range covers it all.
    for (const auto& r : ranges)
      if (r.first <= lo && r.second >= hi) return false;
    return true;
  }
  for (const auto& r : ranges)
    if (r.first <= hi && r.second >= lo) return true;
  return false;
}

namespace {

struct Item {
  Kind kind;
  uint32_t arg;
};

struct RuleDef {
  std::string name;
  std::vector<std::vector<Item>> alts;
  bool defined = false;
  size_t def_pos = 0;           // where the definition (or, for a helper, its user rule) starts
  size_t first_use = SIZE_MAX;  // first reference, for "undefined rule" errors
  uint32_t origin = 0;          // the user rule a helper rule was made for (itself otherwise)
};

bool is_word_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

class Parser {
 public:
  explicit Parser(std::string_view text) : s_(text) {}

  std::shared_ptr<const Grammar> run() {
    if (s_.size() > kMaxGrammarBytes) throw error(0, cat("the grammar is longer than ", kMaxGrammarBytes, " bytes"));
    skip_space(true);
    while (pos_ < s_.size()) parse_rule();
    auto root = ids_.find("root");
    if (root == ids_.end() || !rules_[root->second].defined) throw error(s_.size(), "the grammar has no 'root' rule");
    for (const RuleDef& r : rules_)
      if (!r.defined) throw error(r.first_use, cat("rule '", r.name, "' is not defined"));
    check_left_recursion();
    return compile(root->second);
  }

 private:
  GrammarError error(size_t at, const std::string& msg) const {
    at = std::min(at, s_.size());
    int line = 1;
    size_t line_start = 0;
    for (size_t i = 0; i < at; ++i)
      if (s_[i] == '\n') ++line, line_start = i + 1;
    return GrammarError(msg, line, int(at - line_start) + 1);
  }

  void skip_space(bool newline_ok) {
    while (pos_ < s_.size()) {
      char c = s_[pos_];
      if (c == ' ' || c == '\t') {
        ++pos_;
      } else if (c == '#') {
        while (pos_ < s_.size() && s_[pos_] != '\n') ++pos_;
      } else if (newline_ok && (c == '\n' || c == '\r')) {
        ++pos_;
      } else {
        break;
      }
    }
  }

  std::string parse_name() {
    size_t b = pos_;
    while (pos_ < s_.size() && is_word_char(s_[pos_])) ++pos_;
    if (pos_ == b) throw error(b, "expected a rule name");
    return std::string(s_.substr(b, pos_ - b));
  }

  uint32_t rule_id(const std::string& name) {
    auto [it, fresh] = ids_.emplace(name, uint32_t(rules_.size()));
    if (fresh) {
      if (rules_.size() >= kMaxElements) throw error(pos_, "the grammar has too many rules");
      rules_.push_back(RuleDef{name, {}, false, 0, SIZE_MAX, uint32_t(rules_.size())});
    }
    return it->second;
  }

  uint32_t helper_rule(std::vector<std::vector<Item>> alts) {
    // '/' cannot occur in a user's rule name, so helper names never collide with them.
    uint32_t id = rule_id(cat(cur_name_, "/", ++helpers_));
    rules_[id].alts = std::move(alts);
    rules_[id].defined = true;
    rules_[id].def_pos = cur_def_;
    rules_[id].origin = cur_origin_;
    count(rules_[id].alts);
    return id;
  }

  void count(const std::vector<std::vector<Item>>& alts) {
    for (const auto& a : alts) elements_ += a.size() + 1;
    if (elements_ > kMaxElements)
      throw error(pos_, cat("the grammar expands to more than ", kMaxElements, " elements"));
  }

  void parse_rule() {
    size_t start = pos_;
    std::string name = parse_name();
    skip_space(false);
    if (s_.substr(pos_, 3) != "::=") throw error(pos_, cat("expected '::=' after the rule name '", name, "'"));
    pos_ += 3;
    skip_space(true);
    uint32_t id = rule_id(name);
    if (rules_[id].defined) throw error(start, cat("rule '", name, "' is defined twice"));
    cur_name_ = name;
    cur_def_ = start;
    cur_origin_ = id;
    auto alts = parse_alternates(false, 0);
    count(alts);
    rules_[id].alts = std::move(alts);
    rules_[id].defined = true;
    rules_[id].def_pos = start;
    skip_space(false);
    if (pos_ < s_.size()) {
      if (s_[pos_] == '\r') ++pos_;
      if (pos_ >= s_.size() || s_[pos_] != '\n') throw error(pos_, "expected the end of the line");
      ++pos_;
    }
    skip_space(true);
  }

  std::vector<std::vector<Item>> parse_alternates(bool nested, int depth) {
    std::vector<std::vector<Item>> alts;
    alts.push_back(parse_sequence(nested, depth));
    while (pos_ < s_.size() && s_[pos_] == '|') {
      ++pos_;
      skip_space(true);
      alts.push_back(parse_sequence(nested, depth));
    }
    return alts;
  }

  uint32_t add_class(CharClass c) {
    c.finish();
    classes_.push_back(std::move(c));
    return uint32_t(classes_.size() - 1);
  }

  uint32_t hex(int digits) {
    uint32_t v = 0;
    for (int i = 0; i < digits; ++i) {
      char c = pos_ < s_.size() ? s_[pos_] : '\0';
      int d = c >= '0' && c <= '9'   ? c - '0'
              : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                     : -1;
      if (d < 0) throw error(pos_, cat("expected ", digits, " hex digits"));
      v = v * 16 + uint32_t(d);
      ++pos_;
    }
    return v;
  }

  // One character of a literal or class, escapes and UTF-8 decoded.
  uint32_t parse_char() {
    size_t at = pos_;
    if (pos_ >= s_.size()) throw error(at, "unexpected end of the grammar");
    uint8_t c = uint8_t(s_[pos_++]);
    uint32_t cp = 0;
    if (c == '\\') {
      if (pos_ >= s_.size()) throw error(at, "unexpected end of the grammar after '\\'");
      char e = s_[pos_++];
      switch (e) {
        case 'x':
          cp = hex(2);
          break;
        case 'u':
          cp = hex(4);
          break;
        case 'U':
          cp = hex(8);
          break;
        case 'n':
          return '\n';
        case 'r':
          return '\r';
        case 't':
          return '\t';
        case '\\':
        case '"':
        case '[':
        case ']':
        case '-':
        case '^':
        case '/':
          return uint32_t(uint8_t(e));
        default:
          throw error(at, cat("unknown escape '\\", e, "'"));
      }
    } else if (c < 0x80) {
      return c;
    } else {
      int more = c >= 0xF0 && c < 0xF8 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : -1;
      if (more < 0) throw error(at, "invalid UTF-8");
      cp = c & (0x3F >> more);
      for (int i = 0; i < more; ++i) {
        if (pos_ >= s_.size() || (uint8_t(s_[pos_]) & 0xC0) != 0x80) throw error(at, "invalid UTF-8");
        cp = (cp << 6) | (uint8_t(s_[pos_++]) & 0x3F);
      }
    }
    if (cp > 0x10FFFF) throw error(at, "code point beyond U+10FFFF");
    return cp;
  }

  Item char_item(uint32_t cp) {
    CharClass c;
    c.ranges.push_back({cp, cp});
    return {Kind::kChar, add_class(std::move(c))};
  }

  void parse_class(std::vector<Item>& seq) {
    size_t at = pos_++;
    CharClass c;
    if (pos_ < s_.size() && s_[pos_] == '^') c.negated = true, ++pos_;
    while (pos_ < s_.size() && s_[pos_] != ']') {
      uint32_t lo = parse_char(), hi = lo;
      if (pos_ + 1 < s_.size() && s_[pos_] == '-' && s_[pos_ + 1] != ']') {
        size_t range_at = pos_++;
        hi = parse_char();
        if (hi < lo) throw error(range_at, "the range ends before it starts");
      }
      c.ranges.push_back({lo, hi});
    }
    if (pos_ >= s_.size()) throw error(at, "unterminated character class");
    ++pos_;
    seq.push_back({Kind::kChar, add_class(std::move(c))});
  }

  int parse_int() {
    size_t b = pos_;
    long v = 0;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
      v = v * 10 + (s_[pos_++] - '0');
      if (v > kMaxRepeat) throw error(b, cat("repetition counts are limited to ", kMaxRepeat));
    }
    return pos_ == b ? -1 : int(v);
  }

  // Replaces seq[from..] by min..max (max -1: unbounded) repetitions of it.
  void repeat(std::vector<Item>& seq, size_t from, int min, int max) {
    std::vector<Item> atom_items(seq.begin() + ptrdiff_t(from), seq.end());
    seq.resize(from);
    Item atom = atom_items.size() == 1 ? atom_items[0] : Item{Kind::kRef, helper_rule({atom_items})};
    for (int i = 0; i < min; ++i) seq.push_back(atom);
    elements_ += size_t(min);
    if (max < 0) {
      // r ::= atom r | ""  (the recursion is in tail position: no stack growth while matching)
      uint32_t r = helper_rule({});
      rules_[r].alts = {{atom, Item{Kind::kRef, r}}, {}};
      count(rules_[r].alts);
      seq.push_back({Kind::kRef, r});
    } else if (max > min) {
      uint32_t prev = helper_rule({{atom}, {}});
      for (int k = 1; k < max - min; ++k) prev = helper_rule({{atom, Item{Kind::kRef, prev}}, {}});
      seq.push_back({Kind::kRef, prev});
    }
  }

  void parse_braces(std::vector<Item>& seq, size_t from) {
    size_t at = pos_++;
    skip_space(true);
    int min = parse_int(), max;
    skip_space(true);
    if (pos_ < s_.size() && s_[pos_] == ',') {
      ++pos_;
      skip_space(true);
      max = parse_int();
      if (min < 0) min = 0;
      skip_space(true);
    } else {
      if (min < 0) throw error(at, "expected a count inside { }");
      max = min;
    }
    if (pos_ >= s_.size() || s_[pos_] != '}') throw error(at, "expected '}' after the repetition counts");
    ++pos_;
    if (max >= 0 && max < min) throw error(at, cat("the repetition {", min, ",", max, "} has max below min"));
    repeat(seq, from, min, max);
  }

  std::vector<Item> parse_sequence(bool nested, int depth) {
    std::vector<Item> seq;
    size_t last = SIZE_MAX;  // where the last atom begins in seq
    while (pos_ < s_.size()) {
      char c = s_[pos_];
      size_t at = pos_;
      if (c == '"') {
        ++pos_;
        last = seq.size();
        while (pos_ < s_.size() && s_[pos_] != '"') seq.push_back(char_item(parse_char()));
        if (pos_ >= s_.size()) throw error(at, "unterminated string literal");
        ++pos_;
      } else if (c == '[') {
        last = seq.size();
        parse_class(seq);
      } else if (c == '.') {
        ++pos_;
        last = seq.size();
        CharClass any;
        any.negated = true;
        seq.push_back({Kind::kChar, add_class(std::move(any))});
      } else if (is_word_char(c)) {
        std::string name = parse_name();
        uint32_t id = rule_id(name);
        rules_[id].first_use = std::min(rules_[id].first_use, at);
        last = seq.size();
        seq.push_back({Kind::kRef, id});
      } else if (c == '(') {
        if (depth + 1 > kMaxNesting) throw error(at, cat("groups nest deeper than ", kMaxNesting));
        ++pos_;
        skip_space(true);
        auto alts = parse_alternates(true, depth + 1);
        if (pos_ >= s_.size() || s_[pos_] != ')') throw error(at, "unclosed '('");
        ++pos_;
        last = seq.size();
        seq.push_back({Kind::kRef, helper_rule(std::move(alts))});
      } else if (c == '*' || c == '+' || c == '?' || c == '{') {
        if (last == SIZE_MAX) throw error(at, cat("'", c, "' has nothing before it to repeat"));
        if (c == '{') {
          parse_braces(seq, last);
        } else {
          ++pos_;
          repeat(seq, last, c == '+' ? 1 : 0, c == '?' ? 1 : -1);
        }
        last = SIZE_MAX;
      } else {
        break;
      }
      skip_space(nested);
    }
    return seq;
  }

  // A rule that can reach itself before matching any character would never end expanding.
  void check_left_recursion() {
    const size_t n = rules_.size();
    std::vector<uint8_t> nullable(n, 0);
    for (bool changed = true; changed;) {
      changed = false;
      for (size_t r = 0; r < n; ++r) {
        if (nullable[r]) continue;
        for (const auto& alt : rules_[r].alts) {
          bool all = true;
          for (const Item& it : alt) all = all && it.kind == Kind::kRef && nullable[it.arg];
          if (all) {
            nullable[r] = 1;
            changed = true;
            break;
          }
        }
      }
    }
    std::vector<std::vector<uint32_t>> left(n);  // rules reachable at the start of r
    for (size_t r = 0; r < n; ++r)
      for (const auto& alt : rules_[r].alts)
        for (const Item& it : alt) {
          if (it.kind != Kind::kRef) break;
          left[r].push_back(it.arg);
          if (!nullable[it.arg]) break;
        }
    // Iterative DFS with colours: 1 on the path, 2 done.
    std::vector<uint8_t> colour(n, 0);
    std::vector<std::pair<uint32_t, size_t>> path;
    for (size_t s = 0; s < n; ++s) {
      if (colour[s]) continue;
      path.push_back({uint32_t(s), 0});
      colour[s] = 1;
      while (!path.empty()) {
        auto& [r, i] = path.back();
        if (i < left[r].size()) {
          uint32_t next = left[r][i++];
          if (colour[next] == 1)
            throw error(rules_[next].def_pos,
                        cat("rule '", user_name(next), "' is left-recursive (it can reach itself ",
                            "without matching a character); rewrite it with repetition"));
          if (colour[next] == 0) {
            colour[next] = 1;
            path.push_back({next, 0});
          }
        } else {
          colour[r] = 2;
          path.pop_back();
        }
      }
    }
  }

  const std::string& user_name(uint32_t r) const { return rules_[rules_[r].origin].name; }

  std::shared_ptr<const Grammar> compile(uint32_t root) {
    auto g = std::make_shared<Grammar>();
    g->root = root;
    g->classes = std::move(classes_);
    g->elems.reserve(elements_);
    for (const RuleDef& r : rules_) {
      g->rule_names.push_back(r.name);
      g->alt_begin.push_back(uint32_t(g->alts.size()));
      for (size_t a = 0; a < r.alts.size(); ++a) {
        g->alts.push_back(uint32_t(g->elems.size()));
        for (const Item& it : r.alts[a]) g->elems.push_back({it.kind, it.arg});
        g->elems.push_back({Kind::kEnd, a + 1 == r.alts.size() ? 1u : 0u});
      }
    }
    g->alt_begin.push_back(uint32_t(g->alts.size()));
    return g;
  }

  std::string_view s_;
  size_t pos_ = 0;
  std::vector<RuleDef> rules_;
  std::map<std::string, uint32_t> ids_;
  std::vector<CharClass> classes_;
  std::string cur_name_;
  size_t cur_def_ = 0;
  uint32_t cur_origin_ = 0;
  int helpers_ = 0;
  size_t elements_ = 0;
};

}  // namespace

std::shared_ptr<const Grammar> parse_gbnf(std::string_view text) { return Parser(text).run(); }

}  // namespace metharme::grammar
