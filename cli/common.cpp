#include "cli/common.h"

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "backend/select.h"
#include "core/error.h"
#include "io/adapter_gguf.h"
#include "tools/merge.h"
#include "tokenizer/tokenizer.h"

namespace trit::cli {

void add_device_options(CLI::App* cmd, std::string& device, int64_t& max_buffer_mb) {
  cmd->add_option("--device", device,
                  "cpu | vulkan | vulkan:N (default: a Vulkan GPU if there is one, else cpu)");
  cmd->add_option("--max-buffer-mb", max_buffer_mb,
                  "Vulkan: largest buffer binding in MiB (default: the device's limit)")
      ->check(CLI::PositiveNumber);
}

void add_run_options(CLI::App* cmd, RunOptions& o, bool with_ctx) {
  cmd->add_option("-m,--model", o.model, "Model file (GGUF)")->required();
  cmd->add_option("-t,--threads", o.threads, "Threads (default: all cores)");
  add_device_options(cmd, o.device, o.max_buffer_mb);
  cmd->add_option("--act-quant", o.act_quant,
                  "Activation quantisation: int8 (W1.58A8, default) or none (float)")
      ->check(CLI::IsMember({"int8", "none"}));
  cmd->add_option("--lora", o.lora, "LoRA adapter (GGUF), optionally with a scale: A.gguf:0.5")
      ->take_all();
  if (with_ctx) cmd->add_option("-c,--ctx", o.ctx, "Context size in tokens");
}

void add_sampler_options(CLI::App* cmd, SamplerOptions& s) {
  cmd->add_option("--temp", s.temperature, "Temperature (0: greedy)");
  cmd->add_option("--top-k", s.top_k, "Top-k (0: off)");
  cmd->add_option("--top-p", s.top_p, "Top-p (1: off)");
  cmd->add_option("--min-p", s.min_p, "Min-p (0: off)");
  cmd->add_option("--repeat-penalty", s.repeat_penalty, "Repetition penalty (1: off)");
  cmd->add_option("--repeat-last-n", s.repeat_last_n, "Tokens the penalty looks back at");
  cmd->add_option("-s,--seed", s.seed, "Random seed");
}

LoadedModel load_model(const RunOptions& o) {
  DeviceRequest request = parse_device(o.device);
  request.max_buffer_bytes = uint64_t(o.max_buffer_mb) << 20;
  LoadedModel lm;
  lm.model = Model::load(o.model, [](const std::string& w) {
    std::fprintf(stderr, "trit: warning: %s\n", w.c_str());
  });
  std::vector<std::pair<const LoraAdapter*, float>> attached;
  // An adapter stored in the model file (trit merge --mode attach) applies first.
  if (const LoraAdapter* embedded = lm.model->embedded_adapter()) {
    attached.emplace_back(embedded, lm.model->embedded_adapter_scale());
  }
  for (const std::string& spec : o.lora) {
    const auto [path, scale] = parse_adapter_spec(spec);
    lm.adapters.push_back(std::make_unique<LoraAdapter>(load_adapter_gguf(path)));
    const LoraAdapter& a = *lm.adapters.back();
    if (a.base_arch != lm.model->hparams().arch) {
      fail(path, ": adapter for architecture '", a.base_arch, "', the model is '",
           lm.model->hparams().arch, "'");
    }
    attached.emplace_back(&a, scale);
  }
  try {
    (void)resolve_lora(attached, lm.model->hparams());
  } catch (const Error& e) {
    fail("--lora: ", e.what());
  }
  lm.act_quant = o.act_quant != "none";
  lm.pool = std::make_unique<ThreadPool>(thread_count(o));
  BackendChoice choice = make_backend(request, *lm.pool);
  if (!choice.fallback_reason.empty()) {
    std::fprintf(stderr, "trit: running on the CPU: %s\n", choice.fallback_reason.c_str());
  }
  lm.backend = std::move(choice.backend);
  if (!o.lora.empty()) {
    std::vector<std::pair<const DeviceAdapter*, float>> uses;
    for (const auto& [a, scale] : attached) {
      lm.device_adapters.push_back(std::make_unique<DeviceAdapter>(
          *a, lm.model->hparams(), *lm.backend, "--lora"));
      uses.emplace_back(lm.device_adapters.back().get(), scale);
    }
    lm.lora = lora_set(lm.model->hparams(), uses);
  }
  return lm;
}

int thread_count(const RunOptions& o) {
  if (o.threads > 0) return o.threads;
  const unsigned hw = std::thread::hardware_concurrency();
  return hw ? int(hw) : 1;
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
      fail(flag, ": '", item, "' is not a token id (expected comma-separated integers)");
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
  const Tokenizer* tok = m.tokenizer();
  if (!tok) {
    fail(m.path(), ": the model has no tokenizer (tokenizer.ggml.*); give token ids with --ids");
  }
  return tok->encode(text, tok->add_bos_default(), parse_special);
}

void Utf8Printer::put(const std::string& bytes) {
  pending_ += bytes;
  // Keep back an incomplete UTF-8 sequence at the end.
  size_t cut = pending_.size();
  for (size_t back = 1; back <= 4 && back <= pending_.size(); ++back) {
    const unsigned char c = static_cast<unsigned char>(pending_[pending_.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte
    size_t len = 1;
    if ((c & 0xE0) == 0xC0)
      len = 2;
    else if ((c & 0xF0) == 0xE0)
      len = 3;
    else if ((c & 0xF8) == 0xF0)
      len = 4;
    if (len > back) cut = pending_.size() - back;
    break;
  }
  std::fwrite(pending_.data(), 1, cut, stdout);
  std::fflush(stdout);
  pending_.erase(0, cut);
}

void Utf8Printer::flush() {
  std::fwrite(pending_.data(), 1, pending_.size(), stdout);
  std::fflush(stdout);
  pending_.clear();
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int64_t peak_rss_bytes() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return int64_t(ru.ru_maxrss) * 1024;
}

}  // namespace trit::cli
