// Datasets: JSONL rows and plain text to token sequences with loss masks (see dataset.h).
#include "data/dataset.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/error.h"
#include "io/file_util.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace trit::engine {

namespace {

using nlohmann::json;

enum class RowKind { Text, Completions, Chat };

const char* kind_name(RowKind k) {
  switch (k) {
    case RowKind::Text:
      return "text";
    case RowKind::Completions:
      return "completions";
    case RowKind::Chat:
      return "chat";
  }
  return "";
}

// How a row of this kind shows in messages.
const char* kind_keys(RowKind k) {
  switch (k) {
    case RowKind::Text:
      return "'text'";
    case RowKind::Completions:
      return "'prompt'/'completion'";
    case RowKind::Chat:
      return "'messages'";
  }
  return "";
}

struct Row {
  RowKind kind = RowKind::Text;
  std::string text;  // text, or the prompt
  std::string completion;
  std::vector<ChatMessage> messages;
};

// Fails naming `where` (file:line) when `s` is not valid UTF-8.
void check_utf8(std::string_view s, const std::string& where) {
  for (size_t pos = 0; pos < s.size();) {
    if (static_cast<uint8_t>(s[pos]) < 0x80) {
      ++pos;
      continue;
    }
    uint32_t cp = 0;
    const size_t n = unicode::decode_utf8(s, pos, cp);
    if (n == 0) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02x", static_cast<unsigned>(static_cast<uint8_t>(s[pos])));
      fail(where, ": invalid UTF-8 (byte ", hex, " at column ", pos + 1, ")");
    }
    pos += n;
  }
}

// nlohmann's parse error without its "[json.exception...] parse error at line 1, " prefix.
std::string json_error_text(const std::string& what) {
  std::string s = what;
  if (const size_t b = s.find("] "); s.rfind("[json.exception", 0) == 0 && b != std::string::npos)
    s = s.substr(b + 2);
  if (s.rfind("parse error at line 1, ", 0) == 0) s = s.substr(23);
  if (s.size() > 200) s = s.substr(0, 200) + "...";
  return s;
}

const std::string& get_string(const json& row, const char* key, const std::string& where) {
  const json& v = row.at(key);
  if (!v.is_string()) fail(where, ": '", key, "' must be a string, not ", v.type_name());
  return v.get_ref<const std::string&>();
}

std::vector<ChatMessage> parse_messages(const json& v, const std::string& where) {
  if (!v.is_array()) fail(where, ": 'messages' must be an array, not ", v.type_name());
  if (v.empty()) fail(where, ": 'messages' is empty");
  std::vector<ChatMessage> out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const json& m = v[i];
    const std::string at = cat("messages[", i, "]");
    if (!m.is_object()) fail(where, ": ", at, " must be an object, not ", m.type_name());
    const auto role = m.find("role");
    if (role == m.end()) fail(where, ": ", at, " has no 'role'");
    if (!role->is_string())
      fail(where, ": ", at, ".role must be a string, not ", role->type_name());
    const std::string& r = role->get_ref<const std::string&>();
    if (r != "system" && r != "user" && r != "assistant" && r != "tool") {
      fail(where, ": ", at, ".role is '", r, "'; it must be system, user, assistant or tool");
    }
    const auto content = m.find("content");
    if (content == m.end()) fail(where, ": ", at, " has no 'content'");
    if (!content->is_string()) {
      fail(where, ": ", at, ".content must be a string, not ", content->type_name());
    }
    out.push_back({r, content->get<std::string>()});
  }
  return out;
}

