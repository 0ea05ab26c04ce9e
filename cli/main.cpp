#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <exception>
#include <map>
#include <new>
#include <string>

#include "cli/commands.h"
#include "trit/error.h"
#include "trit/version.h"

namespace {

// The flag of the running command that sets an options field (trit::Error::option): the
// field's name with dashes ("grad_accum": --grad-accum), or one of the few that differ.
std::string flag_of(const CLI::App& app, const std::string& field) {
  static const std::map<std::string, std::string> differ = {{"dropout", "--lora-dropout"},
                                                            {"n_ctx", "--ctx"},
                                                            {"n_batch", "--batch"},
                                                            {"max_buffer_mb", "--max-buffer-mb"}};
  std::string flag = "--" + field;
  for (char& c : flag) c = c == '_' ? '-' : c;
  if (const auto it = differ.find(field); it != differ.end()) flag = it->second;
  for (const CLI::App* cmd : app.get_subcommands()) {
    if (cmd->get_option_no_throw(flag)) return flag;
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  // A file-size limit (ulimit -f) makes a write fail with EFBIG, reported with the file's name
  // and the previous file left in place, instead of killing the program halfway.
  std::signal(SIGXFSZ, SIG_IGN);
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
  trit::cli::add_serve_command(app);
  trit::cli::add_peer_command(app);
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
    const std::string flag = e.option().empty() ? "" : flag_of(app, e.option());
    if (flag.empty()) {
      std::fprintf(stderr, "trit: %s\n", e.what());
    } else {
      std::fprintf(stderr, "trit: %s (%s)\n", e.what(), flag.c_str());
    }
    return 1;
  } catch (const std::bad_alloc&) {
    // The limit, when there is one, is what to raise; trit info estimates what a run needs.
    rlimit r{};
    if (getrlimit(RLIMIT_AS, &r) == 0 && r.rlim_cur != RLIM_INFINITY) {
      std::fprintf(stderr,
                   "trit: out of memory: the address space is limited to %llu MiB (ulimit -v); "
                   "`trit info MODEL` estimates what a run needs\n",
                   static_cast<unsigned long long>(r.rlim_cur >> 20));
      return 1;
    }
    std::fprintf(stderr, "trit: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "trit: %s\n", e.what());
    return 1;
  }
  return 0;
}
