#include "serve/jobs.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <type_traits>

#include "serve/http_error.h"
#include "serve/openai.h"

namespace trit::serve {
namespace fs = std::filesystem;
using nlohmann::json;

struct Jobs::Job {
  std::string id;
  std::string status = "queued";  // queued, running, succeeded, failed, cancelled
  int64_t created = 0, finished = 0;
  std::string data;               // the dataset's path
  json options = json::object();  // TrainOptions' fields as given
  std::string error;
  int64_t step = 0, total_steps = 0;
  double loss = 0, val_loss = -1;
  std::vector<json> events;
  bool cancel_requested = false;
};

namespace {

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string new_id(const char* prefix) {
  static std::atomic<uint64_t> counter{0};
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s%llx%03llx", prefix,
                static_cast<unsigned long long>(
                    std::chrono::system_clock::now().time_since_epoch().count() / 1000),
                static_cast<unsigned long long>(counter++ & 0xfff));
  return buf;
}

void write_atomically(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), std::streamsize(bytes.size()));
    if (!f) throw Error(tmp + ": cannot write");
  }
  fs::rename(tmp, path);
}

// The files of a checkpoint folder (train/checkpoint.cpp writes them).
const std::vector<std::string> kCheckpointFiles = {"adapter.gguf", "optimizer.bin", "state.json"};

bool checkpoint_name(const std::string& name) {
  return name.size() > 11 && name.rfind("checkpoint-", 0) == 0 &&
         name.find_first_not_of("0123456789", 11) == std::string::npos;
}

bool has_checkpoint(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return false;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().filename().string().rfind("checkpoint-", 0) == 0) return true;
  }
  return false;
}

}  // namespace

TrainOptions job_train_options(const json& o) {
  TrainOptions t;
  // Integer fields take integers within their type, float fields finite numbers within theirs
  // (a cast of an out-of-range number is undefined; found by fuzzing: "rank": 1e300).
  auto num = [&](const char* k, auto& field) {
    using T = std::remove_reference_t<decltype(field)>;
    if (!o.contains(k)) return;
    const json& v = o[k];
    auto bad = [&](const std::string& what) {
      throw HttpError(400, std::string("'options.") + k + "' must be " + what + ", got " + v.dump(),
                      k);
    };
    if constexpr (std::is_integral_v<T>) {
      if (!v.is_number_integer()) bad("an integer");
      if (v.is_number_unsigned()) {
        const uint64_t u = v.get<uint64_t>();
        if (u > uint64_t(std::numeric_limits<T>::max())) bad("an integer in range");
        field = T(u);
      } else {
        const int64_t i = v.get<int64_t>();
        if (i < 0 && std::is_unsigned_v<T>) bad("an integer of 0 or more");
        field = T(i);
      }
    } else {
      if (!v.is_number()) bad("a number");
      const double d = v.get<double>();
      if (!std::isfinite(d) || std::fabs(d) > double(std::numeric_limits<T>::max())) {
        bad("a finite number in range");
      }
      field = T(d);
    }
  };
  auto str = [&](const char* k, std::string& field) {
    if (!o.contains(k)) return;
    if (!o[k].is_string())
      throw HttpError(400, std::string("'options.") + k + "' must be a string", k);
    field = o[k].get<std::string>();
  };
  auto flag = [&](const char* k, bool& field) {
    if (!o.contains(k)) return;
    if (!o[k].is_boolean())
      throw HttpError(400, std::string("'options.") + k + "' must be true or false", k);
    field = o[k].get<bool>();
  };
  static const std::vector<std::string> known = {
      "targets",  "rank",      "alpha",        "rslora",      "dropout",       "lr",
      "schedule", "warmup",    "weight_decay", "grad_clip",   "epochs",        "steps",
      "ctx",      "batch",     "grad_accum",   "mask_prompt", "chat_template", "grad_checkpointing",
      "seed",     "val_every", "val_examples", "save_every",  "max_bad_steps", "pack_tokens"};
  for (const auto& [k, v] : o.items()) {
    if (std::find(known.begin(), known.end(), k) == known.end()) {
      throw HttpError(400, "'options." + k + "' is not a fine-tuning option", k);
    }
  }
  str("targets", t.targets);
  num("rank", t.rank);
  num("alpha", t.alpha);
  flag("rslora", t.rslora);
  num("dropout", t.dropout);
  num("lr", t.lr);
  str("schedule", t.schedule);
  num("warmup", t.warmup);
  num("weight_decay", t.weight_decay);
  num("grad_clip", t.grad_clip);
  num("epochs", t.epochs);
  num("steps", t.steps);
  num("ctx", t.ctx);
  num("batch", t.batch);
  num("grad_accum", t.grad_accum);
  num("pack_tokens", t.pack_tokens);
  flag("mask_prompt", t.mask_prompt);
  str("chat_template", t.chat_template);
  flag("grad_checkpointing", t.grad_checkpointing);
  num("seed", t.seed);
  num("val_every", t.val_every);
  num("val_examples", t.val_examples);
  num("save_every", t.save_every);
  num("max_bad_steps", t.max_bad_steps);
  return t;
}

