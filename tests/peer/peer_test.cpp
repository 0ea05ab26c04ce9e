// `trit peer` end to end on a HyperDHT testnet bound to 127.0.0.1 (no traffic leaves the
// machine): key files, a provider that forwards allow-listed keys only to a real `trit serve`,
// and a consumer whose local endpoint carries the HTTP API, streaming included.
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "support/cli.h"
#include "support/files.h"
#include "support/process.h"
#include "support/server.h"

namespace trit::engine {
namespace {

using json = nlohmann::json;
using test::RunResult;
using test::TempDir;
using test::TritProcess;

const std::string kPeerModel = std::string(TRIT_TEST_DATA) + "/../../models/austen-tiny.gguf";

// `trit peer key --key-file F`: the public key line.
std::string peer_key(const TempDir& dir, const std::string& file) {
  const RunResult r = test::run_trit(dir, {"peer", "key", "--key-file", file});
  EXPECT_EQ(r.rc, 0) << r.err;
  return r.out.substr(0, r.out.find('\n'));
}

int port_of(const std::string& line) {
  std::smatch m;
  if (!std::regex_search(line, m, std::regex(R"(127\.0\.0\.1:(\d+))"))) return 0;
  return std::stoi(m[1]);
}

httplib::Result complete(int port, const json& body) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(60, 0);
  c.set_connection_timeout(60, 0);
  return c.Post("/v1/completions", body.dump(), "application/json");
}

// `trit generate` of a fixed greedy prompt with extra arguments (a model, a delegate).
RunResult greedy_generate(const TempDir& dir, const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"generate", "-p", "It is a truth", "-n", "8", "--temp", "0"};
  args.insert(args.end(), extra.begin(), extra.end());
  return test::run_trit(dir, args);
}

// A testnet on 127.0.0.1 and two identities, provider.key and consumer.key in dir; the file
// "allow" lists the consumer.
struct TwoPeers {
  explicit TwoPeers(const TempDir& dir)
      : testnet(dir, "testnet", {"peer", "testnet"}),
        bootstrap(testnet.wait_line("bootstrap ").substr(std::string("bootstrap ").size())),
        provider_key(peer_key(dir, dir.file("provider.key"))),
        consumer_key(peer_key(dir, dir.file("consumer.key"))) {
    std::ofstream(dir.file("allow")) << consumer_key << "\n";
  }
  TritProcess testnet;
  std::string bootstrap, provider_key, consumer_key;
};

TEST(PeerKey, CreatedOnceWithOwnerOnlyPermissionsAndRefusedWhenOthersCanRead) {
  TempDir dir;
  const std::string file = dir.file("cfg/trit/peer-key");
  const std::string key = peer_key(dir, file);
  EXPECT_TRUE(std::regex_match(key, std::regex("[0-9a-f]{64}"))) << key;
  struct stat st {};
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(peer_key(dir, file), key);  // the same identity every time
  EXPECT_NE(peer_key(dir, dir.file("other")), key);
  ::chmod(file.c_str(), 0644);
  const RunResult r = test::run_trit(dir, {"peer", "key", "--key-file", file});
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find(file), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("expected 600"), std::string::npos) << r.err;
  // A damaged key file is named, not replaced.
  ::chmod(file.c_str(), 0600);
  std::ofstream(file) << "not a key\n";
  const RunResult bad = test::run_trit(dir, {"peer", "key", "--key-file", file});
  EXPECT_NE(bad.rc, 0);
  EXPECT_NE(bad.err.find("64 hexadecimal"), std::string::npos) << bad.err;
  EXPECT_EQ(test::read_file(file), "not a key\n");
}

