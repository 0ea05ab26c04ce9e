// The messages of the errors library code throws (trit::Error, one line naming the file, field,
// tensor or op), for tests that check what a message names.
#pragma once

#include <gtest/gtest.h>

#include <exception>
#include <string>

#include "trit/error.h"

namespace trit::engine::test {

// The message of the trit::Error that f throws, or "(no error)" when f returns. Any other
// exception fails the test.
template <class F>
std::string error_or_none(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not a trit::Error: " << e.what();
    return e.what();
  }
  return "(no error)";
}

// The message of the trit::Error that f must throw: returning, or throwing anything else, fails
// the test.
template <class F>
std::string error_of(F&& f) {
  bool threw = true;
  std::string msg = error_or_none([&] {
    f();
    threw = false;
  });
  if (!threw) ADD_FAILURE() << "no trit::Error thrown";
  return msg;
}

// EXPECTs that f throws an E (trit::Error or a kind of it) whose message contains part.
template <class E = Error, class F>
void expect_error(F&& f, const std::string& part) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing: " << part;
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

}  // namespace trit::engine::test

// EXPECTs that text contains part, printing text when it does not.
#define EXPECT_CONTAINS(text, part) \
  EXPECT_NE(std::string(text).find(part), std::string::npos) << "message: " << (text)
