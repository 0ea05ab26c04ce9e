// The C API's devices and tools (include/trit/trit.h) over the C++ API (trit/devices.h,
// trit/tools.h).
#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "api/c_api_guard.h"
#include "trit/trit.h"
#include "trit/trit.hpp"

using trit::capi::bad_argument;
using trit::capi::dup;
using trit::capi::guard;
using trit::capi::require;
using trit::capi::require_array;
using trit::capi::str;
using trit::capi::view;
using trit::capi::warning_callback;

namespace {

// A tool's summary line to the caller, when asked for.
void give_summary(const trit::ToolResult& r, char** summary) {
  if (summary) *summary = dup(r.summary);
}

}  // namespace

extern "C" {

// ---- devices ----

trit_status trit_list_devices(trit_device_info** devices, size_t* n_devices) {
  const char* const fn = __func__;
  if (devices) *devices = nullptr;
  if (n_devices) *n_devices = 0;
  return guard(TRIT_ERROR_DEVICE, {}, [&] {
    require(devices, fn, "devices");
    require(n_devices, fn, "n_devices");
    const std::vector<trit::DeviceInfo> list = trit::list_devices();
    // One block: the array, then every string.
    size_t bytes = list.size() * sizeof(trit_device_info);
    for (const trit::DeviceInfo& d : list) {
      bytes += d.name.size() + d.description.size() + d.kind.size() + d.features.size() + 4;
    }
    auto* out = static_cast<trit_device_info*>(std::malloc(std::max<size_t>(bytes, 1)));
    if (!out) throw std::bad_alloc();
    char* text = reinterpret_cast<char*>(out + list.size());
    const auto put = [&text](const std::string& s) {
      const char* at = text;
      std::memcpy(text, s.c_str(), s.size() + 1);
      text += s.size() + 1;
      return at;
    };
    for (size_t i = 0; i < list.size(); ++i) {
      const trit::DeviceInfo& d = list[i];
      out[i].name = put(d.name);
      out[i].description = put(d.description);
      out[i].kind = put(d.kind);
      out[i].real_gpu = d.real_gpu;
      out[i].is_default = d.is_default;
      out[i].memory_bytes = d.memory_bytes;
      out[i].binding_limit_bytes = d.binding_limit_bytes;
      out[i].features = put(d.features);
    }
    *devices = out;
    *n_devices = list.size();
  });
}

void trit_devices_free(trit_device_info* devices) {
  std::free(devices);
}

trit_status trit_devices_report(char** text) {
  const char* const fn = __func__;
  if (text) *text = nullptr;
  return guard(TRIT_ERROR_DEVICE, {}, [&] {
    require(text, fn, "text");
    *text = dup(trit::devices_report());
  });
}

// ---- tools ----

trit_convert_options trit_convert_options_default(void) {
  return {};
}

trit_status trit_convert(const char* source, const char* output,
                         const trit_convert_options* options, char** summary) {
  const char* const fn = __func__;
  if (summary) *summary = nullptr;
  const std::string_view base = options ? view(options->base) : std::string_view();
  return guard(TRIT_ERROR_INVALID_ARGUMENT, {view(source), view(output), base}, [&] {
    require(source, fn, "source");
    require(output, fn, "output");
    const trit_convert_options o = options ? *options : trit_convert_options_default();
    trit::ConvertOptions c;
    c.type = str(o.type);
    c.embd_type = str(o.embd_type);
    c.base = str(o.base);
    c.on_warning = warning_callback(o.on_warning, o.user);
    give_summary(trit::convert(source, output, c), summary);
  });
}

trit_status trit_quantize(const char* input, const char* output, const char* type, char** summary) {
  const char* const fn = __func__;
  if (summary) *summary = nullptr;
  return guard(TRIT_ERROR_INVALID_ARGUMENT, {view(input), view(output)}, [&] {
    require(input, fn, "input");
    require(output, fn, "output");
    require(type, fn, "type");
    give_summary(trit::quantize(input, output, type), summary);
  });
}

trit_create_options trit_create_options_default(void) {
  const trit::CreateOptions d;
  trit_create_options o{};
  o.type = "tq2_0";
  o.embd_type = "f16";
  o.untied = d.untied;
  o.seed = d.seed;
  return o;
}

trit_status trit_create_model(const char* output, const trit_create_options* options,
                              char** summary) {
  const char* const fn = __func__;
  if (summary) *summary = nullptr;
  const std::string_view config = options ? view(options->config) : std::string_view();
  return guard(TRIT_ERROR_INVALID_ARGUMENT, {view(output), config}, [&] {
    require(output, fn, "output");
    require(options, fn, "options");
    const trit::CreateOptions d;
    trit::CreateOptions c;
    c.preset = str(options->preset);
    c.config = str(options->config);
    c.type = options->type && *options->type ? options->type : d.type;
    c.embd_type = options->embd_type && *options->embd_type ? options->embd_type : d.embd_type;
    c.activation = str(options->activation);
    c.untied = options->untied;
    c.seed = options->seed;
    c.vocab = options->vocab;
    c.layers = options->layers;
    give_summary(trit::create_model(output, c), summary);
  });
}

trit_merge_options trit_merge_options_default(void) {
  trit_merge_options o{};
  o.mode = "float";
  o.type = "f16";
  return o;
}

trit_status trit_merge(const char* model, const char* output, const trit_merge_options* options,
                       char** summary) {
  const char* const fn = __func__;
  if (summary) *summary = nullptr;
  // The files a failure may name: the model, the output, the adapters ("A.gguf:SCALE": a
  // message names A.gguf, which the spec starts with); the first few, without allocating.
  std::array<std::string_view, 10> files{view(model), view(output)};
  if (options && options->adapters) {
    for (size_t i = 0; i < std::min<size_t>(options->n_adapters, files.size() - 2); ++i) {
      files[i + 2] = view(options->adapters[i]);
      files[i + 2] = files[i + 2].substr(0, files[i + 2].rfind(':'));
    }
  }
  return guard(TRIT_ERROR_INVALID_ARGUMENT, files, [&] {
    require(model, fn, "model");
    require(output, fn, "output");
    require(options, fn, "options");
    require_array(options->adapters, options->n_adapters, fn, "options.adapters");
    trit::MergeOptions m;
    for (size_t i = 0; i < options->n_adapters; ++i) {
      if (!options->adapters[i]) {
        bad_argument(fn, ": options.adapters[", std::to_string(i), "] is NULL");
      }
      m.adapters.emplace_back(options->adapters[i]);
    }
    if (options->mode && *options->mode) m.mode = options->mode;
    if (options->type && *options->type) m.type = options->type;
    m.threads = options->threads;
    give_summary(trit::merge(model, output, m), summary);
  });
}

trit_status trit_export_peft(const char* adapter, const char* output_dir, char** summary) {
  const char* const fn = __func__;
  if (summary) *summary = nullptr;
  return guard(TRIT_ERROR_INVALID_ARGUMENT, {view(adapter), view(output_dir)}, [&] {
    require(adapter, fn, "adapter");
    require(output_dir, fn, "output_dir");
    give_summary(trit::export_peft(adapter, output_dir), summary);
  });
}

trit_status trit_describe_file(const char* path, bool all_tensors, bool json, char** text) {
  const char* const fn = __func__;
  if (text) *text = nullptr;
  return guard(TRIT_ERROR_IO, {view(path)}, [&] {
    require(path, fn, "path");
    require(text, fn, "text");
    *text = dup(trit::describe_file(path, all_tensors, json));
  });
}

}  // extern "C"