// One JSONL line (not blank) to a row; `where` is "file:line".
Row parse_row(std::string_view line, const std::string& where) {
  check_utf8(line, where);
  json row;
  try {
    row = json::parse(line.begin(), line.end());
  } catch (const json::exception& e) {
    fail(where, ": not valid JSON (", json_error_text(e.what()), ")");
  }
  if (!row.is_object()) fail(where, ": a row must be a JSON object, not ", row.type_name());
  const bool has_text = row.contains("text"), has_prompt = row.contains("prompt"),
             has_completion = row.contains("completion"), has_messages = row.contains("messages");
  const int kinds = int(has_text) + int(has_prompt || has_completion) + int(has_messages);
  if (kinds == 0) {
    std::string keys;
    for (const auto& [k, v] : row.items()) keys += (keys.empty() ? "'" : ", '") + k + "'";
    fail(where, ": the row has none of 'text', 'prompt'/'completion' or 'messages' (",
         keys.empty() ? std::string("it is empty") : "it has " + keys, ")");
  }
  if (kinds > 1) {
    std::vector<std::string> found;
    if (has_text) found.push_back("'text'");
    if (has_prompt) found.push_back("'prompt'");
    if (!has_prompt && has_completion) found.push_back("'completion'");
    if (has_messages) found.push_back("'messages'");
    fail(where, ": the row has both ", found[0], " and ", found[1],
         "; a row is one of 'text', 'prompt'/'completion' or 'messages'");
  }
  Row r;
  if (has_text) {
    r.kind = RowKind::Text;
    r.text = get_string(row, "text", where);
  } else if (has_messages) {
    r.kind = RowKind::Chat;
    r.messages = parse_messages(row.at("messages"), where);
  } else {
    r.kind = RowKind::Completions;
    if (!has_completion) fail(where, ": 'completion' is missing (the row has 'prompt')");
    if (!has_prompt) fail(where, ": 'prompt' is missing (the row has 'completion')");
    r.text = get_string(row, "prompt", where);
    r.completion = get_string(row, "completion", where);
  }
  return r;
}

std::vector<int32_t> encode(const Tokenizer& tok, const std::string& text) {
  return tok.encode(text, tok.add_bos_default(), /*parse_special=*/true);
}

// How many leading tokens a and b share.
size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

void append_eos(std::vector<int32_t>& ids, const Tokenizer& tok, const DatasetOptions& opt) {
  if (opt.add_eos && tok.eos() >= 0 && (ids.empty() || ids.back() != tok.eos())) {
    ids.push_back(tok.eos());
  }
}

// Targets from position `from` on (never position 0).
Example with_targets_from(std::vector<int32_t> ids, size_t from) {
  Example ex;
  ex.loss_mask.assign(ids.size(), 0);
  for (size_t i = std::max<size_t>(from, 1); i < ids.size(); ++i) ex.loss_mask[i] = 1;
  ex.tokens = std::move(ids);
  return ex;
}

// Per-file bookkeeping of truncated and dropped examples, reported once at the end.
class Collector {
 public:
  Collector(Dataset& d, const DatasetOptions& opt) : d_(d), limit_(opt.ctx + 1) {}

  void add(Example ex, int64_t line) {
    ++d_.n_rows;
    const bool had_targets = ex.n_targets() > 0;
    if (int64_t(ex.tokens.size()) > limit_) {
      ex.tokens.resize(size_t(limit_));
      ex.loss_mask.resize(size_t(limit_));
      ++d_.n_truncated;
      if (!first_truncated_ && line > 0) first_truncated_ = line;
    }
    const int64_t targets = ex.n_targets();
    if (targets == 0) {
      ++d_.n_dropped;
      ++(had_targets ? n_cut_ : n_empty_);
      if (!first_dropped_ && line > 0) first_dropped_ = line;
      return;
    }
    d_.n_tokens += int64_t(ex.tokens.size());
    d_.n_targets += targets;
    d_.max_len = std::max(d_.max_len, int64_t(ex.tokens.size()));
    d_.examples.push_back(std::move(ex));
  }

  void finish(const WarnFn& warn) const {
    if (d_.n_truncated > 0 && warn) {
      std::string msg = cat(d_.source, ": ", d_.n_truncated, " of ", d_.n_rows,
                            " examples were longer than ", limit_, " tokens (context ", limit_ - 1,
                            " plus one for the last target) and were truncated");
      if (first_truncated_) msg += cat(" (the first at line ", *first_truncated_, ")");
      warn(msg);
    }
    if (d_.n_dropped > 0 && warn) {
      std::string why;
      if (n_empty_ > 0) why += cat(n_empty_, " with nothing to predict");
      if (n_cut_ > 0) {
        why += cat(why.empty() ? "" : ", ", n_cut_, " whose targets all lay beyond the first ",
                   limit_, " tokens");
      }
      if (first_dropped_) why += cat("; the first at line ", *first_dropped_);
      warn(cat(d_.source, ": ", d_.n_dropped, " of ", d_.n_rows,
               " examples had no target tokens and were dropped (", why, ")"));
    }
    if (d_.examples.empty()) {
      fail(d_.source, ": no examples left: all ", d_.n_rows,
           " had no target tokens (nothing to predict, or everything to predict lay beyond the "
           "first ",
           limit_, " tokens)");
    }
  }

