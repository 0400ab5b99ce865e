// classify, and the tensor helpers it shares with bench and the info commands.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "client/commands.h"
#include "client/image.h"
#include "client/output.h"
#include "server/common/status.h"
#include "server/serving/image.h"

namespace convserve::client {
namespace {

struct Prediction {
  int64_t index = -1;
  std::string label;
  double score = 0;
};

struct Result {
  std::string file;
  std::vector<Prediction> top;  // best first
  std::string error;            // set when this file failed
};

// "<score>:<index>[:<label>]"
Prediction ParseClassification(const std::string& element) {
  Prediction p;
  const size_t first = element.find(':');
  if (first == std::string::npos) return p;
  const size_t second = element.find(':', first + 1);
  p.score = std::strtod(element.substr(0, first).c_str(), nullptr);
  p.index = std::strtoll(element.substr(first + 1, second - first - 1).c_str(), nullptr, 10);
  p.label = second == std::string::npos ? std::to_string(p.index) : element.substr(second + 1);
  return p;
}

bool IsImageExtension(const std::filesystem::path& path) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

int64_t Product(const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d < 0 ? 1 : d;
  return n;
}

std::vector<std::string> ReadLabelsFile(const std::string& path) {
  std::vector<std::string> labels;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    labels.push_back(line);
  }
  return labels;
}

// Float32 output `index` of a response (raw or typed contents), little-endian host assumed.
absl::Status OutputFloats(const inference::ModelInferResponse& response, int index,
                          std::vector<float>* values) {
  if (index >= response.outputs_size()) return absl::InternalError("response has no output");
  const auto& output = response.outputs(index);
  if (output.datatype() != "FP32") {
    return absl::InternalError(
        absl::StrCat("output '", output.name(), "' is ", output.datatype(), ", expected FP32"));
  }
  if (index < response.raw_output_contents_size()) {
    const std::string& raw = response.raw_output_contents(index);
    values->resize(raw.size() / sizeof(float));
    std::memcpy(values->data(), raw.data(), values->size() * sizeof(float));
  } else {
    values->assign(output.contents().fp32_contents().begin(),
                   output.contents().fp32_contents().end());
  }
  return absl::OkStatus();
}

void SetClassification(inference::ModelInferRequest::InferRequestedOutputTensor* output,
                       int64_t k) {
  (*output->mutable_parameters())["classification"].set_int64_param(k);
}

// What the client needs to know about the model to build requests.
struct ModelIo {
  std::string input;
  std::string output;
  int max_batch_size = 0;
  inference::ModelConfig config;
};

absl::StatusOr<ModelIo> DescribeModel(Client& client, const std::string& model,
                                      const std::string& version) {
  auto response = client.ModelConfig(model, version);
  if (!response.ok()) return response.status();
  ModelIo io;
  io.config = response->config();
  if (io.config.input_size() == 0 || io.config.output_size() == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("model '", model, "' has no inputs or outputs in its configuration"));
  }
  io.input = io.config.input(0).name();
  if (io.config.has_preprocessing() && !io.config.preprocessing().input().empty()) {
    io.input = io.config.preprocessing().input();
  }
  io.output = io.config.output(0).name();
  io.max_batch_size = io.config.max_batch_size();
  return io;
}

