// The server's request bodies: /v1/completions and /v1/chat/completions checked field by field
// into generation options (400 naming the field for anything wrong), and /tokenize,
// /detokenize and POST /lora-adapters, as `trit serve` reads them. Every refusal must be an
// HttpError 4xx with a message.
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
  auto refused_with_4xx = [](auto&& parse) {
    try {
      parse();
    } catch (const trit::serve::HttpError& e) {
      if (e.status() < 400 || e.status() > 499 || std::string_view(e.what()).empty()) std::abort();
    }
  };
  for (const bool chat : {false, true}) {
    refused_with_4xx(
        [&] { (void)trit::serve::parse_completion(body, chat, model, 2, "austen-tiny.gguf"); });
  }
  refused_with_4xx([&] {
    const trit::serve::TokenizeRequest t = trit::serve::parse_tokenize(body);
    (void)model.tokenize(t.content, t.add_special, t.parse_special);
  });
  refused_with_4xx(
      [&] { (void)model.detokenize(trit::serve::parse_detokenize(body, model.info().n_vocab)); });
  refused_with_4xx([&] { (void)trit::serve::parse_adapter_scales(body, 2); });
  return 0;
}
