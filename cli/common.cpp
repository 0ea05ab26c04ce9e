#include "cli/common.h"

#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>

namespace trit::cli {

void fail(const std::string& message) {
  throw Error(message);
}

void add_device_options(CLI::App* cmd, std::string& device, int64_t& max_buffer_mb) {
  cmd->add_option("--device", device,
                  "cpu | vulkan | vulkan:N (default: a Vulkan GPU if there is one, else cpu)");
  cmd->add_option("--max-buffer-mb", max_buffer_mb,
                  "Vulkan: largest buffer binding in MiB (default: the device's limit)")
      ->check(CLI::PositiveNumber);
}

void add_mem_budget_option(CLI::App* cmd, int64_t& mem_budget_mb) {
  cmd->add_option("--mem-budget", mem_budget_mb,
                  "Memory budget in MiB: below the model's size the weights stream a block at "
                  "a time (on the CPU from the file, on a GPU through the device); a CPU "
                  "fine-tune, which streams them by default, keeps them when the budget holds "
                  "it all")
      ->check(CLI::PositiveNumber);
}

void add_activation_option(CLI::App* cmd, std::string& activation) {
  cmd->add_option("--activation", activation,
                  "Feed-forward activation instead of the file's: relu2 or silu (`trit info` "
                  "says which the file gives and why)")
      ->check(CLI::IsMember({"relu2", "silu"}));
}

void add_run_options(CLI::App* cmd, RunOptions& o, bool with_ctx, bool model_required) {
  CLI::Option* m = cmd->add_option("-m,--model", o.model, "Model file (GGUF)");
  if (model_required) m->required();
  cmd->add_option("-t,--threads", o.threads, "Threads (default: all cores)");
  add_device_options(cmd, o.device, o.max_buffer_mb);
  add_mem_budget_option(cmd, o.mem_budget_mb);
  cmd->add_option("--act-quant", o.act_quant,
                  "Activation quantisation: int8 (W1.58A8, default) or none (float)")
      ->check(CLI::IsMember({"int8", "none"}));
  add_activation_option(cmd, o.activation);
  cmd->add_option("--cache-type", o.cache_type,
                  "KV cache elements: f32 (default) or f16 (half the memory; attention reads "
                  "values rounded to half)")
      ->check(CLI::IsMember({"f32", "f16"}));
  cmd->add_option("--lora", o.lora, "LoRA adapter (GGUF), optionally with a scale: A.gguf:0.5")
      ->take_all();
  if (with_ctx) cmd->add_option("-c,--ctx", o.ctx, "Context size in tokens");
}

void add_sampler_options(CLI::App* cmd, SamplingOptions& s) {
  cmd->add_option("--temp", s.temperature, "Temperature (0: greedy)");
  cmd->add_option("--top-k", s.top_k, "Top-k (0: off)");
  cmd->add_option("--top-p", s.top_p, "Top-p (1: off)");
  cmd->add_option("--min-p", s.min_p, "Min-p (0: off)");
  cmd->add_option("--repeat-penalty", s.repeat_penalty, "Repetition penalty (1: off)");
  cmd->add_option("--repeat-last-n", s.repeat_last_n,
                  "Tokens the penalties look back at (-1: all, 0: none)");
  cmd->add_option("--frequency-penalty", s.frequency_penalty,
                  "A token seen c times loses c times this from its logit (0: off)");
  cmd->add_option("--presence-penalty", s.presence_penalty,
                  "A token seen at all loses this from its logit (0: off)");
  cmd->add_option("-s,--seed", s.seed, "Random seed");
  cmd->add_option("-l,--logit-bias", "Bias a token's logit: ID+BIAS or ID-BIAS (ID-inf bans it)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->each([&s](const std::string& v) { s.logit_bias.push_back(parse_logit_bias(v)); });
}

std::pair<int32_t, float> parse_logit_bias(const std::string& v) {
  const size_t sign = v.find_first_of("+-", 1);
  auto bad = [&] {
    return CLI::ValidationError(
        "expected TOKEN_ID+BIAS or TOKEN_ID-BIAS (TOKEN_ID-inf bans the token), got '" + v + "'");
  };
  if (sign == std::string::npos || sign == 0) throw bad();
  int32_t id = 0;
  float bias = 0;
  const std::string id_text = v.substr(0, sign), bias_text = v.substr(sign);
  const auto [id_end, id_err] =
      std::from_chars(id_text.data(), id_text.data() + id_text.size(), id);
  if (id_err != std::errc() || id_end != id_text.data() + id_text.size() || id < 0) throw bad();
  if (bias_text == "-inf") {
    bias = -std::numeric_limits<float>::infinity();
  } else {
    // from_chars takes no leading '+'.
    const char* b = bias_text.data() + (bias_text[0] == '+' ? 1 : 0);
    const char* e = bias_text.data() + bias_text.size();
    const auto [end, err] = std::from_chars(b, e, bias);
    if (err != std::errc() || end != e || !std::isfinite(bias)) throw bad();
  }
  return {id, bias};
}

nlohmann::json sampling_fields(const SamplingOptions& s) {
  // llama-server's array form: [[id, bias], ...], a ban as false (JSON has no infinity).
  nlohmann::json bias = nlohmann::json::array();
  for (const auto& [id, b] : s.logit_bias) {
    bias.push_back({id, std::isinf(b) && b < 0 ? nlohmann::json(false) : nlohmann::json(b)});
  }
  return {{"temperature", s.temperature},
          {"top_k", s.top_k},
          {"top_p", s.top_p},
          {"min_p", s.min_p},
          {"repeat_penalty", s.repeat_penalty},
          {"repeat_last_n", s.repeat_last_n},
          {"frequency_penalty", s.frequency_penalty},
          {"presence_penalty", s.presence_penalty},
          {"logit_bias", bias},
          {"seed", s.seed}};
}

LoadedModel load_model(const RunOptions& o) {
  ModelOptions mo;
  mo.device = o.device;
  mo.threads = o.threads;
  mo.max_buffer_mb = o.max_buffer_mb;
  mo.mem_budget_mb = o.mem_budget_mb;
  mo.act_quant = o.act_quant != "none";
  mo.activation = o.activation;
  mo.cache_type = o.cache_type;
  mo.on_warning = [](const std::string& w) {
    std::fprintf(stderr, "trit: warning: %s\n", w.c_str());
  };
  LoadedModel lm{Model::open(o.model, mo), {}};
  if (!lm.model.device_fallback().empty()) {
    std::fprintf(stderr, "trit: running on the CPU: %s\n", lm.model.device_fallback().c_str());
  }
  for (const std::string& spec : o.lora) {
    const AdapterSpec s = parse_adapter_spec(spec);
    try {
      lm.adapters.push_back({lm.model.load_adapter(s.path), s.scale});
    } catch (const Error& e) {
      fail(std::string("--lora: ") + e.what());
    }
  }
  return lm;
}

std::vector<int32_t> parse_ids(const std::string& text, const std::string& flag) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = text.find(',', pos);
    const std::string item =
        text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size() || v < 0 || v > INT32_MAX) {
      fail(flag + ": '" + item + "' is not a token id (expected comma-separated integers)");
    }
    ids.push_back(int32_t(v));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return ids;
}

std::vector<int32_t> prompt_tokens(const Model& m, const std::string& text, const std::string& ids,
                                   bool parse_special) {
  if (!ids.empty()) return parse_ids(ids, "--ids");
  if (!m.info().has_tokenizer) {
    fail(m.info().path +
         ": the model has no tokenizer (tokenizer.ggml.*); give token ids with --ids");
  }
  return m.tokenize(text, true, parse_special);
}

void print_piece(std::string_view piece) {
  std::fwrite(piece.data(), 1, piece.size(), stdout);
  std::fflush(stdout);
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string strip_gguf(const std::string& path) {
  return path.size() > 5 && path.ends_with(".gguf") ? path.substr(0, path.size() - 5) : path;
}

std::string checkpoint_dir_of(const TrainOptions& o) {
  return o.checkpoint_dir.empty() ? strip_gguf(o.output) + ".checkpoints" : o.checkpoint_dir;
}

bool has_checkpoint(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.is_directory() && e.path().filename().string().rfind("checkpoint-", 0) == 0) return true;
  }
  return false;
}

}  // namespace trit::cli