 private:
  Dataset& d_;
  int64_t limit_;
  int64_t n_empty_ = 0, n_cut_ = 0;
  std::optional<int64_t> first_truncated_, first_dropped_;
};

void check_options(const DatasetOptions& opt, const std::string& where) {
  if (opt.ctx < 1) fail(where, ": the context length must be at least 1, not ", opt.ctx);
}

std::string lower_extension(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  for (char& c : ext) c = char(std::tolower(static_cast<unsigned char>(c)));
  return ext;
}

}  // namespace

int64_t Example::n_targets() const {
  int64_t n = 0;
  for (uint8_t m : loss_mask) n += m != 0;
  return n;
}

Example make_text_example(const std::string& text, const Tokenizer& tok,
                          const DatasetOptions& opt) {
  std::vector<int32_t> ids = encode(tok, text);
  append_eos(ids, tok, opt);
  return with_targets_from(std::move(ids), 1);
}

Example make_completion_example(const std::string& prompt, const std::string& completion,
                                const Tokenizer& tok, const ChatTemplate& chat,
                                const DatasetOptions& opt) {
  if (opt.completions_as_chat) {
    return make_chat_example({{"user", prompt}, {"assistant", completion}}, tok, chat, opt);
  }
  std::vector<int32_t> ids = encode(tok, prompt + completion);
  append_eos(ids, tok, opt);
  size_t from = 1;
  if (opt.mask_prompt) from = common_prefix(encode(tok, prompt), ids);
  return with_targets_from(std::move(ids), from);
}

Example make_chat_example(const std::vector<ChatMessage>& messages, const Tokenizer& tok,
                          const ChatTemplate& chat, const DatasetOptions& opt) {
  std::vector<int32_t> ids = encode(tok, chat.render(messages, false));
  if (!opt.mask_prompt) return with_targets_from(std::move(ids), 1);

  Example ex;
  ex.loss_mask.assign(ids.size(), 0);
  std::vector<ChatMessage> prefix;
  prefix.reserve(messages.size());
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role == "assistant") {
      // The turn's tokens: after the conversation so far plus the assistant header, up to the
      // end of the conversation including this turn.
      const size_t begin =
          std::max<size_t>(common_prefix(encode(tok, chat.render(prefix, true)), ids), 1);
      prefix.push_back(messages[i]);
      size_t end = i + 1 == messages.size()
                       ? ids.size()
                       : common_prefix(encode(tok, chat.render(prefix, false)), ids);
      // The turn ends at its end-of-turn token; what the template puts after it (chatml's
      // newline) is not generated by the model.
      for (size_t k = end; k > begin; --k) {
        if (tok.is_end_of_generation(ids[k - 1])) {
          end = k;
          break;
        }
      }
      for (size_t k = begin; k < end; ++k) ex.loss_mask[k] = 1;
    } else {
      prefix.push_back(messages[i]);
    }
  }
  ex.tokens = std::move(ids);
  return ex;
}