Jobs::Jobs(std::string dir, std::string model_path, ModelOptions model_options,
           std::function<void(const std::string&, const std::string&)> on_adapter)
    : dir_(std::move(dir)),
      model_path_(std::move(model_path)),
      model_options_(std::move(model_options)),
      on_adapter_(std::move(on_adapter)) {
  std::error_code ec;
  fs::create_directories(dir_ + "/files", ec);
  if (ec) throw Error("serve: cannot make the jobs folder " + dir_ + ": " + ec.message());
  // Jobs of an earlier run: the unfinished ones queue again (resuming from their checkpoint).
  std::vector<std::pair<int64_t, std::string>> pending;
  for (const auto& e : fs::directory_iterator(dir_)) {
    const std::string meta = e.path().string() + "/job.json";
    if (!fs::exists(meta)) continue;
    std::ifstream f(meta);
    const json j = json::parse(f, nullptr, false);
    // A job.json this server did not write is left alone.
    if (!j.is_object() || !j.contains("id") || !j["id"].is_string()) continue;
    auto text = [&](const char* k) {
      return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string();
    };
    auto integer = [&](const char* k) {
      return j.contains(k) && j[k].is_number_integer() ? j[k].get<int64_t>() : int64_t(0);
    };
    auto job = std::make_unique<Job>();
    job->id = text("id");
    job->status = text("status");
    job->created = integer("created_at");
    job->finished = integer("finished_at");
    job->data = text("training_path");
    job->options =
        j.contains("options") && j["options"].is_object() ? j["options"] : json::object();
    if (j.contains("error") && j["error"].is_object()) job->error = j["error"].value("message", "");
    job->step = integer("step");
    job->total_steps = integer("total_steps");
    std::ifstream ev(e.path().string() + "/events.jsonl");
    for (std::string line; std::getline(ev, line);) {
      json event = json::parse(line, nullptr, false);
      if (event.is_object()) job->events.push_back(event);
    }
    if (job->status == "queued" || job->status == "running") {
      job->status = "queued";
      pending.emplace_back(job->created, job->id);
    }
    jobs_[job->id] = std::move(job);
  }
  std::sort(pending.begin(), pending.end());
  for (const auto& p : pending) queue_.push_back(p.second);
  thread_ = std::thread([this] { run_jobs(); });
}

Jobs::~Jobs() {
  shutdown();
}

void Jobs::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
    if (running_) {
      running_->resume();
      running_->cancel();  // a checkpoint; the job queues again at the next start
    }
  }
  changed_.notify_all();
  if (thread_.joinable()) thread_.join();
}

json Jobs::add_file(const std::string& name, const std::string& content) {
  Upload up = begin_upload();
  up.write(content.data(), content.size());
  return finish_upload(up, name);
}

Jobs::Upload::Upload(std::string path)
    : path_(std::move(path)),
      out_(std::make_unique<std::ofstream>(path_, std::ios::binary | std::ios::trunc)) {
  if (!*out_) throw Error(path_ + ": cannot write");
}

Jobs::Upload::~Upload() {
  if (path_.empty()) return;  // moved from, or put in place
  out_.reset();
  std::error_code ec;
  fs::remove(path_, ec);
}

void Jobs::Upload::write(const char* data, size_t n) {
  out_->write(data, std::streamsize(n));
  if (!*out_) throw Error(path_ + ": cannot write (is the disk full?)");
  bytes_ += int64_t(n);
}

void Jobs::Upload::close() {
  out_->close();
  if (!*out_) throw Error(path_ + ": cannot write (is the disk full?)");
}

