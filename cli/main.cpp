#include <cstdio>
#include <exception>
#include <new>

#include "cli/commands.h"
#include "trit/error.h"
#include "trit/version.h"

int main(int argc, char** argv) {
  CLI::App app{"trit: run and fine-tune BitNet b1.58 models on CPUs and GPUs"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "trit " TRIT_VERSION_STRING);
  trit::cli::add_generate_command(app);
  trit::cli::add_chat_command(app);
  trit::cli::add_logits_command(app);
  trit::cli::add_perplexity_command(app);
  trit::cli::add_finetune_command(app);
  trit::cli::add_merge_command(app);
  trit::cli::add_eval_command(app);
  trit::cli::add_convert_command(app);
  trit::cli::add_export_peft_command(app);
  trit::cli::add_quantize_command(app);
  trit::cli::add_create_command(app);
  trit::cli::add_info_command(app);
  trit::cli::add_devices_command(app);
  trit::cli::add_bench_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const trit::Error& e) {
    std::fprintf(stderr, "trit: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "trit: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "trit: %s\n", e.what());
    return 1;
  }
  return 0;
}
