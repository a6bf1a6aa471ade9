#include "grammar/matcher.h"

#include <algorithm>

namespace metharme::grammar {

namespace {

// The smallest code point a UTF-8 sequence of each length may encode (shorter forms are overlong).
constexpr uint32_t kMinOfLength[5] = {0, 0, 0x80, 0x800, 0x10000};

// Decodes whole, valid UTF-8 into code points; false for anything else.
bool decode_utf8(const std::string& s, std::vector<uint32_t>& out) {
  out.clear();
  for (size_t i = 0; i < s.size();) {
    uint8_t c = uint8_t(s[i++]);
    if (c < 0x80) {
      out.push_back(c);
      continue;
    }
    int more = c >= 0xF0 && c < 0xF5 ? 3 : c >= 0xE0 && c < 0xF0 ? 2 : c >= 0xC2 && c < 0xE0 ? 1 : -1;
    if (more < 0 || i + size_t(more) > s.size()) return false;
    uint32_t cp = c & (0x3Fu >> more);
    for (int k = 0; k < more; ++k) {
      uint8_t d = uint8_t(s[i++]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    if (cp < kMinOfLength[more + 1] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    out.push_back(cp);
  }
  return true;
}

}  // namespace

TokenTable::TokenTable(const std::vector<std::string>& texts) {
  kind_.resize(texts.size(), kEmpty);
  span_.resize(texts.size() * 2, 0);
  std::vector<uint32_t> cps;
  for (size_t i = 0; i < texts.size(); ++i) {
    if (texts[i].empty()) continue;
    if (decode_utf8(texts[i], cps)) {
      kind_[i] = kText;
      span_[2 * i] = uint32_t(cps_.size());
      cps_.insert(cps_.end(), cps.begin(), cps.end());
      span_[2 * i + 1] = uint32_t(cps_.size());
    } else {
      kind_[i] = kBytes;
      span_[2 * i] = uint32_t(bytes_.size());
      bytes_.insert(bytes_.end(), texts[i].begin(), texts[i].end());
      span_[2 * i + 1] = uint32_t(bytes_.size());
    }
  }
  build_trie();
}

void TokenTable::build_trie() {
  std::vector<int32_t> ids;
  for (size_t i = 0; i < kind_.size(); ++i)
    if (kind_[i] == kText) ids.push_back(int32_t(i));
  auto cps_of = [&](int32_t id) {
    return std::make_pair(cps_.begin() + span_[2 * size_t(id)], cps_.begin() + span_[2 * size_t(id) + 1]);
  };
  std::sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) {
    auto [ab, ae] = cps_of(a);
    auto [bb, be] = cps_of(b);
    return std::lexicographical_compare(ab, ae, bb, be);
  });
  // Sorted, each token shares a prefix with the path of the one before: extend that path.
  trie_.assign(1, TrieNode{0, 0, 0, 0, 0});
  std::vector<uint32_t> path{0}, last_child(1, 0);
  std::vector<std::vector<int32_t>> ends(1);
  for (int32_t id : ids) {
    auto [b, e] = cps_of(id);
    size_t len = size_t(e - b);
    max_len_ = std::max(max_len_, int(len));
    size_t common = 0;
    while (common < len && common + 1 < path.size() && trie_[path[common + 1]].cp == b[ptrdiff_t(common)]) ++common;
    path.resize(common + 1);
    for (size_t k = common; k < len; ++k) {
      uint32_t parent = path.back(), node = uint32_t(trie_.size());
      trie_.push_back(TrieNode{b[ptrdiff_t(k)], 0, 0, 0, 0});
      last_child.push_back(0);
      ends.emplace_back();
      if (last_child[parent])
        trie_[last_child[parent]].next_sibling = node;
      else
        trie_[parent].first_child = node;
      last_child[parent] = node;
      path.push_back(node);
    }
    ends[path.back()].push_back(id);
  }
  for (size_t n = 0; n < trie_.size(); ++n) {
    trie_[n].tok_begin = uint32_t(trie_tokens_.size());
    trie_tokens_.insert(trie_tokens_.end(), ends[n].begin(), ends[n].end());
    trie_[n].tok_end = uint32_t(trie_tokens_.size());
  }
  for (size_t i = 0; i < kind_.size(); ++i)
    if (kind_[i] == kBytes) byte_tokens_.push_back(int32_t(i));
}

Matcher::Matcher(std::shared_ptr<const Grammar> g, const TokenTable& tokens) : g_(std::move(g)), t_(&tokens) {
  reset();
}

void Matcher::reset() {
  nodes_.clear();
  popped_.clear();
  stacks_.clear();
  partial_cp_ = 0;
  partial_need_ = 0;
  partial_len_ = 0;
  first_valid_ = false;
  budget_ = 0;
  const uint32_t r = g_->root;
  for (uint32_t a = g_->alt_begin[r]; a < g_->alt_begin[r + 1]; ++a) expand(g_->alts[a], -1, -1, stacks_);
}

bool Matcher::can_end() const {
  return partial_need_ == 0 && std::find(stacks_.begin(), stacks_.end(), -1) != stacks_.end();
}

void Matcher::add(std::vector<int32_t>& out, int32_t id) const {
  for (int32_t o : out) {
    if (o == id) return;
    if (o >= 0 && id >= 0 && nodes_[size_t(o)].pos == nodes_[size_t(id)].pos &&
        nodes_[size_t(o)].parent == nodes_[size_t(id)].parent)
      return;
  }
  if (out.size() < kMaxStacks) out.push_back(id);
}

void Matcher::expand(uint32_t pos, int32_t parent, int32_t self, std::vector<int32_t>& out) {
  work_.clear();
  work_.push_back({pos, parent, self});
  while (!work_.empty()) {
    Work w = work_.back();
    work_.pop_back();
    if (++budget_ > kMaxExpansions) return;
    const Element& e = g_->elems[w.pos];
    if (e.kind == Kind::kChar) {
      int32_t id = w.self;
      if (id < 0) {
        uint32_t depth = w.parent < 0 ? 0 : nodes_[size_t(w.parent)].depth + 1;
        id = int32_t(nodes_.size());
        nodes_.push_back({w.pos, w.parent, depth});
      }
      add(out, id);
    } else if (e.kind == Kind::kEnd) {
      // This alternative is done: continue where the rule was referenced.
      if (w.parent < 0) {
        add(out, -1);
      } else if (std::find(popped_.begin(), popped_.end(), w.parent) == popped_.end()) {
        // Several stacks often finish into the same parent within one step: expand it once.
        popped_.push_back(w.parent);
        const Node& p = nodes_[size_t(w.parent)];
        work_.push_back({p.pos, p.parent, w.parent});
      }
    } else {
      int32_t cont = w.parent;
      if (g_->elems[w.pos + 1].kind != Kind::kEnd) {  // not a tail call: remember what follows
        uint32_t depth = w.parent < 0 ? 0 : nodes_[size_t(w.parent)].depth + 1;
        if (depth >= uint32_t(kMaxStackDepth)) continue;
        cont = int32_t(nodes_.size());
        nodes_.push_back({w.pos + 1, w.parent, depth});
      }
      for (uint32_t a = g_->alt_begin[e.arg]; a < g_->alt_begin[e.arg + 1]; ++a)
        work_.push_back({g_->alts[a], cont, -1});
    }
  }
}

bool Matcher::step(const std::vector<int32_t>& in, uint32_t cp, std::vector<int32_t>& out) {
  out.clear();
  popped_.clear();
  budget_ = 0;
  for (int32_t s : in) {
    if (s < 0) continue;
    const Node n = nodes_[size_t(s)];
    if (g_->classes[g_->elems[n.pos].arg].matches(cp)) expand(n.pos + 1, n.parent, -1, out);
  }
  return !out.empty() && budget_ <= kMaxExpansions;
}

bool Matcher::first_allowed(uint32_t cp) {
  if (cp >= 128) return true;
  if (!first_valid_) {
    first_ok_[0] = first_ok_[1] = 0;
    for (int32_t s : stacks_) {
      if (s < 0) continue;
      const CharClass& c = g_->classes[g_->elems[nodes_[size_t(s)].pos].arg];
      first_ok_[0] |= c.ascii[0];
      first_ok_[1] |= c.ascii[1];
    }
    first_valid_ = true;
  }
  return (first_ok_[cp >> 6] >> (cp & 63)) & 1;
}

bool Matcher::run(int token, bool keep) {
  if (token < 0 || token >= t_->size()) return false;
  const uint8_t kind = t_->kind_[size_t(token)];
  if (kind == TokenTable::kEmpty) return false;
  const uint32_t b = t_->span_[2 * size_t(token)], e = t_->span_[2 * size_t(token) + 1];
  const uint32_t* cps = t_->cps_.data();
  uint32_t first = b;
  if (kind == TokenTable::kText) {
    if (partial_need_ > 0) return false;  // an unfinished character cannot be followed by text
    if (skip_space_ && first < e && cps[first] == ' ') ++first;
    if (first < e && !first_allowed(cps[first])) return false;
  }
  const size_t mark = nodes_.size();
  a_ = stacks_;
  uint32_t pcp = partial_cp_;
  int need = partial_need_, len = partial_len_;
  bool ok = true;
  if (kind == TokenTable::kText) {
    for (uint32_t i = first; ok && i < e; ++i) {
      ok = step(a_, cps[i], b_);
      a_.swap(b_);
    }
  } else {
    for (uint32_t i = b; ok && i < e; ++i) {
      uint8_t c = t_->bytes_[i];
      if (need == 0) {
        int more = c < 0x80                ? 0
                   : c >= 0xF0 && c < 0xF5 ? 3
                   : c >= 0xE0 && c < 0xF0 ? 2
                   : c >= 0xC2 && c < 0xE0 ? 1
                                           : -1;
        if (more < 0) {
          ok = false;
          break;
        }
        pcp = more == 0 ? c : c & (0x3Fu >> more);
        need = more;
        len = more + 1;
      } else if ((c & 0xC0) == 0x80) {
        pcp = (pcp << 6) | (c & 0x3F);
        --need;
      } else {
        ok = false;
      }
      if (ok && need == 0) {
        // Overlong forms, surrogates and code points past U+10FFFF are not characters.
        ok = pcp >= kMinOfLength[len] && pcp <= 0x10FFFF && !(pcp >= 0xD800 && pcp <= 0xDFFF) && step(a_, pcp, b_);
        a_.swap(b_);
      }
    }
    if (ok && need > 0) {
      // Some valid character starting with these bytes must be acceptable.
      uint32_t lo = std::max(pcp << (6 * need), kMinOfLength[len]);
      uint32_t hi = std::min((pcp << (6 * need)) | ((1u << (6 * need)) - 1), 0x10FFFFu);
      ok = false;
      for (int32_t s : a_)
        if (lo <= hi && s >= 0 && g_->classes[g_->elems[nodes_[size_t(s)].pos].arg].may_match(lo, hi)) ok = true;
    }
  }
  if (!ok || !keep) {
    nodes_.resize(mark);
    return ok;
  }
  stacks_.swap(a_);
  partial_cp_ = need > 0 ? pcp : 0;
  partial_need_ = need;
  partial_len_ = len;
  skip_space_ = false;
  first_valid_ = false;
  if (nodes_.size() > 4096) compact();
  return true;
}

bool Matcher::allows(int token) { return run(token, false); }
bool Matcher::accept(int token) { return run(token, true); }

void Matcher::allowed_tokens(std::vector<uint8_t>& ok) {
  ok.assign(size_t(t_->size()), 0);
  for (int32_t id : t_->byte_tokens_) ok[size_t(id)] = run(id, false);
  if (partial_need_ > 0) return;  // only bytes can finish the character
  if (skip_space_) {
    // The first token of a text: its leading space is dropped, which the trie cannot share.
    for (int id = 0; id < t_->size(); ++id)
      if (t_->kind_[size_t(id)] == TokenTable::kText) ok[size_t(id)] = run(id, false);
    return;
  }
  if (levels_.size() < size_t(t_->max_len_) + 2) levels_.resize(size_t(t_->max_len_) + 2);
  levels_[0] = stacks_;
  visit(0, 0, ok);
}

void Matcher::visit(uint32_t node, size_t depth, std::vector<uint8_t>& ok) {
  const auto& trie = t_->trie_;
  for (uint32_t c = trie[node].first_child; c != 0; c = trie[c].next_sibling) {
    const uint32_t cp = trie[c].cp;
    if (depth == 0 && !first_allowed(cp)) continue;
    const size_t mark = nodes_.size();
    if (step(levels_[depth], cp, levels_[depth + 1])) {
      for (uint32_t k = trie[c].tok_begin; k < trie[c].tok_end; ++k) ok[size_t(t_->trie_tokens_[k])] = 1;
      visit(c, depth + 1, ok);
    }
    nodes_.resize(mark);
  }
}

void Matcher::compact() {
  // Parents always precede their children in the arena, so one pass in index order suffices.
  std::vector<int32_t> map(nodes_.size(), -1);
  for (int32_t s : stacks_)
    for (int32_t n = s; n >= 0 && map[size_t(n)] == -1; n = nodes_[size_t(n)].parent) map[size_t(n)] = 0;
  std::vector<Node> kept;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (map[i] < 0) continue;
    Node n = nodes_[i];
    if (n.parent >= 0) n.parent = map[size_t(n.parent)];
    map[i] = int32_t(kept.size());
    kept.push_back(n);
  }
  for (int32_t& s : stacks_)
    if (s >= 0) s = map[size_t(s)];
  nodes_.swap(kept);
}

}  // namespace metharme::grammar
