// The convserve CLI's commands. Each takes a connected Client (or the connection options when it
// needs one client per target), its options, and the stream for its result; errors go to stderr
// as one line ("error: NOT_FOUND: ..."). Each returns the process exit status: 0 success,
// 1 a server error or an unhealthy server, 2 a usage error. main.cc only parses flags.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client/rpc.h"

namespace convserve::client {

inline constexpr int kExitOk = 0;
inline constexpr int kExitServerError = 1;
inline constexpr int kExitUsage = 2;

// Prints FormatError(status) to stderr; returns kExitServerError.
int Fail(const absl::Status& status);
// Prints "error: <message>" to stderr; returns kExitUsage.
int UsageError(const std::string& message);

struct HealthOptions {
  std::string model;  // only this model's readiness matters (empty: the server's)
  std::string format = "table";
};
// One client per target: every target must be live, ready and SERVING for exit 0.
int RunHealth(const ConnectionOptions& connection, const HealthOptions& options, std::ostream& out);

int RunModels(Client& client, const std::string& format, std::ostream& out);
int RunMetadata(Client& client, const std::string& model, const std::string& format,
                std::ostream& out);
int RunConfig(Client& client, const std::string& model, const std::string& format,
              std::ostream& out);
int RunStats(Client& client, const std::string& model, const std::string& format,
             std::ostream& out);
int RunLoad(Client& client, const std::string& model, std::ostream& out);
int RunUnload(Client& client, const std::string& model, std::ostream& out);

struct ClassifyOptions {
  std::string model;
  std::string version;
  std::vector<std::string> paths;  // files and directories
  int batch = 8;
  int top_k = 1;
  std::string preprocess = "server";  // server | client
  std::string labels_file;            // client preprocessing: labels instead of asking
  std::string format = "table";
};
int RunClassify(Client& client, const ClassifyOptions& options, std::ostream& out);

struct ReportOptions {
  std::string model;
  std::string version;
  int batch = 1;
  int iterations = 0;
  std::string precision;
  std::string sort;              // "" (plan order) | time | flops | params
  std::string format = "table";  // table | json | csv | chrome-trace | svg
};
int RunReport(Client& client, const ReportOptions& options, std::ostream& out);

struct CompareOptions {
  std::string model;
  std::string version;
  std::string layer;
  int index = -1;
  bool all = false;
  std::string shape;  // "HxW"
  int in_channels = 0;
  int out_channels = 0;
  int kernel = 0;
  int stride = 1;
  int batch = 1;
  int iterations = 0;
  std::string format = "table";
};
int RunCompare(Client& client, const CompareOptions& options, std::ostream& out);

struct BenchOptions {
  std::string model;
  std::string version;
  std::string concurrency = "1";  // N or start:end[:step]
  double duration_s = 5;
  double request_rate = 0;  // requests/s over all streams; 0: closed loop
  int batch = 1;
  std::string images_dir;  // BYTES input from these files; empty: random FP32
  std::string format = "table";
  bool progress = true;    // live line on stderr (only when it is a TTY)
  bool streaming = false;  // ModelStreamInfer: one stream per concurrent slot
  int pipeline = 1;        // requests in flight on each stream (streaming only)
};
int RunBench(Client& client, const BenchOptions& options, std::ostream& out);

// --- helpers shared by the commands (and tested directly) ---

// Files under `paths` (directories walked recursively) with a .jpg/.jpeg/.png extension, each
// list of a directory sorted; explicit files are kept whatever their extension.
absl::Status CollectImageFiles(const std::vector<std::string>& paths,
                               std::vector<std::string>* files);

// "8", "1:8", "1:8:2" -> {8}, {1..8}, {1,3,5,7}.
absl::Status ParseConcurrency(const std::string& spec, std::vector<int>* levels);

// The labels of a classification output, by asking the server to classify a zero tensor with
// k = number of classes (the protocol has no labels RPC). Empty when the model has none.
std::vector<std::string> FetchLabels(Client& client, const std::string& model,
                                     const std::string& version);

// Raw BYTES tensor contents: each element a 4-byte little-endian length and its bytes.
std::string EncodeBytesElements(const std::vector<std::string>& elements);
absl::Status DecodeBytesElements(const std::string& raw, std::vector<std::string>* elements);

// The BYTES elements of output `index` of a response, from raw or typed contents.
absl::Status OutputBytesElements(const inference::ModelInferResponse& response, int index,
                                 std::vector<std::string>* elements);

}  // namespace convserve::client
