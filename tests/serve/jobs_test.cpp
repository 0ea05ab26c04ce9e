// Fine-tuning jobs of `trit serve` end to end: a dataset uploaded as multipart form data, a job
// followed through its server-sent events, its adapter downloaded and served. The adapter of
// a job equals, byte for byte, the one `trit finetune` writes with the same options, also when
// the server was stopped mid-job and the job resumed from its checkpoint at the next start.
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "support/cli.h"
#include "support/files.h"
#include "support/server.h"

namespace trit::engine::test {
namespace {

using nlohmann::json;

const std::string kJobModel = std::string(TRIT_TEST_DATA) + "/../../models/austen-tiny.gguf";
const std::string kJobData = std::string(TRIT_TEST_DATA) + "/../../data/demo/train.jsonl";

struct JobReply {
  int status = 0;
  json body;
};

JobReply job_post(const ServerProcess& s, const std::string& path, const json& body) {
  httplib::Client c = s.client();
  auto r = c.Post(path, body.dump(), "application/json");
  if (!r) return {-1, json()};
  return {r->status, json::parse(r->body, nullptr, false)};
}

json job_get(const ServerProcess& s, const std::string& path) {
  httplib::Client c = s.client();
  auto r = c.Get(path);
  return r ? json::parse(r->body, nullptr, false) : json();
}

std::string upload(const ServerProcess& s) {
  httplib::Client c = s.client();
  const httplib::MultipartFormDataItems items = {
      {"purpose", "fine-tune", "", ""},
      {"file", read_file(kJobData), "train.jsonl", "application/jsonl"}};
  auto r = c.Post("/v1/files", items);
  EXPECT_TRUE(r && r->status == 200) << (r ? r->body : "no reply");
  return json::parse(r->body)["id"].get<std::string>();
}

// The events of a job until [DONE] (stop_at: a type after which to hang up early).
std::vector<json> follow(const ServerProcess& s, const std::string& id,
                         const std::string& stop_at = "") {
  httplib::Client c = s.client();
  std::string buffer;
  std::vector<json> events;
  c.Get("/v1/fine_tuning/jobs/" + id + "/events", [&](const char* data, size_t n) {
    buffer.append(data, n);
    for (size_t end; (end = buffer.find("\n\n")) != std::string::npos;) {
      const std::string e = buffer.substr(0, end);
      buffer.erase(0, end + 2);
      if (e.rfind("data: {", 0) != 0) continue;
      events.push_back(json::parse(e.substr(6)));
      if (!stop_at.empty() && events.back().value("type", "") == stop_at) return false;
    }
    return true;
  });
  return events;
}

const json kOptions = {{"steps", 8}, {"batch", 2}, {"ctx", 64},      {"rank", 4},
                       {"lr", 0.01}, {"seed", 3},  {"save_every", 2}};

// `trit finetune` with the job's options on the same data and threads: the adapter it writes
// (training sums in an order that depends on the thread count).
std::string cli_adapter(const TempDir& dir) {
  const std::string out = dir.file("cli.gguf");
  const RunResult r =
      run_trit(dir, {"finetune", "-m",  kJobModel,      "--data", kJobData,  "-o",   out,
                     "--device", "cpu", "-t",           "1",      "--steps", "8",    "--batch",
                     "2",        "-c",  "64",           "--rank", "4",       "--lr", "0.01",
                     "--seed",   "3",   "--save-every", "2"});
  EXPECT_EQ(r.rc, 0) << r.err;
  return read_file(out);
}

TEST(ServeJobs, AJobTrainsTheAdapterTritFinetuneWritesAndTheServerServesIt) {
  TempDir dir;
  const std::string want = cli_adapter(dir);
  ServerProcess s(dir,
                  {"-m", kJobModel, "--device", "cpu", "-t", "1", "--jobs-dir", dir.file("jobs")});
  const std::string file = upload(s);
  const JobReply created =
      job_post(s, "/v1/fine_tuning/jobs", {{"training_file", file}, {"options", kOptions}});
  ASSERT_EQ(created.status, 200) << created.body.dump();
  const std::string id = created.body["id"];
  EXPECT_EQ(created.body["object"], "fine_tuning.job");
  const std::vector<json> events = follow(s, id);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back()["status"], "succeeded");
  int metrics = 0;
  for (const json& e : events) metrics += e.value("type", "") == "metrics" ? 1 : 0;
  EXPECT_EQ(metrics, 8);
  const json job = job_get(s, "/v1/fine_tuning/jobs/" + id);
  EXPECT_EQ(job["status"], "succeeded");
  EXPECT_EQ(job["step"], 8);
  httplib::Client c = s.client();
  auto adapter = c.Get("/v1/fine_tuning/jobs/" + id + "/adapter");
  ASSERT_TRUE(adapter && adapter->status == 200);
  EXPECT_TRUE(adapter->body == want) << "the job's adapter differs from trit finetune's";
  // The adapter joined the server's list (scale 0), and a request can use it.
  json list;
  for (int i = 0; i < 200 && (list = job_get(s, "/lora-adapters")).empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["scale"], 0.0);
  EXPECT_EQ(job_get(s, "/v1/fine_tuning/jobs/" + id)["adapter_id"], 0);
  write_file(dir.file("downloaded.gguf"), adapter->body);
  const RunResult gen =
      run_trit(dir, {"generate", "-m", kJobModel, "--lora", dir.file("downloaded.gguf"), "-p",
                     "Emma", "-n", "8", "--temp", "0", "--device", "cpu"});
  const JobReply served = job_post(s, "/v1/completions",
                                   {{"prompt", "Emma"},
                                    {"max_tokens", 8},
                                    {"temperature", 0},
                                    {"lora", {{{"id", 0}, {"scale", 1.0}}}}});
  ASSERT_EQ(served.status, 200);
  EXPECT_EQ("Emma" + served.body["choices"][0]["text"].get<std::string>() + "\n", gen.out);
}

TEST(ServeJobs, AJobStoppedWithTheServerResumesAtTheNextStart) {
  TempDir dir;
  const std::string want = cli_adapter(dir);
  const std::vector<std::string> args = {"-m", kJobModel, "--device",   "cpu",
                                         "-t", "1",       "--jobs-dir", dir.file("jobs")};
  std::string id;
  {
    ServerProcess s(dir, args);
    id = job_post(s, "/v1/fine_tuning/jobs", {{"training_file", upload(s)}, {"options", kOptions}})
             .body["id"];
    follow(s, id, "checkpoint");  // the first checkpoint is written
    EXPECT_EQ(s.stop(SIGTERM), 0);
  }
  const std::string meta = read_file(dir.file("jobs") + "/" + id + "/job.json");
  EXPECT_NE(meta.find("\"status\":\"queued\""), std::string::npos) << meta;
  ServerProcess s(dir, args);
  const std::vector<json> events = follow(s, id);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back()["status"], "succeeded");
  bool resumed = false;
  for (const json& e : events) {
    resumed = resumed || e.value("message", "").find("resum") != std::string::npos;
  }
  EXPECT_TRUE(resumed) << "no event says the run resumed";
  httplib::Client c = s.client();
  auto adapter = c.Get("/v1/fine_tuning/jobs/" + id + "/adapter");
  ASSERT_TRUE(adapter && adapter->status == 200);
  EXPECT_TRUE(adapter->body == want) << "the resumed job's adapter differs from trit finetune's";
}