// Sends one batch; fills results[first..first+n).
absl::Status ClassifyBatch(Client& client, const ClassifyOptions& options, const ModelIo& io,
                           const std::vector<std::string>& labels,
                           const std::vector<std::string>& files, size_t first, size_t n,
                           std::vector<Result>* results) {
  inference::ModelInferRequest request;
  request.set_model_name(options.model);
  request.set_model_version(options.version);
  auto* input = request.add_inputs();
  input->set_name(io.input);
  auto* output = request.add_outputs();
  output->set_name(io.output);
  const bool local = options.preprocess == "client";
  if (!local) {
    std::vector<std::string> contents;
    for (size_t i = first; i < first + n; ++i) {
      auto bytes = ReadBinaryFile(files[i]);
      if (!bytes.ok()) return bytes.status();
      contents.push_back(std::move(*bytes));
    }
    input->set_datatype("BYTES");
    input->add_shape(static_cast<int64_t>(n));
    request.add_raw_input_contents(EncodeBytesElements(contents));
    SetClassification(output, options.top_k);
  } else {
    auto spec = ImageInputSpecFromConfig(io.config, io.input);
    if (!spec.ok()) return spec.status();
    const inference::ModelPreprocessing& pre = spec->preprocessing;
    const int channels = spec->channels;
    const size_t per_image = static_cast<size_t>(pre.width()) * pre.height() * channels;
    std::vector<float> tensor(per_image * n);
    for (size_t i = 0; i < n; ++i) {
      auto bytes = ReadBinaryFile(files[first + i]);
      if (!bytes.ok()) return bytes.status();
      auto image = serving::DecodeImage(*bytes, channels, serving::kDefaultMaxImagePixels);
      if (!image.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(files[first + i], ": ", image.status().message()));
      }
      serving::PreprocessImage(*image, pre, spec->hwc, tensor.data() + i * per_image);
    }
    input->set_datatype("FP32");
    if (io.max_batch_size > 0) input->add_shape(static_cast<int64_t>(n));
    const int64_t h = pre.height(), w = pre.width(), c = channels;
    if (spec->hwc) {
      for (int64_t d : {h, w, c}) input->add_shape(d);
    } else {
      for (int64_t d : {c, h, w}) input->add_shape(d);
    }
    request.add_raw_input_contents(reinterpret_cast<const char*>(tensor.data()),
                                   tensor.size() * sizeof(float));
  }
  auto response = client.Infer(request);
  if (!response.ok()) return response.status();
  if (!local) {
    std::vector<std::string> elements;
    RETURN_IF_ERROR(OutputBytesElements(*response, 0, &elements));
    const size_t k = n ? elements.size() / n : 0;
    for (size_t i = 0; i < n; ++i) {
      for (size_t j = 0; j < k; ++j) {
        (*results)[first + i].top.push_back(ParseClassification(elements[i * k + j]));
      }
    }
    return absl::OkStatus();
  }
  std::vector<float> logits;
  RETURN_IF_ERROR(OutputFloats(*response, 0, &logits));
  const size_t classes = n ? logits.size() / n : 0;
  const size_t k = std::min<size_t>(static_cast<size_t>(options.top_k), classes);
  std::vector<size_t> order(classes);
  for (size_t i = 0; i < n; ++i) {
    const float* row = logits.data() + i * classes;
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [&](size_t a, size_t b) { return row[a] > row[b]; });
    for (size_t j = 0; j < k; ++j) {
      Prediction p;
      p.index = static_cast<int64_t>(order[j]);
      p.score = row[order[j]];
      p.label = order[j] < labels.size() ? labels[order[j]] : std::to_string(order[j]);
      (*results)[first + i].top.push_back(p);
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string EncodeBytesElements(const std::vector<std::string>& elements) {
  std::string raw;
  for (const std::string& element : elements) {
    const uint32_t length = static_cast<uint32_t>(element.size());
    char prefix[4] = {static_cast<char>(length & 0xFF), static_cast<char>((length >> 8) & 0xFF),
                      static_cast<char>((length >> 16) & 0xFF),
                      static_cast<char>((length >> 24) & 0xFF)};
    raw.append(prefix, 4);
    raw += element;
  }
  return raw;
}

absl::Status DecodeBytesElements(const std::string& raw, std::vector<std::string>* elements) {
  size_t offset = 0;
  while (offset < raw.size()) {
    if (raw.size() - offset < 4) return absl::InternalError("truncated BYTES element length");
    const auto* p = reinterpret_cast<const unsigned char*>(raw.data() + offset);
    const uint32_t length = p[0] | (p[1] << 8) | (p[2] << 16) | (static_cast<uint32_t>(p[3]) << 24);
    offset += 4;
    if (raw.size() - offset < length) return absl::InternalError("truncated BYTES element");
    elements->push_back(raw.substr(offset, length));
    offset += length;
  }
  return absl::OkStatus();
}

absl::Status OutputBytesElements(const inference::ModelInferResponse& response, int index,
                                 std::vector<std::string>* elements) {
  if (index >= response.outputs_size()) return absl::InternalError("response has no output");
  if (response.outputs(index).datatype() != "BYTES") {
    return absl::InternalError(absl::StrCat("output '", response.outputs(index).name(), "' is ",
                                            response.outputs(index).datatype(),
                                            ", expected BYTES (classification)"));
  }
  if (index < response.raw_output_contents_size()) {
    return DecodeBytesElements(response.raw_output_contents(index), elements);
  }
  const auto& contents = response.outputs(index).contents().bytes_contents();
  elements->assign(contents.begin(), contents.end());
  return absl::OkStatus();
}

absl::Status CollectImageFiles(const std::vector<std::string>& paths,
                               std::vector<std::string>* files) {
  namespace fs = std::filesystem;
  for (const std::string& path : paths) {
    std::error_code error;
    if (fs::is_directory(path, error)) {
      std::vector<std::string> found;
      for (fs::recursive_directory_iterator it(path, error), end; !error && it != end;
           it.increment(error)) {
        if (it->is_regular_file(error) && IsImageExtension(it->path())) {
          found.push_back(it->path().string());
        }
      }
      if (error) {
        return absl::NotFoundError(absl::StrCat("cannot list '", path, "': ", error.message()));
      }
      std::sort(found.begin(), found.end());
      files->insert(files->end(), found.begin(), found.end());
    } else if (fs::is_regular_file(path, error)) {
      files->push_back(path);
    } else {
      return absl::NotFoundError(absl::StrCat("no such file or directory: '", path, "'"));
    }
  }
  return absl::OkStatus();
}

std::vector<std::string> FetchLabels(Client& client, const std::string& model,
                                     const std::string& version) {
  auto metadata = client.ModelMetadata(model, version);
  if (!metadata.ok() || metadata->inputs_size() == 0 || metadata->outputs_size() == 0) return {};
  const auto& in = metadata->inputs(0);
  const auto& out = metadata->outputs(0);
  if (in.datatype() != "FP32" || out.datatype() != "FP32") return {};
  std::vector<int64_t> shape(in.shape().begin(), in.shape().end());
  for (int64_t& d : shape) d = d < 0 ? 1 : d;
  std::vector<int64_t> out_dims(out.shape().begin(), out.shape().end());
  if (!out_dims.empty() && out_dims[0] < 0) out_dims.erase(out_dims.begin());
  const int64_t classes = Product(out_dims);
  if (classes <= 0 || classes > 100000) return {};
  inference::ModelInferRequest request;
  request.set_model_name(model);
  request.set_model_version(version);
  auto* input = request.add_inputs();
  input->set_name(in.name());
  input->set_datatype("FP32");
  for (int64_t d : shape) input->add_shape(d);
  request.add_raw_input_contents(std::string(Product(shape) * sizeof(float), '\0'));
  auto* output = request.add_outputs();
  output->set_name(out.name());
  SetClassification(output, classes);
  auto response = client.Infer(request);
  std::vector<std::string> elements;
  if (!response.ok() || !OutputBytesElements(*response, 0, &elements).ok()) return {};
  std::vector<std::string> labels(static_cast<size_t>(classes));
  bool any = false;
  for (const std::string& element : elements) {
    const size_t first = element.find(':');
    const size_t second = first == std::string::npos ? first : element.find(':', first + 1);
    if (second == std::string::npos) continue;
    const int64_t index = std::strtoll(element.c_str() + first + 1, nullptr, 10);
    if (index >= 0 && index < classes) {
      labels[static_cast<size_t>(index)] = element.substr(second + 1);
      any = true;
    }
  }
  return any ? labels : std::vector<std::string>{};
}

int RunClassify(Client& client, const ClassifyOptions& options, std::ostream& out) {
  if (options.top_k < 1) return UsageError("--top-k must be at least 1");
  if (options.batch < 1) return UsageError("--batch must be at least 1");
  std::vector<std::string> files;
  const absl::Status collected = CollectImageFiles(options.paths, &files);
  if (!collected.ok()) return UsageError(std::string(collected.message()));
  if (files.empty()) return UsageError("no .jpg, .jpeg or .png files found");

  auto io = DescribeModel(client, options.model, options.version);
  if (!io.ok()) return Fail(io.status());
  std::vector<std::string> labels;
  if (options.preprocess == "client") {
    labels = options.labels_file.empty() ? FetchLabels(client, options.model, options.version)
                                         : ReadLabelsFile(options.labels_file);
  }
  size_t batch = static_cast<size_t>(options.batch);
  if (io->max_batch_size > 0) batch = std::min(batch, static_cast<size_t>(io->max_batch_size));
  if (io->max_batch_size == 0 && options.preprocess == "client") batch = 1;

  std::vector<Result> results(files.size());
  for (size_t i = 0; i < files.size(); ++i) results[i].file = files[i];
  bool failed = false;
  for (size_t first = 0; first < files.size(); first += batch) {
    const size_t n = std::min(batch, files.size() - first);
    absl::Status status = ClassifyBatch(client, options, *io, labels, files, first, n, &results);
    if (status.ok()) continue;
    if (status.GetPayload(kUnreachablePayload).has_value()) return Fail(status);
    // Find which files of the batch the server rejects: one at a time.
    for (size_t i = first; i < first + n; ++i) {
      status = n == 1 ? status : ClassifyBatch(client, options, *io, labels, files, i, 1, &results);
      if (status.GetPayload(kUnreachablePayload).has_value()) return Fail(status);
      if (!status.ok()) {
        results[i].error = FormatError(status).substr(7);  // without "error: "
        std::cerr << "error: " << files[i] << ": " << results[i].error << std::endl;
        failed = true;
      }
    }
  }

  if (options.format == "json") {
    out << "[";
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      out << (i ? ",\n  {" : "\n  {") << "\"file\": " << JsonString(r.file);
      if (!r.error.empty()) {
        out << ", \"error\": " << JsonString(r.error) << "}";
        continue;
      }
      const Prediction best = r.top.empty() ? Prediction() : r.top[0];
      out << ", \"index\": " << best.index << ", \"label\": " << JsonString(best.label)
          << ", \"score\": " << FormatDouble(best.score, 6) << ", \"top_k\": [";
      for (size_t j = 0; j < r.top.size(); ++j) {
        out << (j ? ", " : "") << "{\"index\": " << r.top[j].index
            << ", \"label\": " << JsonString(r.top[j].label)
            << ", \"score\": " << FormatDouble(r.top[j].score, 6) << "}";
      }
      out << "]}";
    }
    out << (results.empty() ? "]\n" : "\n]\n");
  } else {
    std::vector<std::string> keys = {"file", "index", "label", "score"};
    if (options.top_k > 1) keys.push_back("top_k");
    Table table(keys);
    for (const Result& r : results) {
      if (!r.error.empty()) {
        std::vector<Cell> row = {Text(r.file), Text("-"), Text("error"), Text(r.error)};
        if (options.top_k > 1) row.push_back(Text(""));
        table.AddRow(row);
        continue;
      }
      const Prediction best = r.top.empty() ? Prediction() : r.top[0];
      std::vector<Cell> row = {Text(r.file), Int(best.index), Text(best.label), Num(best.score, 4)};
      if (options.top_k > 1) {
        std::string top;
        for (size_t j = 0; j < r.top.size(); ++j) {
          absl::StrAppend(&top, j ? ", " : "", r.top[j].label, " ",
                          FormatDouble(r.top[j].score, 3));
        }
        row.push_back(Text(top));
      }
      table.AddRow(row);
    }
    out << table.Render(options.format);
  }
  return failed ? kExitServerError : kExitOk;
}

}  // namespace convserve::client
