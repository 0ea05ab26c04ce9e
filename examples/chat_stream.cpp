// A streaming chat with trit's C++ API: each line of stdin is the user's turn, and the reply is
// printed as the model writes it. The conversation lives in one trit::Session, so each turn
// computes only its new tokens (the stats on stderr show how many came from the cache).
//
//   chat_stream MODEL.gguf [--device auto|cpu|vulkan|vulkan:N] [-n MAX_TOKENS] [--seed N]
#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>
#include <trit/trit.hpp>
#include <vector>

int main(int argc, char** argv) {
  std::string model_path, device;
  int64_t max_tokens = 128;
  uint64_t seed = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--device" && i + 1 < argc) {
      device = argv[++i];
    } else if (arg == "-n" && i + 1 < argc) {
      max_tokens = std::strtoll(argv[++i], nullptr, 10);
    } else if (arg == "--seed" && i + 1 < argc) {
      seed = std::strtoull(argv[++i], nullptr, 10);
    } else if (model_path.empty() && !arg.starts_with("-")) {
      model_path = arg;
    } else {
      model_path.clear();
      break;
    }
  }
  if (model_path.empty()) {
    std::cerr << "usage: chat_stream MODEL.gguf [--device D] [-n MAX_TOKENS] [--seed N]\n";
    return 2;
  }
  try {
    trit::ModelOptions model_options;
    model_options.device = device;
    trit::Model model = trit::Model::open(model_path, model_options);
    std::cerr << "chat_stream: " << model.device() << "; chat template "
              << model.info().chat_template << "; one line per turn, end of input quits\n";

    trit::Session session(model);  // the model's context, at most 4096 positions
    trit::GenerateOptions options;
    options.max_tokens = max_tokens;
    options.sampling.seed = seed;
    options.on_text = [](std::string_view piece) {
      std::cout << piece << std::flush;
      return true;  // false would stop the reply here
    };

    std::vector<trit::ChatMessage> messages;
    std::string line;
    while (std::getline(std::cin, line)) {
      if (line.empty()) continue;
      messages.push_back({"user", line});
      const trit::GenerateResult reply = session.chat(messages, options);
      std::cout << "\n";
      std::cerr << "[" << reply.n_cached << " of " << reply.n_prompt
                << " prompt tokens from the cache, " << reply.n_generated << " generated, "
                << trit::stop_reason_name(reply.stop_reason) << "]\n";
      messages.push_back({"assistant", reply.text});
    }
    return 0;
  } catch (const trit::Error& e) {
    std::cerr << "chat_stream: " << e.what() << "\n";
    return 1;
  }
}
