// Fine-tuning jobs of `trit serve` (POST /v1/fine_tuning/jobs): trit's own LoRA fine-tunes
// (the `trit finetune` options as JSON) run one at a time beside serving, in a folder of their
// own under the server's jobs folder (job.json, events.jsonl, the adapter and its
// checkpoints). Policy: serving first: a running job pauses after its current step while any
// request is decoding or waiting, and goes on when the server is idle. A job interrupted by a
// stop resumes from its last checkpoint when the server starts again.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "trit/trit.hpp"

namespace trit::serve {

// TrainOptions from a job's "options": every field typed as `trit finetune` takes it. Throws
// HttpError 400 naming a field that is unknown or of the wrong type (values are checked by
// check_train_options).
TrainOptions job_train_options(const nlohmann::json& options);

class Jobs {
 public:
  // dir: where jobs and uploaded files live (made when missing). model_path and options: the
  // model jobs train on (opened once, on the jobs' thread; its file pages are shared with the
  // server's). on_adapter(job id, adapter path) is called when a job succeeds.
  Jobs(std::string dir, std::string model_path, ModelOptions model_options,
       std::function<void(const std::string&, const std::string&)> on_adapter);
  ~Jobs();
  Jobs(const Jobs&) = delete;
  Jobs& operator=(const Jobs&) = delete;

  // An uploaded dataset (JSONL, or plain text when its name ends in .txt): stored, and
  // returned as OpenAI's file object.
  nlohmann::json add_file(const std::string& name, const std::string& content);
  // The same, written piece by piece as it arrives: a temporary file of the jobs folder that
  // finish_upload() puts in place (removed if the upload goes before that).
  class Upload {
   public:
    explicit Upload(std::string path);
    Upload(Upload&& o) noexcept
        : path_(std::exchange(o.path_, {})), out_(std::move(o.out_)), bytes_(o.bytes_) {}
    Upload& operator=(Upload&&) = delete;
    ~Upload();
    void write(const char* data, size_t n);
    const std::string& path() const { return path_; }
    int64_t bytes() const { return bytes_; }
    void close();
    void keep() { path_.clear(); }  // the file was put in place

   private:
    std::string path_;
    std::unique_ptr<std::ofstream> out_;
    int64_t bytes_ = 0;
  };
  Upload begin_upload() const;
  nlohmann::json finish_upload(Upload& upload, const std::string& name);
  // A job from a request body: {"training_file": id} or {"training_path": dir or file under
  // allow_paths}, optional "validation_file" (an uploaded file's id), and "options" with `trit
  // finetune`'s fields (rank, alpha, lr, steps, epochs, batch, ctx, targets, ...) or OpenAI's
  // "hyperparameters" (n_epochs, batch_size). Throws HttpError 400 naming the field.
  nlohmann::json create(const nlohmann::json& body, const std::string& allow_paths);
  nlohmann::json get(const std::string& id) const;  // 404 when unknown
  nlohmann::json list() const;
  nlohmann::json cancel(const std::string& id);
  std::string adapter_path(const std::string& id) const;  // 404 unless the job succeeded
  // The job's metrics (JSONL, growing as it runs) or loss plot (SVG, at its end); 404 before.
  std::string result_path(const std::string& id, const std::string& what) const;
  // The job's complete checkpoints so far (OpenAI's fine_tuning.job.checkpoint objects, with
  // the files each holds), and one such file's path: a delegating device keeps a copy of each
  // to resume from if the provider goes away. 404 for unknown names.
  nlohmann::json checkpoints(const std::string& id) const;
  std::string checkpoint_file(const std::string& id, const std::string& checkpoint,
                              const std::string& file) const;
  // The job's events from index `from` on, waiting up to timeout_ms for one; done: the job
  // has ended and every event was returned.
  std::vector<nlohmann::json> events(const std::string& id, size_t from, int64_t timeout_ms,
                                     bool& done) const;
  // Serving first: busy pauses the running job after its step, idle lets it go on.
  void set_serving(bool busy);
  // Stops the running job with a checkpoint (it resumes at the next start) and the thread.
  void shutdown();

  struct Job;

 private:
  void run_jobs();                  // the jobs' thread
  void save(const Job& job) const;  // job.json, through a temporary file
  nlohmann::json describe(const Job& job) const;
  void add_event(Job& job, nlohmann::json event);
  Job& find(const std::string& id) const;
  // The path of an uploaded file by its id (".jsonl" or ".txt"); 400 naming field otherwise.
  std::string uploaded(const nlohmann::json& id, const char* field) const;

  std::string dir_;
  std::string model_path_;
  ModelOptions model_options_;
  std::function<void(const std::string&, const std::string&)> on_adapter_;
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  std::map<std::string, std::unique_ptr<Job>> jobs_;
  std::deque<std::string> queue_;
  Trainer* running_ = nullptr;  // the running job's trainer, under mutex_
  bool paused_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace trit::serve
