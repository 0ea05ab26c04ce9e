// The options of a fine-tuning job (POST /v1/fine_tuning/jobs "options"): typed field by field
// and then checked as `trit finetune` checks its flags. Every refusal must be an HttpError 4xx
// or a trit::Error naming the option (the server answers both with 400).
#include <nlohmann/json.hpp>

#include "fuzz_input.h"
#include "serve/http_error.h"
#include "serve/jobs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json options =
      nlohmann::json::parse(trit::fuzz::as_text(data, size), nullptr, false);
  if (!options.is_object()) return 0;
  try {
    trit::TrainOptions t = trit::serve::job_train_options(options);
    t.data = "data.jsonl";
    t.output = "adapter.gguf";
    trit::check_train_options(t);
  } catch (const trit::serve::HttpError& e) {
    if (e.status() < 400 || e.status() > 499 || std::string_view(e.what()).empty()) std::abort();
  } catch (const trit::Error& e) {
    if (std::string_view(e.what()).empty()) std::abort();
  }
  return 0;
}
