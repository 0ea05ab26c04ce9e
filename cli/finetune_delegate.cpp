#include "cli/finetune_delegate.h"

#include <httplib.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

namespace trit::cli {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

std::string read_local(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("finetune --delegate: cannot read " + path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Through a temporary file renamed into place: never a partial file where a good one was.
void write_local(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".part";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), std::streamsize(bytes.size()));
    if (!f) fail("finetune --delegate: cannot write " + tmp);
  }
  fs::rename(tmp, path);
}

// The job's options: the `trit finetune` options the provider's jobs take.
json job_options(const TrainOptions& o) {
  return {{"targets", o.targets},
          {"rank", o.rank},
          {"alpha", o.alpha},
          {"rslora", o.rslora},
          {"dropout", o.dropout},
          {"lr", o.lr},
          {"schedule", o.schedule},
          {"warmup", o.warmup},
          {"weight_decay", o.weight_decay},
          {"grad_clip", o.grad_clip},
          {"epochs", o.epochs},
          {"steps", o.steps},
          {"ctx", o.ctx},
          {"batch", o.batch},
          {"grad_accum", o.grad_accum},
          {"pack_tokens", o.pack_tokens},
          {"mask_prompt", o.mask_prompt},
          {"chat_template", o.chat_template},
          {"grad_checkpointing", o.grad_checkpointing},
          {"seed", o.seed},
          {"val_every", o.val_every},
          {"val_examples", o.val_examples},
          {"save_every", o.save_every},
          {"max_bad_steps", o.max_bad_steps}};
}

// An HTTP failure: status 0 when the provider could not be reached or the connection broke
// (--fallback-local covers it), else the provider's answer.
struct Failure {
  int status = 0;
  std::string message;
};

std::string error_message(const httplib::Result& r) {
  if (!r) return "the connection failed: " + httplib::to_string(r.error());
  const json j = json::parse(r->body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_object()) {
    return j["error"].value("message", r->body);
  }
  return "HTTP " + std::to_string(r->status) + " " + r->body.substr(0, 200);
}

class JobClient {
 public:
  // Downloads use a client of their own: they happen while the events stream is open.
  explicit JobClient(int port) : c_("127.0.0.1", port), files_("127.0.0.1", port) {
    for (httplib::Client* c : {&c_, &files_}) {
      c->set_connection_timeout(60, 0);
      c->set_read_timeout(600, 0);
      c->set_write_timeout(600, 0);
    }
  }

  // The upload's file id.
  std::string upload(const std::string& path) {
    const httplib::MultipartFormDataItems items = {
        {"file", read_local(path), fs::path(path).filename().string(), "application/jsonl"}};
    httplib::Result r = c_.Post("/v1/files", items);
    if (!r && (r = c_.Post("/v1/files", items), !r)) throw Failure{0, error_message(r)};
    if (r->status != 200) throw Failure{r->status, path + ": " + error_message(r)};
    return json::parse(r->body).value("id", "");
  }

  json post(const std::string& path, const json& body) {
    const httplib::Result r = c_.Post(path, body.dump(), "application/json");
    if (!r || r->status != 200) throw Failure{r ? r->status : 0, error_message(r)};
    return json::parse(r->body);
  }

  std::string get(const std::string& path) {
    const httplib::Result r = files_.Get(path);
    if (!r || r->status != 200) throw Failure{r ? r->status : 0, error_message(r)};
    return r->body;
  }

  // The job's events after the first `seen`, as they come (seen counts them); false when the
  // stream broke before its end, or when stop() asked to leave it (after an event).
  bool follow(const std::string& id, size_t& seen, const std::function<void(const json&)>& on_event,
              const std::function<bool()>& stop) {
    std::string buffer;
    bool ended = false;
    const httplib::Result r = c_.Get(
        "/v1/fine_tuning/jobs/" + id + "/events?from=" + std::to_string(seen),
        [](const httplib::Response&) { return true; },
        [&](const char* data, size_t n) {
          buffer.append(data, n);
          for (size_t end; (end = buffer.find("\n\n")) != std::string::npos;) {
            const std::string event = buffer.substr(0, end);
            buffer.erase(0, end + 2);
            if (event.rfind("data: ", 0) != 0) continue;
            if (event.substr(6) == "[DONE]") {
              ended = true;
              continue;
            }
            const json j = json::parse(event.substr(6), nullptr, false);
            ++seen;
            if (j.is_object()) on_event(j);
          }
          return ended || !stop();
        });
    if (r && r->status != 200) throw Failure{r->status, error_message(r)};
    return ended;
  }

 private:
  httplib::Client c_, files_;
};

// The files a run reads from its --data: a folder's train.jsonl and valid.jsonl, or the file.
std::pair<std::string, std::string> data_files(const std::string& data) {
  if (!fs::is_directory(data)) {
    if (!fs::exists(data)) fail("--data " + data + ": no such file or folder");
    return {data, ""};
  }
  const std::string train = (fs::path(data) / "train.jsonl").string();
  const std::string valid = (fs::path(data) / "valid.jsonl").string();
  if (!fs::exists(train)) fail("--data " + data + ": no train.jsonl in the folder");
  return {train, fs::exists(valid) ? valid : ""};
}