// Uploads stream to disk under their own limit (--max-upload-mb), not the request body's; the
// stored file holds exactly the bytes sent, and nothing is left of a refused upload.
TEST(ServeJobs, UploadsStreamToDiskUnderTheirOwnLimit) {
  TempDir dir;
  ServerProcess s(dir, {"-m", kJobModel, "--device", "cpu", "-t", "1", "--jobs-dir",
                        dir.file("jobs"), "--max-body-mb", "1", "--max-upload-mb", "3"});
  std::string big;
  for (int i = 0; big.size() < (size_t(2) << 20); ++i) {
    big += "{\"text\": \"row " + std::to_string(i) + " of a dataset larger than a body\"}\n";
  }
  httplib::Client c = s.client();
  auto r = c.Post("/v1/files",
                  httplib::MultipartFormDataItems{{"file", big, "big.jsonl", "application/jsonl"}});
  ASSERT_TRUE(r && r->status == 200) << (r ? r->body : "no reply");
  const std::string id = json::parse(r->body)["id"];
  EXPECT_EQ(json::parse(r->body)["bytes"], big.size());
  EXPECT_TRUE(read_file(dir.file("jobs") + "/files/" + id + ".jsonl") == big);
  // A body over --max-body-mb elsewhere, and an upload over --max-upload-mb: 413 naming them.
  auto body = c.Post("/v1/completions", json{{"prompt", big}}.dump(), "application/json");
  ASSERT_TRUE(body);
  EXPECT_EQ(body->status, 413);
  EXPECT_NE(body->body.find("--max-body-mb"), std::string::npos) << body->body;
  // (The upload over its limit is refused before its body is read and the connection closes,
  // which this client, still sending, sees as a broken connection; curl reads the 413.)
  // Here the headers alone go out, and the answer is read.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(s.port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  const std::string head =
      "POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
      "boundary=b\r\nContent-Length: 5000000\r\n\r\n";
  ASSERT_EQ(send(fd, head.data(), head.size(), 0), ssize_t(head.size()));
  std::string answer;
  char buf[4096];
  // Until the error object is whole (the server may keep the socket a while).
  for (ssize_t n;
       answer.find("\"}}") == std::string::npos && (n = recv(fd, buf, sizeof buf, 0)) > 0;) {
    answer.append(buf, size_t(n));
  }
  close(fd);
  EXPECT_NE(answer.find("HTTP/1.1 413"), std::string::npos) << answer;
  EXPECT_NE(answer.find("--max-upload-mb"), std::string::npos) << answer;
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.file("jobs") + "/files")) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1u);
}