TEST(Peer, AConsumerReachesTheProvidersServerAndOthersAreRefusedUntilAllowed) {
  TempDir dir;
  TritProcess testnet(dir, "testnet", {"peer", "testnet"});
  const std::string line = testnet.wait_line("bootstrap ");
  ASSERT_GT(line.size(), 10u);
  const std::string bootstrap = line.substr(10);
  const std::string provider_key = peer_key(dir, dir.file("provider.key"));
  const std::string consumer_key = peer_key(dir, dir.file("consumer.key"));
  const std::string stranger_key = peer_key(dir, dir.file("stranger.key"));
  const std::string allow = dir.file("allow");
  std::ofstream(allow) << "# my laptop\n" << consumer_key << "\n";

  test::ServerProcess serve(dir, {"-m", kPeerModel, "--device", "cpu", "-t", "1"});
  TritProcess provider(dir, "provider",
                       {"peer", "provide", "--serve", serve.url(), "--allow", allow, "--key-file",
                        dir.file("provider.key"), "--bootstrap", bootstrap});
  EXPECT_NE(provider.wait_line("providing ").find(provider_key), std::string::npos);
  TritProcess consumer(dir, "consumer",
                       {"peer", "connect", provider_key, "--listen", "127.0.0.1:0", "--key-file",
                        dir.file("consumer.key"), "--bootstrap", bootstrap});
  const int port = port_of(consumer.wait_line("listening on "));
  ASSERT_GT(port, 0);

  // Through the tunnel, the provider's server answers as it does directly.
  const json body = {
      {"prompt", "It is a truth universally"}, {"max_tokens", 8}, {"temperature", 0}};
  const httplib::Result direct = complete(serve.port(), body);
  const httplib::Result tunnelled = complete(port, body);
  ASSERT_TRUE(direct && tunnelled) << consumer.err();
  ASSERT_EQ(tunnelled->status, 200) << tunnelled->body;
  EXPECT_EQ(json::parse(tunnelled->body)["choices"][0]["text"],
            json::parse(direct->body)["choices"][0]["text"]);
  EXPECT_TRUE(provider.wait_err("connected " + consumer_key));
  // The consumer reports the provider's device and model and the round trip.
  const std::string health = consumer.wait_line("provider " + provider_key);
  EXPECT_NE(health.find(": cpu"), std::string::npos) << health;
  EXPECT_NE(health.find("model austen-tiny.gguf"), std::string::npos) << health;
  EXPECT_NE(health.find("round trip "), std::string::npos) << health;

  // Streaming: server-sent events come through the tunnel and end with [DONE].
  json stream_body = body;
  stream_body["stream"] = true;
  const httplib::Result streamed = complete(port, stream_body);
  ASSERT_TRUE(streamed);
  EXPECT_EQ(streamed->get_header_value("Content-Type"), "text/event-stream");
  EXPECT_NE(streamed->body.find("data: [DONE]"), std::string::npos) << streamed->body;

  // A key not on the list is refused at the handshake: no request reaches the server (its
  // log has a line for every request it answers).
  auto requests = [&] { return serve.count_in_log(" 127.0.0.1\n"); };
  // The server writes a streamed request's line once the stream has ended, which may be after
  // the client read [DONE]: wait for the three completions' lines before counting.
  ASSERT_EQ(serve.wait_in_log("POST /v1/completions ", 3), 3u) << serve.log();
  const size_t before = requests();
  TritProcess stranger(dir, "stranger",
                       {"peer", "connect", provider_key, "--listen", "127.0.0.1:0", "--key-file",
                        dir.file("stranger.key"), "--bootstrap", bootstrap});
  const int stranger_port = port_of(stranger.wait_line("listening on "));
  const httplib::Result refused = complete(stranger_port, body);
  EXPECT_FALSE(refused && refused->status == 200);
  EXPECT_TRUE(provider.wait_err("refused " + stranger_key));
  EXPECT_EQ(requests(), before) << serve.log();

  // The list is read again when it changes: the stranger, now listed, gets through (the DHT
  // may time out a first attempt right after a refusal).
  std::ofstream(allow, std::ios::app) << stranger_key << "\n";
  bool through = false;
  for (int attempt = 0; attempt < 4 && !through; ++attempt) {
    const httplib::Result r = complete(stranger_port, body);
    through = r && r->status == 200;
  }
  EXPECT_TRUE(through) << stranger.err() << provider.err();
  EXPECT_TRUE(provider.wait_err("connected " + stranger_key));
  EXPECT_EQ(consumer.stop(), 0) << consumer.err();
  EXPECT_EQ(provider.stop(), 0) << provider.err();
}