// Ctrl-C (or SIGTERM) while the provider trains: the job is cancelled there, which writes a
// checkpoint, and that checkpoint is copied here, as a local run writes one. A second Ctrl-C
// ends this program at once (the handler is restored by the first).
std::atomic<bool> g_interrupted{false};
extern "C" void on_interrupt(int sig) {
  g_interrupted = true;
  std::signal(sig, SIG_DFL);
}

}  // namespace

bool finetune_delegated(const DelegateOptions& d, const TrainOptions& o, std::string& resume_from) {
  if (!o.init_adapter.empty()) {
    fail("finetune --delegate: --lora (train an adapter further) runs here only; drop --delegate");
  }
  if (!o.resume.empty()) {
    fail("finetune --delegate: --resume continues a run of this device; drop --delegate");
  }
  check_train_options(o);  // this device's word on its own options, before anything goes out
  const auto [train, valid] = data_files(o.data);
  const std::string ckpt_dir = checkpoint_dir_of(o);
  const std::string metrics = strip_gguf(o.output) + ".metrics.jsonl";
  const std::string plot = strip_gguf(o.output) + ".loss.svg";
  const std::string where = "finetune --delegate " + d.key;

  PeerTunnel tunnel(d);
  JobClient c(tunnel.port());
  std::string job_id;
  std::string status;
  std::set<std::string> copied;
  std::string last_copied;
  try {
    json body = {{"training_file", c.upload(train)}, {"options", job_options(o)}};
    if (!valid.empty()) body["validation_file"] = c.upload(valid);
    job_id = c.post("/v1/fine_tuning/jobs", body).value("id", "");
    std::fprintf(stderr, "trit: delegated to %s: fine-tuning job %s\n", d.key.c_str(),
                 job_id.c_str());
    const std::string job = "/v1/fine_tuning/jobs/" + job_id;
    // Each checkpoint as it is written, with the metrics up to it: what a local resume needs.
    auto copy_checkpoint = [&](const std::string& name) {
      if (name.empty() || copied.count(name)) return;
      const fs::path tmp = fs::path(ckpt_dir) / ("." + name + ".part");
      fs::create_directories(tmp);
      for (const char* file : {"adapter.gguf", "optimizer.bin", "state.json"}) {
        write_local((tmp / file).string(), c.get(job + "/checkpoints/" + name + "/" + file));
      }
      std::error_code ec;
      fs::remove_all(fs::path(ckpt_dir) / name, ec);
      fs::rename(tmp, fs::path(ckpt_dir) / name);
      copied.insert(name);
      last_copied = name;
      write_local(metrics, c.get(job + "/metrics"));
    };
    auto on_event = [&](const json& e) {
      const std::string type = e.value("type", "");
      if (type == "status") {
        status = e.value("status", "");
        if (status != "succeeded") status += ": " + e.value("message", "");
        return;
      }
      if (e.contains("message") && e["message"].is_string()) {
        std::fprintf(stderr, "%s\n", e["message"].get<std::string>().c_str());
      }
      if (type == "checkpoint") copy_checkpoint(e.value("checkpoint", ""));
    };
    g_interrupted = false;
    std::signal(SIGINT, on_interrupt);
    std::signal(SIGTERM, on_interrupt);
    struct Restore {
      ~Restore() {
        std::signal(SIGINT, SIG_DFL);
        std::signal(SIGTERM, SIG_DFL);
      }
    } restore;
    size_t seen = 0;
    bool ended = c.follow(job_id, seen, on_event, [] { return g_interrupted.load(); });
    if (!ended && g_interrupted) {
      std::fprintf(stderr, "trit: stopping job %s on the provider (it writes a checkpoint)\n",
                   job_id.c_str());
      c.post(job + "/cancel", json::object());
      ended = c.follow(job_id, seen, on_event, [] { return false; });
      if (ended && status.rfind("cancelled", 0) == 0) {
        std::fprintf(
            stderr, "stopped early; checkpoint: %s\n",
            last_copied.empty() ? "none came back" : (fs::path(ckpt_dir) / last_copied).c_str());
        return true;
      }
    }
    if (ended && status == "succeeded") {
      if (g_interrupted) std::fprintf(stderr, "trit: the job ended before the cancel reached it\n");
      write_local(o.output, c.get(job + "/adapter"));
      write_local(metrics, c.get(job + "/metrics"));
      write_local(plot, c.get(job + "/plot"));
      std::fprintf(stderr, "adapter: %s\nmetrics: %s\nloss plot: %s\n", o.output.c_str(),
                   metrics.c_str(), plot.c_str());
      return true;
    }
    if (ended && status.rfind("queued", 0) != 0) {  // failed or cancelled there
      fail(where + ": job " + job_id + " " + status);
    }
    // The stream broke, or the provider stopped with the job queued for its next start.
    throw Failure{0, ended ? "the provider stopped (" + status + ")"
                           : "the connection to the provider broke"};
  } catch (const Failure& f) {
    if (f.status != 0) fail(where + ": the provider refused the job: " + f.message);
    if (!d.fallback_local) {
      fail(where + ": " + f.message +
           " (is `trit peer provide` running there, with this device's key allowed? "
           "--fallback-local runs here instead)");
    }
    if (!last_copied.empty()) resume_from = (fs::path(ckpt_dir) / last_copied).string();
    std::fprintf(stderr, "trit: the provider %s did not finish (%s); %s\n", d.key.c_str(),
                 f.message.c_str(),
                 last_copied.empty() ? "fine-tuning here from the start"
                                     : ("resuming here from " + last_copied).c_str());
    return false;
  }
}

}  // namespace trit::cli