Jobs::Upload Jobs::begin_upload() const {
  return Upload(dir_ + "/files/." + new_id("upload-") + ".part");
}

json Jobs::finish_upload(Upload& up, const std::string& name) {
  up.close();
  if (up.bytes() == 0) throw HttpError(400, "the uploaded file is empty", "file");
  const std::string id = new_id("file-");
  // Plain text trains as text (windows of the whole file); anything else is read as JSONL.
  const bool text = name.size() > 4 && name.compare(name.size() - 4, 4, ".txt") == 0;
  fs::rename(up.path(), dir_ + "/files/" + id + (text ? ".txt" : ".jsonl"));
  const int64_t bytes = up.bytes();
  up.keep();
  return {{"id", id},         {"object", "file"},      {"bytes", bytes}, {"created_at", unix_now()},
          {"filename", name}, {"purpose", "fine-tune"}};
}

std::string Jobs::uploaded(const json& id_value, const char* field) const {
  const std::string id = id_value.is_string() ? id_value.get<std::string>() : "";
  if (id.empty() || id.find('/') != std::string::npos || id.find("..") != std::string::npos) {
    throw HttpError(400, std::string("'") + field + "' is not a file id", field);
  }
  for (const char* ext : {".jsonl", ".txt"}) {
    const std::string path = dir_ + "/files/" + id + ext;
    if (fs::exists(path)) return path;
  }
  throw HttpError(400, std::string("'") + field + "' " + id + " was not uploaded (POST /v1/files)",
                  field);
}

json Jobs::create(const json& body, const std::string& allow_paths) {
  auto job = std::make_unique<Job>();
  std::string validation;  // an uploaded validation file: the job's data becomes a folder
  const auto file = body.find("training_file");
  const auto path = body.find("training_path");
  const auto valid = body.find("validation_file");
  if (valid != body.end() && !valid->is_null() && file == body.end()) {
    throw HttpError(400, "'validation_file' goes with 'training_file'", "validation_file");
  }
  if (file != body.end() && file->is_string()) {
    job->data = uploaded(*file, "training_file");
    if (valid != body.end() && !valid->is_null()) {
      const std::string v = uploaded(*valid, "validation_file");
      if (job->data.ends_with(".txt") || v.ends_with(".txt")) {
        throw HttpError(400, "'validation_file' needs JSONL files for both", "validation_file");
      }
      validation = v;
    }
  } else if (path != body.end() && path->is_string()) {
    if (allow_paths.empty()) {
      throw HttpError(400,
                      "'training_path' needs a server started with --allow-paths DIR; upload the "
                      "data with POST /v1/files instead",
                      "training_path");
    }
    std::error_code ec;
    const fs::path want = fs::weakly_canonical(path->get<std::string>(), ec);
    const fs::path root = fs::weakly_canonical(allow_paths, ec);
    const std::string w = want.string(), r = root.string();
    if (w.compare(0, r.size(), r) != 0 || (w.size() > r.size() && w[r.size()] != '/') ||
        !fs::exists(want)) {
      throw HttpError(400, "'training_path' must name data inside " + r, "training_path");
    }
    job->data = w;
  } else {
    throw HttpError(400, "give 'training_file' (an uploaded file's id) or 'training_path'",
                    "training_file");
  }
  json options = body.value("options", json::object());
  if (!options.is_object()) throw HttpError(400, "'options' must be an object", "options");
  if (const auto hp = body.find("hyperparameters"); hp != body.end() && hp->is_object()) {
    if (hp->contains("n_epochs") && (*hp)["n_epochs"].is_number_integer()) {
      options["epochs"] = (*hp)["n_epochs"];
    }
    if (hp->contains("batch_size") && (*hp)["batch_size"].is_number_integer()) {
      options["batch"] = (*hp)["batch_size"];
    }
  }
  // Every field checked now, so that a bad value is this request's 400, not a failed job.
  TrainOptions checked = job_train_options(options);
  checked.data = job->data;
  checked.output = job->data + ".adapter.gguf";  // any path: the job's is set when it runs
  try {
    check_train_options(checked);
  } catch (const Error& e) {
    const std::string field = e.option().empty() ? "options" : e.option();
    throw HttpError(400, "'options." + field + "': " + e.what(), field);
  }
  job->options = options;
  job->id = new_id("ftjob-");
  job->created = unix_now();
  fs::create_directories(dir_ + "/" + job->id);
  if (!validation.empty()) {  // the folder layout `trit finetune --data DIR` reads
    const std::string data = dir_ + "/" + job->id + "/data";
    fs::create_directories(data);
    fs::copy_file(job->data, data + "/train.jsonl", fs::copy_options::overwrite_existing);
    fs::copy_file(validation, data + "/valid.jsonl", fs::copy_options::overwrite_existing);
    job->data = data;
  }
  json out;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) throw HttpError(503, "the server is shutting down");
    save(*job);
    out = describe(*job);
    queue_.push_back(job->id);
    jobs_[job->id] = std::move(job);
  }
  changed_.notify_all();
  return out;
}

