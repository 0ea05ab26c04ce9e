// Each subcommand lives in its own file and registers itself on the root CLI11 app; the
// callback throws trit::Error on failure, which main() turns into one line on stderr.
#pragma once

#include <CLI/CLI.hpp>

namespace trit::cli {

void add_create_command(CLI::App& app);
void add_quantize_command(CLI::App& app);
void add_info_command(CLI::App& app);
void add_devices_command(CLI::App& app);
void add_convert_command(CLI::App& app);
void add_export_peft_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_chat_command(CLI::App& app);
void add_logits_command(CLI::App& app);
void add_perplexity_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_finetune_command(CLI::App& app);
void add_merge_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_serve_command(CLI::App& app);
void add_peer_command(CLI::App& app);

}  // namespace trit::cli