// gzip of `data` (zlib's own encoder: another implementation than the server's inflater).
std::string gzip(const std::string& data) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&z, uLong(data.size())), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = uInt(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = uInt(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// A multipart body with one part, field "file".
std::string multipart_file(const std::string& name, const std::string& content) {
  return "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + name +
         "\"\r\nContent-Type: application/jsonl\r\n\r\n" + content + "\r\n--b--\r\n";
}

// A compressed upload is stored inflated and held to --max-upload-mb by what it inflates to
// (a few KiB that inflate past the limit are refused, nothing kept); a compressed body
// anywhere else is refused (415) before it is inflated.
TEST(ServeJobs, CompressedUploadsAreHeldToTheirLimitInflated) {
  TempDir dir;
  ServerProcess s(dir, {"-m", kJobModel, "--device", "cpu", "-t", "1", "--jobs-dir",
                        dir.file("jobs"), "--max-upload-mb", "1"});
  httplib::Client c = s.client();
  const httplib::Headers gz = {{"Content-Encoding", "gzip"}};
  std::string rows;
  for (int i = 0; rows.size() < 300000; ++i)
    rows += "{\"text\": \"row " + std::to_string(i) + "\"}\n";
  auto r = c.Post("/v1/files", gz, gzip(multipart_file("rows.jsonl", rows)),
                  "multipart/form-data; boundary=b");
  ASSERT_TRUE(r && r->status == 200) << (r ? r->body : "no reply");
  const std::string id = json::parse(r->body)["id"];
  EXPECT_EQ(json::parse(r->body)["bytes"], rows.size());
  EXPECT_TRUE(read_file(dir.file("jobs") + "/files/" + id + ".jsonl") == rows);
  const std::string bomb = gzip(multipart_file("bomb.jsonl", std::string(8 << 20, 'a')));
  ASSERT_LT(bomb.size(), size_t(64) << 10);
  httplib::Client c2 = s.client();
  auto big = c2.Post("/v1/files", gz, bomb, "multipart/form-data; boundary=b");
  ASSERT_TRUE(big) << "no reply";
  EXPECT_EQ(big->status, 413);
  EXPECT_NE(big->body.find("--max-upload-mb"), std::string::npos) << big->body;
  httplib::Client c3 = s.client();
  auto other =
      c3.Post("/v1/completions", gz, gzip(json{{"prompt", "Hello"}}.dump()), "application/json");
  ASSERT_TRUE(other) << "no reply";
  EXPECT_EQ(other->status, 415);
  EXPECT_NE(other->body.find("/v1/files only"), std::string::npos) << other->body;
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.file("jobs") + "/files")) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1u);
}