// `trit generate --delegate KEY` and `trit chat --delegate KEY`: the provider's server generates,
// the text streams back and equals this device's own; a provider nobody serves fails naming the
// key, or with
// --fallback-local generates here; a request the provider refuses is not retried here.
TEST(Peer, GenerateRunsOnTheProviderOrFallsBackHere) {
  TempDir dir;
  TritProcess testnet(dir, "testnet", {"peer", "testnet"});
  const std::string line = testnet.wait_line("bootstrap ");
  ASSERT_GT(line.size(), 10u);
  const std::string bootstrap = line.substr(10);
  const std::string provider_key = peer_key(dir, dir.file("provider.key"));
  const std::string consumer_key = peer_key(dir, dir.file("consumer.key"));
  const std::string nobody_key = peer_key(dir, dir.file("nobody.key"));
  std::ofstream(dir.file("allow")) << consumer_key << "\n";
  test::ServerProcess serve(dir, {"-m", kPeerModel, "--device", "cpu", "-t", "1"});
  TritProcess provider(dir, "provider",
                       {"peer", "provide", "--serve", serve.url(), "--allow", dir.file("allow"),
                        "--key-file", dir.file("provider.key"), "--bootstrap", bootstrap});
  provider.wait_line("providing ");

  const std::vector<std::string> gen = {"generate", "-p", "It is a truth universally", "-n", "12",
                                        "--temp",   "0"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = gen;
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  const RunResult here = test::run_trit(dir, with({"-m", kPeerModel, "--device", "cpu"}));
  ASSERT_EQ(here.rc, 0) << here.err;
  const std::vector<std::string> peer_opts = {"--key-file", dir.file("consumer.key"), "--bootstrap",
                                              bootstrap};
  auto delegate_to = [&](const std::string& key, std::vector<std::string> extra) {
    std::vector<std::string> args = with({"--delegate", key});
    args.insert(args.end(), peer_opts.begin(), peer_opts.end());
    args.insert(args.end(), extra.begin(), extra.end());
    return test::run_trit(dir, args);
  };
  const RunResult there = delegate_to(provider_key, {});
  ASSERT_EQ(there.rc, 0) << there.err;
  EXPECT_EQ(there.out, here.out);
  EXPECT_NE(there.err.find("delegated to " + provider_key + ": generated 12 tokens"),
            std::string::npos)
      << there.err;
  EXPECT_TRUE(provider.wait_err("connected " + consumer_key));

  const RunResult unreachable = delegate_to(nobody_key, {});
  EXPECT_NE(unreachable.rc, 0);
  EXPECT_NE(unreachable.err.find("--delegate " + nobody_key), std::string::npos) << unreachable.err;
  const RunResult fallback =
      delegate_to(nobody_key, {"--fallback-local", "-m", kPeerModel, "--device", "cpu"});
  ASSERT_EQ(fallback.rc, 0) << fallback.err;
  EXPECT_EQ(fallback.out, here.out);
  EXPECT_NE(fallback.err.find("generating here"), std::string::npos) << fallback.err;

  // A chat of two turns: the provider's replies equal this device's, also when this device
  // takes over.
  const std::string turns = dir.file("turns.txt");
  std::ofstream(turns) << "Hello there\nAnd then?\n";
  auto chat = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = {"chat", "--temp", "0", "-n", "8"};
    args.insert(args.end(), extra.begin(), extra.end());
    const std::string out = dir.file("chat.out"), err = dir.file("chat.err");
    const std::string cmd = test::trit_command(args) + " <" + test::shell_quote(turns) + " >" +
                            test::shell_quote(out) + " 2>" + test::shell_quote(err);
    RunResult r;
    r.rc = WEXITSTATUS(std::system(cmd.c_str()));
    r.out = test::read_file(out);
    r.err = test::read_file(err);
    return r;
  };
  const RunResult chat_here = chat({"-m", kPeerModel, "--device", "cpu"});
  ASSERT_EQ(chat_here.rc, 0) << chat_here.err;
  std::vector<std::string> chat_there_args = {"--delegate", provider_key};
  chat_there_args.insert(chat_there_args.end(), peer_opts.begin(), peer_opts.end());
  const RunResult chat_there = chat(chat_there_args);
  ASSERT_EQ(chat_there.rc, 0) << chat_there.err;
  EXPECT_EQ(chat_there.out, chat_here.out);
  std::vector<std::string> chat_fallback_args = {
      "--delegate", nobody_key, "--fallback-local", "-m", kPeerModel, "--device", "cpu"};
  chat_fallback_args.insert(chat_fallback_args.end(), peer_opts.begin(), peer_opts.end());
  const RunResult chat_fallback = chat(chat_fallback_args);
  ASSERT_EQ(chat_fallback.rc, 0) << chat_fallback.err;
  EXPECT_EQ(chat_fallback.out, chat_here.out);
  EXPECT_NE(chat_fallback.err.find("this device answers now"), std::string::npos)
      << chat_fallback.err;

  const RunResult refused = delegate_to(
      provider_key, {"--top-p", "7", "--fallback-local", "-m", kPeerModel, "--device", "cpu"});
  EXPECT_NE(refused.rc, 0);
  EXPECT_NE(refused.err.find("top_p"), std::string::npos) << refused.err;
  EXPECT_EQ(refused.out, "");
}