Jobs::Job& Jobs::find(const std::string& id) const {
  const auto it = jobs_.find(id);
  if (it == jobs_.end()) throw HttpError(404, "no fine-tuning job " + id, "id");
  return *it->second;
}

json Jobs::describe(const Job& j) const {
  json d = {{"id", j.id},
            {"object", "fine_tuning.job"},
            {"status", j.status},
            {"created_at", j.created},
            {"finished_at", j.finished ? json(j.finished) : json()},
            {"training_path", j.data},
            {"options", j.options},
            {"step", j.step},
            {"total_steps", j.total_steps},
            {"loss", j.loss},
            {"val_loss", j.val_loss < 0 ? json() : json(j.val_loss)},
            {"error", j.error.empty() ? json() : json{{"message", j.error}}},
            {"fine_tuned_model", j.status == "succeeded" ? json(j.id + "/adapter.gguf") : json()}};
  return d;
}

void Jobs::save(const Job& j) const {
  write_atomically(dir_ + "/" + j.id + "/job.json", dump(describe(j)));
}

json Jobs::get(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return describe(find(id));
}

json Jobs::list() const {
  std::lock_guard<std::mutex> lock(mutex_);
  json data = json::array();
  for (const auto& [id, j] : jobs_) data.push_back(describe(*j));
  return {{"object", "list"}, {"data", data}, {"has_more", false}};
}

json Jobs::cancel(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  Job& j = find(id);
  if (j.status == "queued") {
    j.status = "cancelled";
    j.finished = unix_now();
    queue_.erase(std::remove(queue_.begin(), queue_.end(), id), queue_.end());
    save(j);
    changed_.notify_all();
  } else if (j.status == "running") {
    j.cancel_requested = true;
    if (running_) {
      running_->resume();
      running_->cancel();
    }
  }
  return describe(j);
}

std::string Jobs::adapter_path(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const Job& j = find(id);
  if (j.status != "succeeded") {
    throw HttpError(404, "job " + id + " has no adapter (it is " + j.status + ")", "id");
  }
  return dir_ + "/" + id + "/adapter.gguf";
}

std::string Jobs::result_path(const std::string& id, const std::string& what) const {
  std::lock_guard<std::mutex> lock(mutex_);
  find(id);
  const std::string path =
      dir_ + "/" + id + (what == "metrics" ? "/adapter.metrics.jsonl" : "/adapter.loss.svg");
  if (!fs::exists(path)) throw HttpError(404, "job " + id + " has no " + what + " yet", "id");
  return path;
}

json Jobs::checkpoints(const std::string& id) const {
  std::string dir;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    find(id);
    dir = dir_ + "/" + id + "/adapter.checkpoints";
  }
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!checkpoint_name(name) || !fs::exists(e.path() / "state.json")) continue;  // complete
    found.emplace_back(std::stoll(name.substr(11)), name);
  }
  std::sort(found.begin(), found.end());
  json data = json::array();
  for (const auto& [step, name] : found) {
    data.push_back({{"object", "fine_tuning.job.checkpoint"},
                    {"id", name},
                    {"fine_tuning_job_id", id},
                    {"step_number", step},
                    {"files", kCheckpointFiles}});
  }
  return {{"object", "list"}, {"data", data}, {"has_more", false}};
}

std::string Jobs::checkpoint_file(const std::string& id, const std::string& checkpoint,
                                  const std::string& file) const {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    find(id);
  }
  const std::string path = dir_ + "/" + id + "/adapter.checkpoints/" + checkpoint + "/" + file;
  if (!checkpoint_name(checkpoint) ||
      std::find(kCheckpointFiles.begin(), kCheckpointFiles.end(), file) == kCheckpointFiles.end() ||
      !fs::exists(path)) {
    throw HttpError(404, "job " + id + " has no checkpoint file " + checkpoint + "/" + file, "id");
  }
  return path;
}

