// Real clients with their default settings, replayed over loopback HTTP: the request bodies that
// SillyTavern 1.12.6 (KoboldAI Classic, Text Completion -> KoboldCpp, Chat Completion -> Custom)
// and KoboldAI Lite v339 send on a fresh install, written from their source:
//   SillyTavern public/scripts/kai-settings.js getKoboldGenerationData + src/endpoints/backends/
//   kobold.js (what its server forwards), textgen-settings.js getTextGenGenerationData (the body
//   is forwarded whole to /v1/completions), openai.js sendOpenAIRequest + src/endpoints/backends/
//   chat-completions.js (the "custom" source), default/content/settings.json and the
//   RecoveredRuins preset for the defaults; Lite index.html defaultsettings, the submit payload
//   and finalize_submit_payload as they run against a KoboldCpp of the version we announce.
// Each runs against a 2048-context and a 512-context model: 200, a reply, and the prompt cut
// to fit as KoboldCpp does it.
#include <gtest/gtest.h>

#include <cstring>

#include "support/serve_util.h"
#include "support/test_util.h"

namespace metharme {
namespace {

using nlohmann::json;
using test::TestServer;

struct Model {
  const char* dir;
  int ctx;
};

class ClientDefaults : public ::testing::TestWithParam<Model> {
 protected:
  test::ServerSetup setup() const {
    test::ServerSetup ss;
    ss.model = GetParam().dir;
    ss.ctx = GetParam().ctx;
    ss.n_seq = 2;
    ss.max_body = 8u << 20;
    return ss;
  }
};

std::string header(const TestServer::Reply& r, const std::string& key) {
  auto it = r.headers.find(key);
  return it == r.headers.end() ? std::string() : it->second;
}

// A SillyTavern chat prompt as its default story string renders it for the bundled character:
// description, then the chat, ending with the character's name for the reply. About 1800
// LLaMA tokens, as in the report that ST's first message failed.
std::string st_story_prompt() {
  std::string p =
      "Seraphina is a guardian of the enchanted forest, a gentle healer with pink hair and amber eyes. "
      "She protects travellers who lose their way among the old trees.\n"
      "Seraphina's personality: caring, protective, curious, a little mischievous\n"
      "Scenario: User wakes up in Seraphina's glade after being attacked by shadowy creatures.\n"
      "***\n"
      "Seraphina: *She leans over you, her hands glowing softly as she tends your wounds.* "
      "Rest now. The forest is safe while I am here.\n";
  for (int i = 0; i < 36; ++i)
    p += "User: I remember the path through the pines, the lantern by the river, and the shadows that followed me.\n"
         "Seraphina: *She nods slowly and pours warm tea.* Those shadows fear the light of my glade; stay close.\n";
  return p + "User: What happened to the village beyond the river?\nSeraphina:";
}

// SillyTavern 1.12.6, API "KoboldAI Classic", default settings (max context 8192, response
// 350, the RecoveredRuins preset, no streaming): the body its server posts to /api/v1/generate.
json st_kobold_classic(const std::string& prompt) {
  return {{"prompt", prompt},
          {"use_story", false},
          {"use_memory", false},
          {"use_authors_note", false},
          {"use_world_info", false},
          {"max_context_length", 8192},
          {"max_length", 350},
          {"rep_pen", 1.1},
          {"rep_pen_range", 600},
          {"rep_pen_slope", 0},
          {"temperature", 1},
          {"tfs", 1},
          {"top_a", 0},
          {"top_k", 0},
          {"top_p", 0.95},
          {"min_p", 0},
          {"typical", 1},
          {"sampler_order", {6, 0, 1, 2, 3, 4, 5}},
          {"singleline", false},
          {"use_default_badwordsids", false},
          {"mirostat", 0},
          {"mirostat_eta", 0.1},
          {"mirostat_tau", 5},
          {"grammar", ""},
          {"stop_sequence", {"\nUser:"}}};
}

// SillyTavern 1.12.6, API "Text Completion", type KoboldCpp, default settings: the whole body of
// getTextGenGenerationData, which its server forwards to /v1/completions unchanged. Sampler fields
// for DRY, XTC, Mirostat, smoothing, min_tokens, ignore_eos and add_bos_token carry the client's
// defaults, which leave them off.
json st_text_completion(const std::string& prompt) {
  return {{"prompt", prompt},
          {"max_new_tokens", 350},
          {"max_tokens", 350},
          {"temperature", 0.5},
          {"top_p", 0.9},
          {"typical_p", 1},
          {"typical", 1},
          {"sampler_seed", -1},
          {"min_p", 0},
          {"repetition_penalty", 1.1},
          {"frequency_penalty", 0},
          {"presence_penalty", 0},
          {"top_k", 0},
          {"skew", 0},
          {"min_tokens", 0},
          {"add_bos_token", true},
          {"smoothing_factor", 0},
          {"smoothing_curve", 1},
          {"dry_allowed_length", 2},
          {"dry_multiplier", 0},
          {"dry_base", 1.75},
          {"dry_sequence_breakers", "[\"\\n\",\":\",\"\\\"\",\"*\"]"},
          {"dry_penalty_last_n", 0},
          {"max_tokens_second", 0},
          {"stopping_strings", {"\nUser:"}},
          {"stop", {"\nUser:"}},
          {"truncation_length", 8192},
          {"ban_eos_token", false},
          {"skip_special_tokens", true},
          {"top_a", 0},
          {"tfs", 1},
          {"mirostat_mode", 0},
          {"mirostat_tau", 5},
          {"mirostat_eta", 0.1},
          {"custom_token_bans", ""},
          {"banned_strings", json::array()},
          {"api_type", "koboldcpp"},
          {"api_server", "http://127.0.0.1:5001"},
          {"legacy_api", false},
          {"sampler_order", {6, 0, 1, 3, 4, 2, 5}},
          {"xtc_threshold", 0.1},
          {"xtc_probability", 0},
          {"rep_pen", 1.1},
          {"rep_pen_range", 0},
          {"repetition_penalty_range", 0},
          {"seed", -1},
          {"guidance_scale", 1},
          {"negative_prompt", ""},
          {"grammar_string", ""},
          {"repeat_penalty", 1.1},
          {"tfs_z", 1},
          {"repeat_last_n", 0},
          {"n_predict", 350},
          {"num_predict", 350},
          {"num_ctx", 8192},
          {"mirostat", 0},
          {"ignore_eos", false},
          {"rep_pen_slope", 1},
          {"grammar", ""}};
}

// SillyTavern 1.12.6, API "Chat Completion", source "Custom (OpenAI-compatible)", default
// settings (context 4095, response 300, temperature 1, no streaming): what its server posts to
// /v1/chat/completions. ST trims the chat to its own 4095-token budget, more than our models have.
json st_chat_custom() {
  json msgs = json::array();
  msgs.push_back({{"role", "system"},
                  {"content", "Write Seraphina's next reply in a fictional chat between Seraphina and User."}});
  msgs.push_back({{"role", "system"},
                  {"content",
                   "Seraphina is a guardian of the enchanted forest, a gentle healer with pink hair and "
                   "amber eyes. She protects travellers who lose their way among the old trees."}});
  msgs.push_back({{"role", "system"}, {"content", "[Start a new Chat]"}});
  msgs.push_back({{"role", "assistant"},
                  {"content", "*She leans over you, her hands glowing softly.* Rest now. The forest is safe."}});
  for (int i = 0; i < 40; ++i) {
    msgs.push_back({{"role", "user"}, {"content", "Tell me more about the lantern by the river and the old pines."}});
    msgs.push_back({{"role", "assistant"},
                    {"content",
                     "*She smiles and pours warm tea.* The lantern was lit by my mother, long ago, to "
                     "guide the lost home through the shadows of the pines."}});
  }
  msgs.push_back({{"role", "user"}, {"content", "What happened to the village beyond the river?"}});
  return {{"messages", msgs},       {"model", ""},     {"temperature", 1},
          {"max_tokens", 300},      {"stream", false}, {"presence_penalty", 0},
          {"frequency_penalty", 0}, {"top_p", 1},      {"logit_bias", json::object()}};
}

// KoboldAI Lite v339 on a fresh load against a local KoboldCpp of the version we announce
// (instruct mode with automatic tags, max context 12288, amount 1536, SSE streaming): the body
// it posts to /api/extra/generate/stream. The instruct tags are placeholders for the server.
json lite_defaults(const std::string& prompt) {
  return {{"n", 1},
          {"max_context_length", 12288},
          {"max_length", 1536},
          {"rep_pen", 1.05},
          {"temperature", 0.75},
          {"top_p", 0.92},
          {"top_k", 100},
          {"top_a", 0},
          {"typical", 1},
          {"tfs", 1},
          {"rep_pen_range", 360},
          {"rep_pen_slope", 0.7},
          {"sampler_order", {6, 0, 1, 3, 4, 2, 5}},
          {"memory", ""},
          {"trim_stop", true},
          {"genkey", "KCPP4271"},
          {"min_p", 0},
          {"dynatemp_range", 0},
          {"dynatemp_exponent", 1},
          {"smoothing_factor", 0},
          {"smoothing_curve", 1},
          {"nsigma", 0},
          {"banned_tokens", json::array()},
          {"render_special", false},
          {"logprobs", false},
          {"replace_instruct_placeholders", true},
          {"presence_penalty", 0},
          {"logit_bias", json::object()},
          {"stop_sequence", {"{{[INPUT]}}", "{{[OUTPUT]}}"}},
          {"use_default_badwordsids", false},
          {"bypass_eos", false},
          {"prompt", prompt}};
}

std::string lite_instruct_prompt() {
  std::string p;
  for (int i = 0; i < 20; ++i)
    p += "{{[INPUT]}}\nWrite a short story about a fox who finds a lantern by the river.\n{{[OUTPUT]}}\n"
         "The fox found the lantern glowing in the reeds and carried it home through the dark pines.\n";
  return p + "{{[INPUT]}}\nNow tell me what the fox did next.\n{{[OUTPUT]}}\n";
}

// KoboldCpp's clamp (koboldcpp.py): min_remain = min(ctx - 4, 16).
int kcpp_max_length(int max_length, int ctx) {
  int min_remain = std::min(ctx - 4, 16);
  return max_length >= ctx - min_remain ? ctx - min_remain : max_length;
}

json perf_of(const TestServer& s) { return s.get("/api/extra/perf").json(); }

TEST_P(ClientDefaults, SillyTavernKoboldClassic) {
  TestServer s(setup());
  const int ctx = GetParam().ctx;
  // ST's connection check (src/endpoints/backends/kobold.js /status).
  EXPECT_EQ(s.get("/api/v1/info/version").json()["result"], "1.2.5");
  EXPECT_EQ(s.get("/api/extra/version").json()["result"], "KoboldCpp");
  EXPECT_NE(s.get("/api/v1/model").json()["result"], "ReadOnly");
  const std::string prompt = st_story_prompt();
  const int whole = int(s.tok().encode(prompt, true).size());
  auto r = s.post("/api/v1/generate", st_kobold_classic(prompt));
  ASSERT_EQ(r.status, 200) << r.body;
  auto j = r.json();
  ASSERT_EQ(j["results"].size(), 1u);
  ASSERT_TRUE(j["results"][0]["text"].is_string());
  const std::string finish = j["results"][0]["finish_reason"];
  EXPECT_TRUE(finish == "stop" || finish == "length") << finish;
  auto perf = perf_of(s);
  const int max_new = kcpp_max_length(350, ctx);
  EXPECT_GE(perf["last_token_count"].get<int>(), 1);
  EXPECT_LE(perf["last_token_count"].get<int>(), max_new);
  // The prompt kept its last ctx - max_length tokens (BOS first), the rest was cut and said so.
  EXPECT_EQ(perf["last_input_count"].get<int>(), std::min(whole, ctx - max_new));
  const int cut = std::max(0, whole - (ctx - max_new));
  EXPECT_GT(cut, 0);
  EXPECT_EQ(perf["last_prompt_tokens_cut"], cut);
  EXPECT_EQ(j["prompt_tokens_cut"], cut);
  EXPECT_EQ(header(r, "X-Prompt-Tokens-Cut"), std::to_string(cut));
  if (finish == "length") {
    EXPECT_FALSE(j["results"][0]["text"].get<std::string>().empty());
  }
}

TEST_P(ClientDefaults, SillyTavernTextCompletionKoboldCpp) {
  TestServer s(setup());
  const int ctx = GetParam().ctx;
  // ST's connection check (text-completions.js /status): a model list with ids.
  EXPECT_TRUE(s.get("/v1/models").json()["data"][0]["id"].is_string());
  const std::string prompt = st_story_prompt();
  const int whole = int(s.tok().encode(prompt, true).size());
  auto r = s.post("/v1/completions", st_text_completion(prompt));
  ASSERT_EQ(r.status, 200) << r.body;
  auto j = r.json();
  EXPECT_EQ(j["object"], "text_completion");
  ASSERT_EQ(j["choices"].size(), 1u);
  ASSERT_TRUE(j["choices"][0]["text"].is_string());
  const int max_new = kcpp_max_length(350, ctx);
  EXPECT_EQ(j["usage"]["prompt_tokens"], ctx - max_new);
  EXPECT_EQ(j["prompt_tokens_cut"], whole - (ctx - max_new));
  EXPECT_EQ(header(r, "X-Prompt-Tokens-Cut"), std::to_string(whole - (ctx - max_new)));
  const int completion = j["usage"]["completion_tokens"];
  EXPECT_LE(completion, max_new);
  if (j["choices"][0]["finish_reason"] == "length") {
    EXPECT_EQ(completion, max_new);
    EXPECT_FALSE(j["choices"][0]["text"].get<std::string>().empty());
  }
  EXPECT_GE(perf_of(s)["last_token_count"].get<int>(), 1);
}

TEST_P(ClientDefaults, SillyTavernChatCompletionCustom) {
  TestServer s(setup());
  const int ctx = GetParam().ctx;
  EXPECT_TRUE(s.get("/v1/models").json()["data"][0]["id"].is_string());
  json body = st_chat_custom();
  auto r = s.post("/v1/chat/completions", body);
  ASSERT_EQ(r.status, 200) << r.body;
  auto j = r.json();
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  ASSERT_TRUE(j["choices"][0]["message"]["content"].is_string());
  const int max_new = kcpp_max_length(300, ctx);
  const int prompt_tokens = j["usage"]["prompt_tokens"];
  EXPECT_LE(prompt_tokens, ctx - max_new);
  EXPECT_GT(j["messages_dropped"].get<int>(), 0);
  EXPECT_GT(j["prompt_tokens_cut"].get<int>(), 0);
  EXPECT_EQ(header(r, "X-Prompt-Messages-Dropped"), std::to_string(j["messages_dropped"].get<int>()));
  EXPECT_EQ(perf_of(s)["last_prompt_tokens_cut"], j["prompt_tokens_cut"]);
  EXPECT_GE(perf_of(s)["last_token_count"].get<int>(), 1);
}

TEST_P(ClientDefaults, KoboldLiteStreaming) {
  TestServer s(setup());
  const int ctx = GetParam().ctx;
  // Lite's connection checks, then its default generate request.
  EXPECT_GE(s.get("/api/extra/version").json()["version"].get<std::string>(), "1.74");
  EXPECT_EQ(s.get("/api/extra/true_max_context_length").json()["value"], ctx);
  EXPECT_EQ(s.get("/api/v1/config/max_context_length").json()["value"], ctx);
  const std::string prompt = lite_instruct_prompt();
  // The server reads it with the Metharme markers in place of the placeholders.
  std::string filled = prompt;
  for (auto [tag, marker] : {std::pair{"{{[INPUT]}}", "<|user|>"}, std::pair{"{{[OUTPUT]}}", "<|model|>"}})
    for (size_t at; (at = filled.find(tag)) != std::string::npos;) filled.replace(at, std::strlen(tag), marker);
  const int whole = int(s.tok().encode(filled, true).size());
  auto r = s.post_stream("/api/extra/generate/stream", lite_defaults(prompt), [](const std::string&) { return true; });
  ASSERT_EQ(r.status, 200) << r.body;
  std::string err;
  auto events = test::parse_sse(r.body, err);
  ASSERT_EQ(err, "");
  ASSERT_FALSE(events.empty());
  std::string text;
  for (size_t i = 0; i + 1 < events.size(); ++i) text += json::parse(events[i].data)["token"].get<std::string>();
  const std::string finish = json::parse(events.back().data)["finish_reason"];
  EXPECT_TRUE(finish == "stop" || finish == "length") << finish;
  // 12288 -> the server's context; 1536 -> KoboldCpp's clamp (496 on a 512 context).
  const int max_new = kcpp_max_length(1536, ctx);
  auto perf = perf_of(s);
  EXPECT_EQ(perf["last_input_count"].get<int>(), std::min(whole, ctx - max_new));
  EXPECT_EQ(perf["last_prompt_tokens_cut"].get<int>(), std::max(0, whole - (ctx - max_new)));
  EXPECT_EQ(header(r, "X-Prompt-Tokens-Cut"), std::to_string(std::max(0, whole - (ctx - max_new))));
  EXPECT_GE(perf["last_token_count"].get<int>(), 1);
  if (finish == "length") {
    EXPECT_EQ(perf["last_token_count"].get<int>(), max_new);
    EXPECT_FALSE(text.empty());
  }
  // Lite polls /check with its genkey after the stream; the finished text is there.
  auto check = s.post("/api/extra/generate/check", {{"genkey", "KCPP4271"}}).json();
  EXPECT_EQ(check["results"][0]["text"], text);
}

// Lite's compare_version_str: numeric, segment by segment (trailing ".0"s ignored).
int lite_compare(const std::string& a, const std::string& b) {
  auto segs = [](std::string v) {
    while (v.size() > 2 && v.compare(v.size() - 2, 2, ".0") == 0) v.resize(v.size() - 2);
    std::vector<int> out;
    for (size_t i = 0; i <= v.size();) {
      size_t j = v.find('.', i);
      if (j == std::string::npos) j = v.size();
      out.push_back(std::stoi(v.substr(i, j - i)));
      i = j + 1;
    }
    return out;
  };
  auto x = segs(a), y = segs(b);
  for (size_t i = 0; i < std::min(x.size(), y.size()); ++i)
    if (x[i] != y[i]) return x[i] - y[i];
  return int(x.size()) - int(y.size());
}

TEST(ClientVersionGates, LiteShowsWhatWeHaveAndNothingElse) {
  TestServer s;
  auto v = s.get("/api/extra/version").json();
  EXPECT_EQ(v["result"], "KoboldCpp");  // what SillyTavern's KoboldAI Classic reads
  const std::string ver = v["version"];
  // Lite v339's unflagged gates: streaming 1.30, SSE 1.40, Mirostat 1.37, grammar 1.44,
  // memory/trim_stop 1.49, DRY 1.70, XTC 1.74, instruct placeholders 1.88 on; the llama.cpp UI
  // link (1.102) and adaptive-P (1.104) off.
  for (const char* on : {"1.30", "1.37", "1.40", "1.44", "1.49", "1.70", "1.74", "1.88"})
    EXPECT_GE(lite_compare(ver, on), 0) << on;
  EXPECT_LT(lite_compare(ver, "1.102"), 0);
  // The gates between need flags we do not set.
  for (const char* flag : {"multiplayer", "websearch", "tts", "admin", "savedata", "embeddings", "vision", "audio",
                           "transcribe", "txt2img", "guidance", "jinja", "mcp"})
    EXPECT_FALSE(v.value(flag, false)) << flag;
}

INSTANTIATE_TEST_SUITE_P(Models, ClientDefaults,
                         ::testing::Values(Model{"models/llama-rand-h256", 2048}, Model{"models/stories260k", 512}),
                         [](const auto& info) { return "ctx" + std::to_string(info.param.ctx); });

}  // namespace
}  // namespace metharme