// A delegated fine-tune: the dataset goes up, progress comes back, the adapter equals this
// device's own run; checkpoints come back as they are written, and when the provider dies the
// run resumes here from the last of them and still ends with the same adapter.
TEST(Peer, FinetuneRunsOnTheProviderAndResumesHereWhenItDies) {
  TempDir dir;
  TwoPeers peers(dir);
  ASSERT_FALSE(peers.bootstrap.empty());
  const std::string& bootstrap = peers.bootstrap;
  const std::string& provider_key = peers.provider_key;
  const std::string data = std::string(TRIT_TEST_DATA) + "/../../data/demo";
  // Enough steps that the provider is still training when the test stops it.
  const std::vector<std::string> train = {
      "finetune", "--data",         data, "--steps", "10",   "--batch", "2", "-c",
      "32",       "--rank",         "4",  "--lr",    "0.01", "-s",      "3", "--save-every",
      "2",        "--val-examples", "4",  "-t",      "1"};
  auto with = [&](const std::string& out, std::vector<std::string> extra) {
    std::vector<std::string> args = train;
    args.insert(args.end(), {"-o", dir.file(out)});
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  const RunResult here =
      test::run_trit(dir, with("here.gguf", {"-m", kPeerModel, "--device", "cpu"}));
  ASSERT_EQ(here.rc, 0) << here.err;
  const std::string want = test::read_file(dir.file("here.gguf"));

  const std::vector<std::string> delegate = {
      "--delegate", provider_key, "--key-file", dir.file("consumer.key"), "--bootstrap", bootstrap};
  {
    test::ServerProcess serve(
        dir, {"-m", kPeerModel, "--device", "cpu", "-t", "1", "--jobs-dir", dir.file("jobs")});
    TritProcess provider(dir, "provider",
                         {"peer", "provide", "--serve", serve.url(), "--allow", dir.file("allow"),
                          "--key-file", dir.file("provider.key"), "--bootstrap", bootstrap});
    provider.wait_line("providing ");
    const RunResult there = test::run_trit(dir, with("there.gguf", delegate));
    ASSERT_EQ(there.rc, 0) << there.err;
    EXPECT_TRUE(test::read_file(dir.file("there.gguf")) == want)
        << "the provider's adapter differs from this device's";
    EXPECT_NE(there.err.find("step 10/10"), std::string::npos) << there.err;
    EXPECT_NE(test::read_file(dir.file("there.metrics.jsonl")).find("\"step\":10"),
              std::string::npos);
    EXPECT_NE(test::read_file(dir.file("there.loss.svg")).find("<svg"), std::string::npos);
    EXPECT_EQ(test::read_file(dir.file("there.checkpoints/checkpoint-10/adapter.gguf")), want);
    EXPECT_TRUE(std::filesystem::exists(dir.file("there.checkpoints/checkpoint-6/optimizer.bin")));
    // A job the provider refuses (an empty dataset) is reported, not run here.
    std::ofstream(dir.file("empty.jsonl")).flush();
    std::vector<std::string> bad = with("refused.gguf", delegate);
    bad[2] = dir.file("empty.jsonl");  // --data's value
    bad.insert(bad.end(), {"--fallback-local", "-m", kPeerModel});
    const RunResult refused = test::run_trit(dir, bad);
    EXPECT_NE(refused.rc, 0);
    EXPECT_NE(refused.err.find("refused the job"), std::string::npos) << refused.err;
    EXPECT_NE(refused.err.find("empty"), std::string::npos) << refused.err;
    EXPECT_FALSE(std::filesystem::exists(dir.file("refused.gguf")));

    // Ctrl-C here cancels the job there, whose last checkpoint comes back, as a local run's.
    {
      // Steps enough that the job cannot end before the cancel crosses the DHT.
      std::vector<std::string> long_run = with("stopped.gguf", delegate);
      ASSERT_EQ(long_run[3], "--steps");
      long_run[4] = "100000";
      TritProcess stopped(dir, "stopped", long_run);
      bool started = false;
      for (int i = 0; i < 3000 && !started; ++i) {
        started = std::filesystem::exists(dir.file("stopped.checkpoints/checkpoint-2/state.json"));
        if (!started) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      ASSERT_TRUE(started) << stopped.err();
      EXPECT_EQ(stopped.stop(SIGINT), 0) << stopped.err();
      EXPECT_NE(stopped.err().find("stopped early; checkpoint: "), std::string::npos)
          << stopped.err();
      EXPECT_FALSE(std::filesystem::exists(dir.file("stopped.gguf")));
      httplib::Client c = serve.client();
      const auto jobs = c.Get("/v1/fine_tuning/jobs");
      ASSERT_TRUE(jobs && jobs->status == 200);
      EXPECT_EQ(json::parse(jobs->body)["data"].back()["status"], "cancelled") << jobs->body;
    }

    // The provider dies after the first checkpoint came back: this device takes over.
    std::vector<std::string> args = with("taken.gguf", delegate);
    args.insert(args.end(), {"--fallback-local", "-m", kPeerModel, "--device", "cpu"});
    TritProcess taken(dir, "taken", args);
    bool copied = false;
    for (int i = 0; i < 3000 && !copied; ++i) {
      copied = std::filesystem::exists(dir.file("taken.checkpoints/checkpoint-2/state.json"));
      if (!copied) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ASSERT_TRUE(copied) << taken.err();
    serve.stop(SIGKILL);
    EXPECT_EQ(taken.wait_exit(), 0) << taken.err();
    EXPECT_NE(taken.err().find("resuming here from checkpoint-"), std::string::npos) << taken.err();
    EXPECT_TRUE(test::read_file(dir.file("taken.gguf")) == want)
        << "the resumed adapter differs from an uninterrupted run's";
  }
}

// `provide -m MODEL -- SERVE OPTIONS` runs its own trit serve; the consumer lists the
// provider's devices, picks its model by name (another name is refused there), and the
// server stops with the provider.
TEST(Peer, ProvideStartsItsOwnServerAndConsumersSeeItsDevices) {
  TempDir dir;
  TwoPeers peers(dir);
  ASSERT_FALSE(peers.bootstrap.empty());
  const std::string& bootstrap = peers.bootstrap;
  const std::string& provider_key = peers.provider_key;
  TritProcess provider(dir, "provider",
                       {"peer", "provide", "-m", kPeerModel, "--allow", dir.file("allow"),
                        "--key-file", dir.file("provider.key"), "--bootstrap", bootstrap, "--",
                        "--device", "cpu", "-t", "1", "--parallel", "2"});
  provider.wait_line("providing ");
  const std::vector<std::string> peer_opts = {
      "--delegate", provider_key, "--key-file", dir.file("consumer.key"), "--bootstrap", bootstrap};
  auto run = [&](std::vector<std::string> args) {
    args.insert(args.end(), peer_opts.begin(), peer_opts.end());
    return test::run_trit(dir, args);
  };
  const RunResult devices = run({"devices"});
  ASSERT_EQ(devices.rc, 0) << devices.err;
  EXPECT_NE(devices.out.find("provider " + provider_key + ", serving on cpu"), std::string::npos)
      << devices.out;
  EXPECT_NE(devices.out.find("default device:"), std::string::npos) << devices.out;

  const std::vector<std::string> gen = {"generate", "-p", "It is a truth", "-n", "8",
                                        "--temp",   "0"};
  const RunResult here = greedy_generate(dir, {"-m", kPeerModel, "--device", "cpu"});
  ASSERT_EQ(here.rc, 0) << here.err;
  std::vector<std::string> named = gen;
  named.insert(named.end(), {"-m", "austen-tiny"});
  const RunResult there = run(named);
  ASSERT_EQ(there.rc, 0) << there.err;
  EXPECT_EQ(there.out, here.out);
  std::vector<std::string> other = gen;
  other.insert(other.end(), {"-m", "llama-70b.gguf"});
  const RunResult refused = run(other);
  EXPECT_NE(refused.rc, 0);
  EXPECT_NE(refused.err.find("'llama-70b.gguf' is not served here"), std::string::npos)
      << refused.err;

  EXPECT_EQ(provider.stop(SIGTERM), 0) << provider.err();
  EXPECT_NE(provider.err().find("trit serve: stopped"), std::string::npos) << provider.err();
}

// Peers that cannot reach each other meet through a blind relay: with --no-direct on both
// sides (the provider neither punches holes nor shares its addresses, the consumer tries no
// direct connection) every stream goes through the relay (its log names both halves of each
// pairing); a delegated generate still equals this device's own.
TEST(Peer, ABlindRelayPairsTheStreamsOfPeersThatNameIt) {
  TempDir dir;
  TwoPeers peers(dir);
  ASSERT_FALSE(peers.bootstrap.empty());
  const std::string relay_key = peer_key(dir, dir.file("relay.key"));
  std::ofstream(dir.file("relay-allow")) << peers.provider_key << "\n"
                                         << peers.consumer_key << "\n";
  TritProcess relay(dir, "relay",
                    {"peer", "relay", "--allow", dir.file("relay-allow"), "--key-file",
                     dir.file("relay.key"), "--bootstrap", peers.bootstrap});
  EXPECT_NE(relay.wait_line("relaying ").find(relay_key + " for the keys of"), std::string::npos);
  test::ServerProcess serve(dir, {"-m", kPeerModel, "--device", "cpu", "-t", "1"});
  TritProcess provider(dir, "provider",
                       {"peer", "provide", "--serve", serve.url(), "--allow", dir.file("allow"),
                        "--key-file", dir.file("provider.key"), "--bootstrap", peers.bootstrap,
                        "--relay", relay_key, "--no-direct"});
  EXPECT_NE(provider.wait_line("providing ").find("through relay " + relay_key + " only"),
            std::string::npos);

  const RunResult here = greedy_generate(dir, {"-m", kPeerModel, "--device", "cpu"});
  ASSERT_EQ(here.rc, 0) << here.err;
  const RunResult there = greedy_generate(
      dir, {"--delegate", peers.provider_key, "--key-file", dir.file("consumer.key"), "--bootstrap",
            peers.bootstrap, "--relay", relay_key, "--no-direct"});
  ASSERT_EQ(there.rc, 0) << there.err << provider.err() << relay.err();
  EXPECT_EQ(there.out, here.out);

  // The relay pairs the two halves of a stream once both peers have reached it, which may take
  // longer than the one-shot command above lives (it exits when the text is done). A consumer
  // that stays keeps a spare stream open: the relay pairs that one while it waits. (On one
  // host HyperDHT also opens the direct path to a provider it finds reachable, whatever the
  // options: which of the two carries a given request is the library's race.)
  TritProcess consumer(dir, "consumer",
                       {"peer", "connect", peers.provider_key, "--listen", "127.0.0.1:0",
                        "--key-file", dir.file("consumer.key"), "--bootstrap", peers.bootstrap,
                        "--relay", relay_key, "--no-direct"});
  const std::string listening = consumer.wait_line("listening on ");
  EXPECT_NE(listening.find("through relay " + relay_key + " only"), std::string::npos);
  const int port = port_of(listening);
  ASSERT_GT(port, 0);
  const json body = {
      {"prompt", "It is a truth universally"}, {"max_tokens", 8}, {"temperature", 0}};
  const httplib::Result direct = complete(serve.port(), body);
  const httplib::Result tunnelled = complete(port, body);
  ASSERT_TRUE(direct && tunnelled) << consumer.err() << provider.err() << relay.err();
  ASSERT_EQ(tunnelled->status, 200) << tunnelled->body;
  EXPECT_EQ(json::parse(tunnelled->body)["choices"][0]["text"],
            json::parse(direct->body)["choices"][0]["text"]);
  EXPECT_TRUE(relay.wait_err("paired " + peers.provider_key)) << relay.err();
  EXPECT_TRUE(relay.wait_err("paired " + peers.consumer_key)) << relay.err();
  EXPECT_TRUE(provider.wait_err("connected " + peers.consumer_key));
  EXPECT_EQ(consumer.stop(), 0) << consumer.err();
  EXPECT_EQ(provider.stop(), 0) << provider.err();
  EXPECT_EQ(relay.stop(), 0) << relay.err();
}

TEST(Peer, BadArgumentsAreNamed) {
  TempDir dir;
  const std::string key = dir.file("k");
  auto err_of = [&](std::vector<std::string> args) {
    args.insert(args.begin(), "peer");
    const RunResult r = test::run_trit(dir, args);
    EXPECT_NE(r.rc, 0);
    return r.err;
  };
  EXPECT_NE(err_of({"connect", "abc", "--key-file", key}).find("64 hexadecimal"),
            std::string::npos);
  EXPECT_NE(err_of({"provide", "--key-file", key}).find("--serve"), std::string::npos);
  EXPECT_NE(err_of({"connect", std::string(64, 'a'), "--listen", "nowhere", "--key-file", key})
                .find("--listen"),
            std::string::npos);
  EXPECT_NE(err_of({"fly"}).find("expected a command"), std::string::npos);
  EXPECT_NE(err_of({"connect", std::string(64, 'a'), "--no-direct", "--key-file", key})
                .find("--no-direct needs --relay"),
            std::string::npos);
  EXPECT_NE(err_of({"relay", "--relay", "x", "--key-file", key}).find("unknown option --relay"),
            std::string::npos);
  EXPECT_NE(err_of({"key", "--colour", "red"}).find("unknown option --colour"), std::string::npos);
  EXPECT_NE(err_of({"provide", "--serve", "http://127.0.0.1:1", "-m", "m.gguf", "--key-file", key})
                .find("exclude each other"),
            std::string::npos);
  EXPECT_NE(err_of({"provide", "--serve", "http://127.0.0.1:1", "--key-file", key, "--", "-t", "2"})
                .find("options after --"),
            std::string::npos);
  EXPECT_NE(err_of({"provide", "-m", dir.file("missing.gguf"), "--key-file", key})
                .find("exited (1) before listening"),
            std::string::npos);
  // --delegate commands check their own arguments before reaching out.
  const RunResult r =
      test::run_trit(dir, {"finetune", "--delegate", std::string(64, 'a'), "--data",
                           dir.file("d.jsonl"), "-o", dir.file("a.gguf"), "--rank", "0"});
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("rank must be positive"), std::string::npos) << r.err;
  const RunResult no_model =
      test::run_trit(dir, {"finetune", "--delegate", std::string(64, 'a'), "--fallback-local",
                           "--data", dir.file("d.jsonl"), "-o", dir.file("a.gguf")});
  EXPECT_NE(no_model.err.find("--fallback-local needs -m"), std::string::npos) << no_model.err;
}

}  // namespace
}  // namespace trit::engine
