// Models and adapters for the public API's tests (tests/api/), made once per test binary.
#pragma once

#include <string>

#include "support/files.h"
#include "trit/trit.hpp"

namespace trit::api_test {

inline const std::string kRoot = std::string(TRIT_TEST_DATA) + "/../..";
inline const std::string kShipped = kRoot + "/models/austen-tiny.gguf";
inline const std::string kDemoData = kRoot + "/data/demo";

inline ModelOptions cpu() {
  ModelOptions o;
  o.device = "cpu";
  o.threads = 1;
  return o;
}

// A random model of the tiny preset (byte-level tokenizer).
inline const std::string& tiny_model() {
  static engine::test::TempDir dir;
  static const std::string path = [] {
    CreateOptions o;
    o.preset = "tiny";
    const std::string p = dir.file("tiny.gguf");
    create_model(p, o);
    return p;
  }();
  return path;
}

// An adapter trained for two steps on the demo data.
inline const std::string& tiny_adapter() {
  static engine::test::TempDir dir;
  static const std::string path = [] {
    Model m = Model::open(tiny_model(), cpu());
    TrainOptions t;
    t.data = kDemoData;
    t.output = dir.file("a.gguf");
    t.steps = 2;
    t.batch = 2;
    t.ctx = 32;
    t.rank = 4;
    t.lr = 1e-2;
    t.val_examples = 4;
    Trainer(m, t).run();
    return t.output;
  }();
  return path;
}

inline GenerateOptions greedy(int64_t max_tokens) {
  GenerateOptions g;
  g.max_tokens = max_tokens;
  g.sampling.temperature = 0;
  return g;
}

}  // namespace trit::api_test