Dataset parse_jsonl(std::string_view content, const std::string& name, const Tokenizer& tok,
                    const ChatTemplate& chat, const DatasetOptions& opt, const WarnFn& warn) {
  check_options(opt, name);
  Dataset d;
  d.source = name;
  Collector collect(d, opt);
  std::optional<RowKind> kind;
  int64_t kind_line = 0;
  int64_t line_no = 0;
  size_t pos = 0;
  if (content.starts_with("\xef\xbb\xbf")) pos = 3;  // a UTF-8 byte order mark
  while (pos < content.size()) {
    size_t eol = content.find('\n', pos);
    if (eol == std::string_view::npos) eol = content.size();
    std::string_view line = content.substr(pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r\f\v") == std::string_view::npos) continue;  // blank
    const std::string where = cat(name, ":", line_no);
    Row row = parse_row(line, where);
    if (!kind) {
      kind = row.kind;
      kind_line = line_no;
      if (row.kind == RowKind::Text && opt.mask_prompt) {
        fail(where,
             ": prompt masking needs 'prompt'/'completion' or 'messages' rows; this file "
             "has 'text' rows, which have no prompt");
      }
    } else if (row.kind != *kind) {
      fail(where, ": a ", kind_keys(row.kind), " row in a file of ", kind_keys(*kind),
           " rows (line ", kind_line, "); one file holds one kind of row");
    }
    switch (row.kind) {
      case RowKind::Text:
        collect.add(make_text_example(row.text, tok, opt), line_no);
        break;
      case RowKind::Completions:
        collect.add(make_completion_example(row.text, row.completion, tok, chat, opt), line_no);
        break;
      case RowKind::Chat:
        collect.add(make_chat_example(row.messages, tok, chat, opt), line_no);
        break;
    }
  }
  if (!kind) fail(name, ": no rows (the file is empty)");
  d.kind = kind_name(*kind);
  collect.finish(warn);
  return d;
}

Dataset load_jsonl(const std::string& path, const Tokenizer& tok, const ChatTemplate& chat,
                   const DatasetOptions& opt, const WarnFn& warn) {
  return parse_jsonl(read_whole_file(path), path, tok, chat, opt, warn);
}

Dataset load_text_file(const std::string& path, const Tokenizer& tok, const DatasetOptions& opt,
                       const WarnFn& warn) {
  check_options(opt, path);
  if (opt.mask_prompt) {
    fail(path,
         ": prompt masking needs 'prompt'/'completion' or 'messages' rows (a .jsonl "
         "file); plain text has no prompt");
  }
  std::string text = read_whole_file(path);
  if (text.starts_with("\xef\xbb\xbf")) text.erase(0, 3);
  if (!unicode::is_valid_utf8(text)) {  // find the line for the message
    int64_t line_no = 1;
    for (size_t pos = 0; pos <= text.size(); ++line_no) {
      size_t eol = text.find('\n', pos);
      if (eol == std::string::npos) eol = text.size();
      check_utf8(std::string_view(text).substr(pos, eol - pos), cat(path, ":", line_no));
      pos = eol + 1;
    }
    fail(path, ": invalid UTF-8");
  }
  if (text.find_first_not_of(" \t\r\n\f\v") == std::string::npos) {
    fail(path, ": no text (the file is empty)");
  }
  std::vector<int32_t> ids = encode(tok, text);
  text.clear();
  text.shrink_to_fit();
  append_eos(ids, tok, opt);
  if (ids.size() < 2) fail(path, ": too short to learn from (", ids.size(), " token)");

  Dataset d;
  d.source = path;
  d.kind = "plain text";
  Collector collect(d, opt);
  const size_t n = ids.size(), ctx = size_t(opt.ctx);
  for (size_t s = 0; s + 1 < n; s += ctx) {
    const size_t e = std::min(s + ctx + 1, n);
    collect.add(
        with_targets_from(
            std::vector<int32_t>(ids.begin() + ptrdiff_t(s), ids.begin() + ptrdiff_t(e)), 1),
        0);
  }
  collect.finish(warn);
  return d;
}

Dataset load_data_file(const std::string& path, const Tokenizer& tok, const ChatTemplate& chat,
                       const DatasetOptions& opt, const WarnFn& warn) {
  const std::string ext = lower_extension(path);
  if (ext == ".jsonl") return load_jsonl(path, tok, chat, opt, warn);
  if (ext == ".txt") return load_text_file(path, tok, opt, warn);
  fail(path, ": a data file must be .jsonl (one JSON object a line) or .txt (plain text)");
}

DatasetSplits load_dataset(const std::string& path, const Tokenizer& tok, const ChatTemplate& chat,
                           const DatasetOptions& opt, const WarnFn& warn) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  DatasetSplits out;
  if (fs::is_directory(st)) {
    auto in_dir = [&](const char* name) { return (fs::path(path) / name).string(); };
    const std::string train = in_dir("train.jsonl"), valid = in_dir("valid.jsonl"),
                      test = in_dir("test.jsonl");
    if (!fs::exists(train)) {
      fail(path,
           ": no train.jsonl (a data folder holds train.jsonl, valid.jsonl and "
           "optionally test.jsonl)");
    }
    out.train = load_jsonl(train, tok, chat, opt, warn);
    if (fs::exists(valid)) {
      out.valid = load_jsonl(valid, tok, chat, opt, warn);
      out.has_valid = true;
    } else if (warn) {
      warn(cat(path, ": no valid.jsonl, so there is no validation loss"));
    }
    if (fs::exists(test)) {
      out.test = load_jsonl(test, tok, chat, opt, warn);
      out.has_test = true;
    }
    return out;
  }
  if (!fs::exists(st)) fail(path, ": no such file or folder");
  out.train = load_data_file(path, tok, chat, opt, warn);
  return out;
}

}  // namespace trit::engine