TEST(ServeJobs, BadJobsAreRefusedAndJobsCancel) {
  TempDir dir;
  ServerProcess s(dir,
                  {"-m", kJobModel, "--device", "cpu", "-t", "1", "--jobs-dir", dir.file("jobs")});
  const std::string file = upload(s);
  struct Bad {
    json body;
    std::string names;
  };
  const std::vector<Bad> corpus = {
      {json::object(), "training_file"},
      {{{"training_file", "file-nope"}}, "was not uploaded"},
      {{{"training_file", "../../etc/passwd"}}, "not a file id"},
      {{{"training_path", "/etc"}}, "--allow-paths"},
      {{{"training_file", file}, {"options", {{"rnk", 4}}}}, "options.rnk"},
      {{{"training_file", file}, {"options", {{"rank", "four"}}}}, "options.rank"},
      {{{"training_file", file}, {"options", 3}}, "'options'"},
      {{{"training_file", file}, {"options", {{"rank", 0}}}}, "'options.rank': rank must be"},
      // Out of their types' range (a cast of these was undefined; found by fuzzing).
      {{{"training_file", file}, {"options", {{"rank", 1e300}}}},
       "'options.rank' must be an integer, got 1e+300"},
      {{{"training_file", file}, {"options", {{"steps", 18446744073709551615ull}}}},
       "'options.steps' must be an integer in range"},
      {{{"training_file", file}, {"options", {{"seed", -1}}}},
       "'options.seed' must be an integer of 0 or more"},
      {{{"training_file", file}, {"options", {{"alpha", 1e300}}}},
       "'options.alpha' must be a finite number in range"},
      {{{"training_file", file}, {"options", {{"schedule", "wavy"}}}}, "options.schedule"},
      {{{"training_file", file}, {"validation_file", "file-nope"}}, "'validation_file' file-nope"},
      {{{"validation_file", file}}, "'validation_file' goes with 'training_file'"},
  };
  for (const Bad& b : corpus) {
    const JobReply r = job_post(s, "/v1/fine_tuning/jobs", b.body);
    EXPECT_EQ(r.status, 400) << b.body.dump();
    EXPECT_NE(r.body["error"]["message"].get<std::string>().find(b.names), std::string::npos)
        << r.body.dump();
  }
  EXPECT_EQ(job_get(s, "/v1/fine_tuning/jobs/ftjob-none")["error"]["code"], 404);
  // A long job, cancelled while it runs; a queued one behind it, cancelled before it starts.
  json long_run = kOptions;
  long_run["steps"] = 100000;
  const std::string running =
      job_post(s, "/v1/fine_tuning/jobs", {{"training_file", file}, {"options", long_run}})
          .body["id"];
  const std::string queued =
      job_post(s, "/v1/fine_tuning/jobs", {{"training_file", file}, {"options", kOptions}})
          .body["id"];
  follow(s, running, "metrics");
  // Serving first: while a request decodes, the job holds after its current step.
  std::atomic<int64_t> step_at_start{-1}, step_later{-1};
  std::thread request([&] {
    httplib::Client c = s.client();
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = json{{"prompt", "Emma"}, {"max_tokens", 120}, {"ignore_eos", true}, {"stream", true}}
                   .dump();
    req.set_header("Content-Type", "application/json");
    int chunks = 0;
    req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) {
      ++chunks;
      if (chunks == 10) step_at_start = job_get(s, "/v1/fine_tuning/jobs/" + running)["step"];
      if (chunks == 60) step_later = job_get(s, "/v1/fine_tuning/jobs/" + running)["step"];
      return true;
    };
    c.send(req);
  });
  request.join();
  ASSERT_GE(step_at_start, 0);
  ASSERT_GE(step_later, 0);
  EXPECT_LE(step_later - step_at_start, 1) << "the job trained on while a request decoded";
  EXPECT_EQ(
      job_post(s, "/v1/fine_tuning/jobs/" + queued + "/cancel", json::object()).body["status"],
      "cancelled");
  job_post(s, "/v1/fine_tuning/jobs/" + running + "/cancel", json::object());
  EXPECT_EQ(follow(s, running).back()["status"], "cancelled");
  EXPECT_EQ(job_get(s, "/v1/fine_tuning/jobs/" + running + "/adapter")["error"]["code"], 404);
  EXPECT_EQ(job_get(s, "/v1/fine_tuning/jobs")["data"].size(), 2u);
  // Checkpoint files by name only: no other file of the job's folder, no other folder.
  const std::string ckpts = "/v1/fine_tuning/jobs/" + running + "/checkpoints";
  const json list = job_get(s, ckpts);
  ASSERT_FALSE(list["data"].empty()) << list.dump();  // at least the one the cancel wrote
  const std::string first = list["data"][0]["id"];
  httplib::Client c = s.client();
  auto got = c.Get(ckpts + "/" + first + "/state.json");
  ASSERT_TRUE(got && got->status == 200);
  EXPECT_EQ(json::parse(got->body)["step"], list["data"][0]["step_number"]);
  for (const std::string& bad : std::vector<std::string>{
           ckpts + "/" + first + "/job.json", ckpts + "/..%2F/job.json",
           ckpts + "/checkpoint-x/state.json", "/v1/fine_tuning/jobs/ftjob-none/checkpoints"}) {
    EXPECT_EQ(job_get(s, bad)["error"]["code"], 404) << bad;
  }
}

}  // namespace
}  // namespace trit::engine::test
