// health, models, metadata, config, stats, load, unload.
#include <iostream>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/commands.h"
#include "client/output.h"

namespace convserve::client {
namespace {

const char* HealthName(int status) {
  switch (status) {
    case 1:
      return "SERVING";
    case 2:
      return "NOT_SERVING";
    case 3:
      return "SERVICE_UNKNOWN";
    default:
      return "UNKNOWN";
  }
}

std::string YesNo(bool value) { return value ? "yes" : "no"; }

std::vector<int64_t> Dims(const google::protobuf::RepeatedField<int64_t>& dims) {
  return std::vector<int64_t>(dims.begin(), dims.end());
}

// "key  value" lines, keys padded to the longest.
std::string KeyValues(const std::vector<std::pair<std::string, std::string>>& rows) {
  size_t width = 0;
  for (const auto& [key, value] : rows) width = std::max(width, key.size());
  std::string out;
  for (const auto& [key, value] : rows) {
    out += key + std::string(width - key.size() + 2, ' ') + value + "\n";
  }
  return out;
}

std::string LabelsLine(const std::vector<std::string>& labels) {
  std::vector<std::string> numbered;
  for (size_t i = 0; i < labels.size(); ++i) numbered.push_back(absl::StrCat(i, "=", labels[i]));
  return absl::StrJoin(numbered, ", ");
}

std::string FormatList(const google::protobuf::RepeatedField<float>& values) {
  std::vector<std::string> parts;
  for (float v : values) parts.push_back(FormatDouble(v, 4));
  return absl::StrCat("[", absl::StrJoin(parts, ","), "]");
}

double MeanMs(const inference::StatisticDuration& d) {
  return d.count() ? static_cast<double>(d.ns()) / d.count() / 1e6 : 0.0;
}

}  // namespace

int Fail(const absl::Status& status) {
  std::cerr << FormatError(status) << std::endl;
  return kExitServerError;
}

int UsageError(const std::string& message) {
  std::cerr << "error: " << message << std::endl;
  return kExitUsage;
}

int RunHealth(const ConnectionOptions& connection, const HealthOptions& options,
              std::ostream& out) {
  Table servers({"target", "live", "ready", "health"});
  Table models({"target", "model", "version", "state", "ready", "reason"});
  bool all_ready = true;
  absl::Status unreachable;
  size_t unreachable_count = 0;
  for (const std::string& target : SplitTargets(connection.url)) {
    ConnectionOptions one = connection;
    one.url = target;
    auto client = Client::Create(one);
    if (!client.ok()) return UsageError(std::string(client.status().message()));
    auto live = (*client)->ServerLive();
    if (!live.ok()) {
      all_ready = false;
      servers.AddRow({Text(target), Text("no"), Text("no"), Text("-")});
      if (unreachable.ok()) unreachable = live.status();
      ++unreachable_count;
      continue;
    }
    auto ready = (*client)->ServerReady();
    auto health = (*client)->HealthCheck();
    const bool is_ready = ready.ok() && ready->ready();
    const bool serving = health.ok() && *health == 1;
    servers.AddRow({Text(target), Text(YesNo(live->live())), Text(YesNo(is_ready)),
                    Text(health.ok() ? HealthName(*health)
                                     : absl::StatusCodeToString(health.status().code()))});
    bool model_ready = options.model.empty();
    auto index = (*client)->RepositoryIndex(false);
    if (index.ok()) {
      for (const auto& entry : index->models()) {
        if (!options.model.empty() && entry.name() != options.model) continue;
        auto model_ready_response = (*client)->ModelReady(entry.name(), entry.version());
        const bool ok = model_ready_response.ok() && model_ready_response->ready();
        if (!options.model.empty() && ok) model_ready = true;
        models.AddRow({Text(target), Text(entry.name()), Text(entry.version()), Text(entry.state()),
                       Text(YesNo(ok)), Text(entry.reason())});
      }
    }
    if (!options.model.empty() && !model_ready) {
      // Not in the index (or index unsupported): ask directly.
      auto direct = (*client)->ModelReady(options.model);
      model_ready = direct.ok() && direct->ready();
      if (!index.ok() || models.size() == 0) {
        models.AddRow({Text(target), Text(options.model), Text(""),
                       Text(direct.ok() ? "" : absl::StatusCodeToString(direct.status().code())),
                       Text(YesNo(model_ready)),
                       Text(direct.ok() ? "" : std::string(direct.status().message()))});
      }
    }
    if (!live->live() || !is_ready || !serving || !model_ready) all_ready = false;
  }
  const size_t targets = SplitTargets(connection.url).size();
  if (unreachable_count == targets) {
    // Nobody answered: the one clear line, not a table of "no".
    std::cerr << FormatError(unreachable) << std::endl;
    return kExitServerError;
  }
  if (options.format == "json") {
    out << "{\"ready\": " << (all_ready ? "true" : "false")
        << ", \"servers\": " << servers.RenderJson() << ", \"models\": " << models.RenderJson()
        << "}\n";
  } else if (options.format == "csv") {
    out << servers.RenderCsv() << "\n" << models.RenderCsv();
  } else {
    out << servers.RenderText();
    if (models.size() > 0) out << "\n" << models.RenderText();
    out << "\n" << (all_ready ? "ready" : "NOT ready") << "\n";
  }
  if (!unreachable.ok()) std::cerr << FormatError(unreachable) << std::endl;
  return all_ready ? kExitOk : kExitServerError;
}

int RunModels(Client& client, const std::string& format, std::ostream& out) {
  auto index = client.RepositoryIndex(false);
  if (!index.ok()) return Fail(index.status());
  if (format == "json") {
    out << ProtoToJson(*index);
    return kExitOk;
  }
  Table table({"name", "version", "state", "reason"});
  for (const auto& entry : index->models()) {
    table.AddRow(
        {Text(entry.name()), Text(entry.version()), Text(entry.state()), Text(entry.reason())});
  }
  out << table.Render(format);
  return kExitOk;
}

int RunMetadata(Client& client, const std::string& model, const std::string& format,
                std::ostream& out) {
  auto metadata = client.ModelMetadata(model);
  if (!metadata.ok()) return Fail(metadata.status());
  if (format == "json") {
    out << ProtoToJson(*metadata);
    return kExitOk;
  }
  Table tensors({"io", "name", "datatype", "shape"});
  for (const auto& t : metadata->inputs()) {
    tensors.AddRow(
        {Text("input"), Text(t.name()), Text(t.datatype()), Text(FormatShape(Dims(t.shape())))});
  }
  for (const auto& t : metadata->outputs()) {
    tensors.AddRow(
        {Text("output"), Text(t.name()), Text(t.datatype()), Text(FormatShape(Dims(t.shape())))});
  }
  if (format == "csv") {
    out << tensors.RenderCsv();
    return kExitOk;
  }
  const std::vector<std::string> versions(metadata->versions().begin(), metadata->versions().end());
  out << KeyValues({{"model", metadata->name()},
                    {"versions", absl::StrJoin(versions, ",")},
                    {"platform", metadata->platform()}});
  out << "\n" << tensors.RenderText();
  const std::vector<std::string> labels = FetchLabels(client, model, "");
  if (!labels.empty()) out << "\nlabels (" << labels.size() << "): " << LabelsLine(labels) << "\n";
  return kExitOk;
}

int RunConfig(Client& client, const std::string& model, const std::string& format,
              std::ostream& out) {
  auto response = client.ModelConfig(model);
  if (!response.ok()) return Fail(response.status());
  const inference::ModelConfig& config = response->config();
  if (format == "json") {
    out << ProtoToJson(*response);
    return kExitOk;
  }
  const bool batched = config.max_batch_size() > 0;
  Table tensors({"io", "name", "datatype", "format", "dims", "labels"});
  for (const auto& input : config.input()) {
    std::vector<int64_t> dims = Dims(input.dims());
    if (batched) dims.insert(dims.begin(), -1);
    tensors.AddRow({Text("input"), Text(input.name()),
                    Text(inference::DataType_Name(input.data_type())),
                    Text(inference::ModelInput::Format_Name(input.format())),
                    Text(FormatShape(dims)), Text("")});
  }
  for (const auto& output : config.output()) {
    std::vector<int64_t> dims = Dims(output.dims());
    if (batched) dims.insert(dims.begin(), -1);
    tensors.AddRow({Text("output"), Text(output.name()),
                    Text(inference::DataType_Name(output.data_type())), Text(""),
                    Text(FormatShape(dims)), Text(output.label_filename())});
  }
  if (format == "csv") {
    out << tensors.RenderCsv();
    return kExitOk;
  }
  std::vector<std::pair<std::string, std::string>> rows = {
      {"model", config.name()},
      {"platform", config.platform().empty() ? config.backend() : config.platform()},
      {"max_batch_size", std::to_string(config.max_batch_size())},
      {"precision", config.precision().empty() ? "fp32" : config.precision()}};
  if (config.has_dynamic_batching()) {
    const auto& db = config.dynamic_batching();
    const std::vector<int> preferred(db.preferred_batch_size().begin(),
                                     db.preferred_batch_size().end());
    rows.push_back({"dynamic_batching",
                    absl::StrCat("preferred [", absl::StrJoin(preferred, ","),
                                 "], max_queue_delay_us ", db.max_queue_delay_microseconds(),
                                 ", max_queue_size ", db.default_queue_policy().max_queue_size())});
  } else {
    rows.push_back({"dynamic_batching", "off"});
  }
  for (const auto& group : config.instance_group()) {
    rows.push_back(
        {"instance_group", absl::StrCat(group.count() == 0 ? 1 : group.count(), " x ",
                                        inference::ModelInstanceGroup::Kind_Name(group.kind()),
                                        group.name().empty() ? "" : " (" + group.name() + ")")});
  }
  if (config.has_preprocessing()) {
    const auto& p = config.preprocessing();
    rows.push_back({"preprocessing",
                    absl::StrCat(inference::ModelPreprocessing::ColorFormat_Name(p.color_format()),
                                 " ", p.width(), "x", p.height(), " ",
                                 inference::ModelPreprocessing::ResizeMode_Name(p.resize()),
                                 ", scale ", FormatDouble(p.scale(), 6), ", mean ",
                                 FormatList(p.mean()), ", std ", FormatList(p.std()),
                                 p.input().empty() ? "" : ", input '" + p.input() + "'")});
  }
  out << KeyValues(rows) << "\n" << tensors.RenderText();
  const std::vector<std::string> labels = FetchLabels(client, model, "");
  if (!labels.empty()) out << "\nlabels (" << labels.size() << "): " << LabelsLine(labels) << "\n";
  return kExitOk;
}

int RunStats(Client& client, const std::string& model, const std::string& format,
             std::ostream& out) {
  auto triton = client.ModelStatistics(model);
  if (!triton.ok()) return Fail(triton.status());
  // Percentiles are convserve's own; a Triton server does not have them.
  auto ours = client.GetModelStatistics(model);
  std::map<std::pair<std::string, std::string>, convserve::v1::ModelStatistics> percentiles;
  if (ours.ok()) {
    for (const auto& s : ours->model_stats()) percentiles[{s.name(), s.version()}] = s;
  } else if (ours.status().code() != absl::StatusCode::kUnimplemented) {
    return Fail(ours.status());
  }
  Table table({"model", "version", "inferences", "executions", "success", "fail", "mean_queue_ms",
               "mean_compute_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms", "last_min_requests",
               "last_min_p99_ms", "memory_mb"});
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (const auto& s : triton->model_stats()) {
    const auto& is = s.inference_stats();
    const uint64_t compute_ns =
        is.compute_input().ns() + is.compute_infer().ns() + is.compute_output().ns();
    const uint64_t compute_count = is.compute_infer().count();
    auto it = percentiles.find({s.name(), s.version()});
    const bool have = it != percentiles.end();
    const auto& total =
        have ? it->second.since_start().total() : convserve::v1::LatencyPercentiles();
    const auto& minute = have ? it->second.last_minute() : convserve::v1::WindowStatistics();
    // Host memory the model holds (memory_usage; none from a server that does not report it).
    uint64_t memory_bytes = 0;
    for (const auto& usage : s.memory_usage()) memory_bytes += usage.byte_size();
    table.AddRow(
        {Text(s.name()), Text(s.version()), Uint(s.inference_count()), Uint(s.execution_count()),
         Uint(is.success().count()), Uint(is.fail().count()), Num(MeanMs(is.queue()), 3),
         Num(compute_count ? static_cast<double>(compute_ns) / compute_count / 1e6 : 0.0, 3),
         Num(have ? total.p50_us() / 1e3 : nan, 3), Num(have ? total.p90_us() / 1e3 : nan, 3),
         Num(have ? total.p99_us() / 1e3 : nan, 3), Num(have ? total.max_us() / 1e3 : nan, 3),
         have ? Uint(minute.request_count()) : Num(nan, 0),
         Num(have ? minute.total().p99_us() / 1e3 : nan, 3),
         Num(s.memory_usage_size() > 0 ? memory_bytes / 1e6 : nan, 1)});
  }
  out << table.Render(format);
  return kExitOk;
}

int RunLoad(Client& client, const std::string& model, std::ostream& out) {
  const absl::Status status = client.LoadModel(model);
  if (!status.ok()) return Fail(status);
  out << "loaded '" << model << "'\n";
  return kExitOk;
}

int RunUnload(Client& client, const std::string& model, std::ostream& out) {
  const absl::Status status = client.UnloadModel(model);
  if (!status.ok()) return Fail(status);
  out << "unloaded '" << model << "'\n";
  return kExitOk;
}

}  // namespace convserve::client
