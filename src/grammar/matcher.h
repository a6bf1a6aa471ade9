// Following a grammar token by token: which tokens may come next so that the output still
// parses, and whether it may end here. The state is a set of parse stacks (a pushdown
// automaton in the manner of llama.cpp's grammar sampler), kept as linked nodes in an arena so
// that trying a candidate token copies nothing.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "grammar/gbnf.h"

namespace metharme::grammar {

constexpr int kMaxStackDepth = 1024;        // nested open rules (e.g. brackets); deeper paths are dropped
constexpr size_t kMaxStacks = 1024;         // parallel parses of an ambiguous grammar; more are dropped
constexpr size_t kMaxExpansions = 1 << 16;  // expansion steps per character; a token over it is refused

// The text of every token of a vocabulary as code points, built once per tokenizer.
class TokenTable {
 public:
  // texts[id]: the bytes the token adds to the output (empty for control tokens, which a grammar
  // never allows; EOS is handled by the matcher's can_end()).
  explicit TokenTable(const std::vector<std::string>& texts);
  int size() const { return int(kind_.size()); }

 private:
  friend class Matcher;
  enum : uint8_t { kEmpty, kText, kBytes };  // kBytes: not whole UTF-8 (byte-fallback pieces)
  std::vector<uint8_t> kind_;
  std::vector<uint32_t> span_;  // [2 * size]: begin, end of each token in cps_ (kText) or bytes_ (kBytes)
  std::vector<uint32_t> cps_;
  std::vector<uint8_t> bytes_;
  // A trie over the kText tokens' code points, so that tokens sharing a prefix share its work.
  struct TrieNode {
    uint32_t cp;
    uint32_t first_child, next_sibling;  // 0: none (node 0 is the root)
    uint32_t tok_begin, tok_end;         // trie_tokens_[tok_begin..tok_end): tokens ending here
  };
  std::vector<TrieNode> trie_;
  std::vector<int32_t> trie_tokens_;
  std::vector<int32_t> byte_tokens_;  // the kBytes tokens
  int max_len_ = 0;                   // code points of the longest kText token
  void build_trie();
};

class Matcher {
 public:
  Matcher(std::shared_ptr<const Grammar> g, const TokenTable& tokens);
  Matcher(const Matcher&) = default;
  Matcher& operator=(const Matcher&) = default;

  void reset();  // back to the start of the grammar
  // The output's first token loses its leading space (a text's dummy prefix); the grammar then
  // sees the text without it.
  void set_skip_leading_space(bool on) { skip_space_ = on; }
  bool allows(int token);                        // the token's text can continue the output
  bool can_end() const;                          // the output so far is a complete match (EOS allowed)
  bool accept(int token);                        // advances over the token; false (state unchanged) if not allowed
  bool dead() const { return stacks_.empty(); }  // nothing can follow (nor end)
  // ok[id] = 1 for every token allows(id) accepts, 0 for the others (EOS included: see
  // can_end()); one walk over the vocabulary's trie instead of a check per token.
  void allowed_tokens(std::vector<uint8_t>& ok);

 private:
  struct Node {
    uint32_t pos;    // element to match next
    int32_t parent;  // where to continue when this alternative ends; -1: the root's end
    uint32_t depth;
  };
  struct Work {
    uint32_t pos;
    int32_t parent, self;  // self: an existing node for (pos, parent), or -1
  };
  bool run(int token, bool keep);
  bool step(const std::vector<int32_t>& in, uint32_t cp, std::vector<int32_t>& out);
  void expand(uint32_t pos, int32_t parent, int32_t self, std::vector<int32_t>& out);
  void add(std::vector<int32_t>& out, int32_t id) const;
  bool first_allowed(uint32_t cp);
  void compact();
  void visit(uint32_t node, size_t depth, std::vector<uint8_t>& ok);

  std::shared_ptr<const Grammar> g_;
  const TokenTable* t_;
  std::vector<Node> nodes_;
  std::vector<int32_t> stacks_;  // tops (each at a kChar element), -1: complete
  uint32_t partial_cp_ = 0;      // bits of an unfinished UTF-8 character from byte tokens
  int partial_need_ = 0;         // continuation bytes it still needs
  int partial_len_ = 0;          // its length in bytes
  bool skip_space_ = false;
  // Scratch, kept between calls so that trying tokens allocates nothing once warm.
  std::vector<int32_t> a_, b_;
  std::vector<Work> work_;
  std::vector<int32_t> popped_;               // parent nodes already continued in this step
  std::vector<std::vector<int32_t>> levels_;  // trie walk: the stacks after each depth's prefix
  size_t budget_ = 0;
  bool first_valid_ = false;       // first_ok_ describes the current state
  uint64_t first_ok_[2] = {0, 0};  // ASCII code points some stack accepts first
};

}  // namespace metharme::grammar
