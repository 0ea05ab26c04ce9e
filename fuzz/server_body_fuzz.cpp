// The server's request bodies: /v1/completions and /v1/chat/completions checked field by field
// into generation options (400 naming the field for anything wrong), as `trit serve` reads
// them. Every refusal must be an HttpError with a status and a message.
#include <string>

#include "fuzz_input.h"
#include "serve/http_error.h"
#include "serve/openai.h"
#include "trit/model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static trit::Model model = [] {
    trit::ModelOptions o;
    o.device = "cpu";
    return trit::Model::open(trit::fuzz::shipped_model(), o);
  }();
  const std::string body(trit::fuzz::as_text(data, size));
  for (const bool chat : {false, true}) {
    try {
      (void)trit::serve::parse_completion(body, chat, model, 2, "austen-tiny.gguf");
    } catch (const trit::serve::HttpError& e) {
      if (e.status() < 400 || e.status() > 499 || std::string_view(e.what()).empty()) std::abort();
    }
  }
  return 0;
}