std::vector<json> Jobs::events(const std::string& id, size_t from, int64_t timeout_ms,
                               bool& done) const {
  std::unique_lock<std::mutex> lock(mutex_);
  const Job& j = find(id);
  auto ended = [&] {
    return j.status == "succeeded" || j.status == "failed" || j.status == "cancelled" || stopping_;
  };
  changed_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                    [&] { return j.events.size() > from || ended(); });
  std::vector<json> out(j.events.begin() + int64_t(std::min(from, j.events.size())),
                        j.events.end());
  done = ended();
  return out;
}

void Jobs::set_serving(bool busy) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (busy == paused_ || !running_) {
    paused_ = busy && running_;
    return;
  }
  paused_ = busy;
  busy ? running_->pause() : running_->resume();
}

void Jobs::add_event(Job& job, json event) {
  event["created_at"] = unix_now();
  std::ofstream(dir_ + "/" + job.id + "/events.jsonl", std::ios::app) << dump(event) << "\n";
  job.events.push_back(std::move(event));
}

void Jobs::run_jobs() {
  std::unique_ptr<Model> model;
  while (true) {
    std::string id;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      id = queue_.front();
      queue_.pop_front();
    }
    Job* job = nullptr;
    TrainOptions t;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job = jobs_[id].get();
      t = job_train_options(job->options);
      t.data = job->data;
      t.output = dir_ + "/" + id + "/adapter.gguf";
      if (has_checkpoint(dir_ + "/" + id + "/adapter.checkpoints")) t.resume = "latest";
      if (t.save_every <= 0) t.save_every = 50;  // a job must survive a restart
      job->status = "running";
      save(*job);
    }
    changed_.notify_all();
    std::string status = "succeeded", error;
    try {
      if (!model) model = std::make_unique<Model>(Model::open(model_path_, model_options_));
      Trainer trainer(*model, t);
      trainer.on_progress([&](const TrainProgress& p) {
        std::lock_guard<std::mutex> lock(mutex_);
        json e = {{"object", "fine_tuning.job.event"},
                  {"step", p.step},
                  {"total_steps", p.total_steps},
                  {"message", p.line}};
        switch (p.kind) {
          case TrainProgress::Kind::Step:
            e["type"] = "metrics";
            e["loss"] = p.loss;
            e["lr"] = p.lr;
            e["tokens_per_s"] = p.tokens_per_s;
            job->loss = p.loss;
            break;
          case TrainProgress::Kind::Validation:
            e["type"] = "metrics";
            e["val_loss"] = p.val_loss;
            job->val_loss = p.val_loss;
            break;
          case TrainProgress::Kind::Checkpoint:
            e["type"] = "checkpoint";
            e["checkpoint"] = fs::path(p.checkpoint).filename().string();
            break;
          case TrainProgress::Kind::Message:
            e["type"] = "message";
            break;
        }
        job->step = p.step;
        job->total_steps = p.total_steps;
        add_event(*job, std::move(e));
        changed_.notify_all();
      });
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (stopping_) throw Error("the server stopped");
        running_ = &trainer;
        if (paused_) trainer.pause();
      }
      const TrainResult r = trainer.run();
      std::lock_guard<std::mutex> lock(mutex_);
      running_ = nullptr;
      if (r.stopped) status = job->cancel_requested ? "cancelled" : "queued";
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lock(mutex_);
      running_ = nullptr;
      status = stopping_ ? "queued" : "failed";
      error = e.what();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job->status = status;
      job->error = status == "failed" ? error : "";
      if (status != "queued") job->finished = unix_now();
      add_event(*job, {{"object", "fine_tuning.job.event"},
                       {"type", "status"},
                       {"status", status},
                       {"message", status == "failed"      ? error
                                   : status == "queued"    ? "stopped; it resumes from its "
                                                             "last checkpoint at the next start"
                                   : status == "succeeded" ? "the job succeeded"
                                                           : "the job was cancelled"}});
      save(*job);
    }
    changed_.notify_all();
    if (status == "succeeded" && on_adapter_) on_adapter_(id, t.output);
  }
}

}  // namespace trit::serve
