// End-to-end tests of the convserve CLI against the real convserve-server binary: each test
// starts servers on free loopback ports (--grpc-port 0; the chosen port is read from the
// server's startup line) with the bundled models, waits until `convserve health` exits 0, runs
// the convserve binary and checks its output and exit status. Servers are stopped and temp
// files removed by RAII guards.
//
// Paths come from compile definitions (CONVSERVE_SERVER_BIN, CONVSERVE_CLI_BIN,
// CONVSERVE_SOURCE_DIR); CONVSERVE_TEST_MODEL_REPOSITORY / CONVSERVE_TEST_IMAGES override the
// bundled models and images.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr char kModel[] = "fashion-k3";

std::string ReadText(const fs::path& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

fs::path ModelRepository() {
  if (const char* env = std::getenv("CONVSERVE_TEST_MODEL_REPOSITORY")) return env;
  return fs::path(CONVSERVE_SOURCE_DIR) / "models" / "repository";
}

fs::path ImagesDir() {
  if (const char* env = std::getenv("CONVSERVE_TEST_IMAGES")) return env;
  return fs::path(CONVSERVE_SOURCE_DIR) / "tests" / "data" / "images";
}

// A unique temporary directory, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "convserve_cli_XXXXXX").string();
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// Forks and execs `argv` with stdout/stderr to files; returns the pid.
pid_t Spawn(const std::vector<std::string>& argv, const fs::path& out, const fs::path& err) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int out_fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err_fd = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(out_fd, STDOUT_FILENO);
    ::dup2(err_fd, STDERR_FILENO);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}

struct RunResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs the convserve CLI; kills it after `timeout_s`.
RunResult RunCli(const std::vector<std::string>& args, double timeout_s = 60) {
  TempDir dir;
  std::vector<std::string> argv = {CONVSERVE_CLI_BIN};
  argv.insert(argv.end(), args.begin(), args.end());
  const pid_t pid = Spawn(argv, dir.path() / "out", dir.path() / "err");
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  int status = 0;
  RunResult result;
  while (true) {
    const pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) break;
    if (Clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      result.err = "timed out\n";
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.out = ReadText(dir.path() / "out");
  result.err += ReadText(dir.path() / "err");
  return result;
}

std::string Describe(const RunResult& r) {
  return "exit " + std::to_string(r.exit_code) + "\nstdout:\n" + r.out + "\nstderr:\n" + r.err;
}

// A convserve-server process on a free loopback port; SIGTERM (then SIGKILL) on destruction.
class ServerProcess {
 public:
  // `server_args` are added to the server's command line, `client_args` (TLS options) to the
  // readiness check's.
  static std::unique_ptr<ServerProcess> Start(std::string* error,
                                              const std::vector<std::string>& server_args = {},
                                              const std::vector<std::string>& client_args = {}) {
    auto server = std::unique_ptr<ServerProcess>(new ServerProcess());
    std::vector<std::string> argv = {CONVSERVE_SERVER_BIN,
                                     "--model-repository",
                                     ModelRepository().string(),
                                     "--grpc-address",
                                     "127.0.0.1",
                                     "--grpc-port",
                                     "0",
                                     "--metrics-port",
                                     "0",
                                     "--threads",
                                     "1"};
    argv.insert(argv.end(), server_args.begin(), server_args.end());
    server->pid_ = Spawn(argv, server->dir_.path() / "log", server->dir_.path() / "log.err");
    // The startup line names the port the server picked: "gRPC 127.0.0.1:43977,".
    const std::regex port_line(R"(gRPC 127\.0\.0\.1:([0-9]+))");
    const auto deadline = Clock::now() + std::chrono::seconds(120);
    while (server->port_ == 0) {
      std::smatch match;
      const std::string log = ReadText(server->dir_.path() / "log");
      if (std::regex_search(log, match, port_line)) {
        server->port_ = std::stoi(match[1]);
        break;
      }
      int status = 0;
      if (::waitpid(server->pid_, &status, WNOHANG) == server->pid_) {
        server->pid_ = -1;
        *error =
            "server exited during startup:\n" + log + ReadText(server->dir_.path() / "log.err");
        return nullptr;
      }
      if (Clock::now() > deadline) {
        *error = "server did not report its port within 120 s:\n" + log;
        return nullptr;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    // Ready when `convserve health` says so.
    while (true) {
      std::vector<std::string> health_args = client_args;
      health_args.insert(health_args.end(), {"--url", server->url(), "health"});
      const RunResult health = RunCli(health_args, 10);
      if (health.exit_code == 0) return server;
      if (Clock::now() > deadline) {
        *error = "server not ready within 120 s:\n" + Describe(health);
        return nullptr;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  ~ServerProcess() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) != pid_) {
      if (Clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  std::string url() const { return "127.0.0.1:" + std::to_string(port_); }

  // SIGTERM, then waits (up to `timeout`) for the exit; returns the exit status (-1: still
  // running, then killed) and the log in `log`.
  int Terminate(std::chrono::seconds timeout, std::string* log) {
    ::kill(pid_, SIGTERM);
    const auto deadline = Clock::now() + timeout;
    int status = 0;
    int code = -1;
    while (true) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        break;
      }
      if (Clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    pid_ = -1;
    *log = ReadText(dir_.path() / "log") + ReadText(dir_.path() / "log.err");
    return code;
  }

 private:
  ServerProcess() = default;
  TempDir dir_;
  pid_t pid_ = -1;
  int port_ = 0;
};

// A loopback port nobody listens on (bound, then released).
int UnusedPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t length = sizeof(address);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

bool HavePython() { return std::system("python3 -c 'pass' >/dev/null 2>&1") == 0; }

// python3 -c `script` FILE, with `content` in FILE; "" when it exits 0, else its output.
std::string PythonCheck(const std::string& script, const std::string& content) {
  TempDir dir;
  std::ofstream(dir.path() / "data") << content;
  const std::string command = "python3 -c '" + script + "' " + (dir.path() / "data").string() +
                              " > " + (dir.path() / "py").string() + " 2>&1";
  if (std::system(command.c_str()) == 0) return "";
  return "python3 rejected:\n" + ReadText(dir.path() / "py") + "\ninput:\n" + content;
}

constexpr char kJsonCheck[] = "import json,sys; json.load(open(sys.argv[1]))";
constexpr char kXmlCheck[] = "import xml.dom.minidom,sys; xml.dom.minidom.parse(sys.argv[1])";

std::vector<std::vector<std::string>> ParseCsv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> cells;
    std::string cell;
    bool quoted = false;
    for (size_t i = 0; i < line.size(); ++i) {
      const char c = line[i];
      if (quoted) {
        if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
          cell += '"';
          ++i;
        } else if (c == '"') {
          quoted = false;
        } else {
          cell += c;
        }
      } else if (c == '"') {
        quoted = true;
      } else if (c == ',') {
        cells.push_back(cell);
        cell.clear();
      } else {
        cell += c;
      }
    }
    cells.push_back(cell);
    rows.push_back(cells);
  }
  return rows;
}

// Column `key` of a CSV with a header row, as a map from header to index.
std::map<std::string, size_t> Columns(const std::vector<std::string>& header) {
  std::map<std::string, size_t> columns;
  for (size_t i = 0; i < header.size(); ++i) columns[header[i]] = i;
  return columns;
}

int LabelInName(const std::string& file) {
  static const std::regex label(R"(label-([0-9]+))");
  std::smatch match;
  return std::regex_search(file, match, label) ? std::stoi(match[1]) : -1;
}

class ClientE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!fs::exists(ModelRepository() / kModel / "config.pbtxt")) {
      skip_reason_ = "no bundled model at " + (ModelRepository() / kModel).string();
      return;
    }
    std::string error;
    server_ = ServerProcess::Start(&error).release();
    if (server_ == nullptr) start_error_ = error;
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    ASSERT_TRUE(skip_reason_.empty()) << skip_reason_;
    ASSERT_NE(server_, nullptr) << start_error_;
  }

  static RunResult Cli(std::vector<std::string> args, double timeout_s = 60) {
    args.insert(args.begin(), {"--url", server_->url()});
    return RunCli(args, timeout_s);
  }

  static std::vector<std::string> Images(const std::string& extension) {
    std::vector<std::string> files;
    if (!fs::is_directory(ImagesDir())) return files;
    for (const auto& entry : fs::directory_iterator(ImagesDir())) {
      if (entry.path().extension() == extension) files.push_back(entry.path().string());
    }
    std::sort(files.begin(), files.end());
    return files;
  }

  static ServerProcess* server_;
  static std::string skip_reason_;
  static std::string start_error_;
};

ServerProcess* ClientE2eTest::server_ = nullptr;
std::string ClientE2eTest::skip_reason_;
std::string ClientE2eTest::start_error_;

TEST_F(ClientE2eTest, HealthExitsZeroWhenReady) {
  const RunResult r = Cli({"health"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_NE(r.out.find("SERVING"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(kModel), std::string::npos) << r.out;
  const RunResult model = Cli({"health", "--model", kModel});
  EXPECT_EQ(model.exit_code, 0) << Describe(model);
  const RunResult missing = Cli({"health", "--model", "no-such-model"});
  EXPECT_EQ(missing.exit_code, 1) << Describe(missing);
}

TEST_F(ClientE2eTest, ModelsTableListsEveryBundledModelReady) {
  const RunResult r = Cli({"models"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  std::istringstream lines(r.out);
  std::string header;
  std::getline(lines, header);
  EXPECT_TRUE(std::regex_match(header, std::regex(R"(NAME +VERSION +STATE +REASON)"))) << header;
  for (const auto& entry : fs::directory_iterator(ModelRepository())) {
    if (!fs::exists(entry.path() / "config.pbtxt")) continue;
    const std::string name = entry.path().filename().string();
    EXPECT_TRUE(std::regex_search(r.out, std::regex("(^|\n)" + name + " +1 +READY")))
        << name << " not READY in:\n"
        << r.out;
  }
}

TEST_F(ClientE2eTest, MetadataAndConfigShowTensorsBatchingAndLabels) {
  const RunResult metadata = Cli({"metadata", kModel});
  ASSERT_EQ(metadata.exit_code, 0) << Describe(metadata);
  EXPECT_TRUE(std::regex_search(metadata.out, std::regex(R"(input +input +FP32 +\[-1,1,28,28\])")))
      << metadata.out;
  EXPECT_TRUE(std::regex_search(metadata.out, std::regex(R"(output +logits +FP32 +\[-1,10\])")))
      << metadata.out;
  // The labels come from labels.txt, line i = class i.
  std::ifstream labels_file(ModelRepository() / kModel / "labels.txt");
  std::string first_label;
  std::getline(labels_file, first_label);
  EXPECT_NE(metadata.out.find("labels (10): 0=" + first_label), std::string::npos) << metadata.out;

  const RunResult config = Cli({"config", kModel});
  ASSERT_EQ(config.exit_code, 0) << Describe(config);
  for (const char* expected : {"max_batch_size", "dynamic_batching", "instance_group",
                               "preprocessing", "TYPE_FP32", "FORMAT_NCHW", "labels.txt"}) {
    EXPECT_NE(config.out.find(expected), std::string::npos) << expected << " in\n" << config.out;
  }
}

TEST_F(ClientE2eTest, JsonFormatsParse) {
  ASSERT_TRUE(HavePython()) << "python3 (installed by .ci/install-deps) is needed to parse JSON";
  const std::vector<std::vector<std::string>> commands = {
      {"health", "--format", "json"},
      {"models", "--format", "json"},
      {"metadata", kModel, "--format", "json"},
      {"config", kModel, "--format", "json"},
      {"stats", "--format", "json"},
      {"stats", kModel, "--format", "json"},
  };
  for (const auto& command : commands) {
    const RunResult r = Cli(command);
    ASSERT_EQ(r.exit_code, 0) << command[0] << "\n" << Describe(r);
    EXPECT_EQ(PythonCheck(kJsonCheck, r.out), "") << command[0];
  }
  const RunResult config = Cli({"config", kModel, "--format", "json"});
  EXPECT_EQ(PythonCheck("import json,sys; d=json.load(open(sys.argv[1])); "
                        "assert d[\"config\"][\"max_batch_size\"] > 0",
                        config.out),
            "");
}

TEST_F(ClientE2eTest, ClassifyLabelsMatchFileNames) {
  const auto png = Images(".png");
  const auto jpg = Images(".jpg");
  ASSERT_FALSE(png.empty()) << "no test images in " << ImagesDir();
  for (const std::string preprocess : {"server", "client"}) {
    const RunResult r = Cli({"classify", kModel, ImagesDir().string(), "--batch", "5", "--format",
                             "csv", "--preprocess", preprocess});
    ASSERT_EQ(r.exit_code, 0) << preprocess << "\n" << Describe(r);
    const auto rows = ParseCsv(r.out);
    ASSERT_EQ(rows.size(), png.size() + jpg.size() + 1) << r.out;
    auto columns = Columns(rows[0]);
    ASSERT_TRUE(columns.count("file") && columns.count("index") && columns.count("label") &&
                columns.count("score"))
        << r.out;
    int jpg_right = 0, jpg_total = 0;
    for (size_t i = 1; i < rows.size(); ++i) {
      const std::string& file = rows[i][columns["file"]];
      const int expected = LabelInName(file);
      const int got = std::stoi(rows[i][columns["index"]]);
      if (file.size() > 4 && file.substr(file.size() - 4) == ".png") {
        EXPECT_EQ(got, expected) << preprocess << ": " << file;
      } else {
        ++jpg_total;
        jpg_right += got == expected;
      }
    }
    // JPEG is lossy: most, not necessarily all.
    EXPECT_GE(jpg_right * 10, jpg_total * 8) << preprocess << ": " << jpg_right << "/" << jpg_total;
  }
}

TEST_F(ClientE2eTest, ClassifyTopKAndJson) {
  const auto png = Images(".png");
  ASSERT_FALSE(png.empty()) << "no test images in " << ImagesDir();
  const RunResult table = Cli({"classify", kModel, png[0], "--top-k", "3"});
  ASSERT_EQ(table.exit_code, 0) << Describe(table);
  EXPECT_TRUE(std::regex_search(table.out, std::regex(R"(FILE +INDEX +LABEL +SCORE +TOP_K)")))
      << table.out;
  EXPECT_EQ(std::count(table.out.begin(), table.out.end(), ','), 2) << table.out;
  ASSERT_TRUE(HavePython()) << "python3 (installed by .ci/install-deps) is needed";
  const RunResult json =
      Cli({"classify", kModel, png[0], png[1], "--top-k", "3", "--format", "json", "--batch", "1"});
  ASSERT_EQ(json.exit_code, 0) << Describe(json);
  EXPECT_EQ(PythonCheck("import json,sys; d=json.load(open(sys.argv[1])); "
                        "assert len(d)==2 and all(len(x[\"top_k\"])==3 for x in d)",
                        json.out),
            "");
}

TEST_F(ClientE2eTest, UnknownModelIsNotFound) {
  for (const auto& command : std::vector<std::vector<std::string>>{{"metadata", "no-such-model"},
                                                                   {"config", "no-such-model"},
                                                                   {"stats", "no-such-model"}}) {
    const RunResult r = Cli(command);
    EXPECT_EQ(r.exit_code, 1) << Describe(r);
    EXPECT_EQ(r.err.rfind("error: NOT_FOUND: ", 0), 0u) << Describe(r);
    EXPECT_NE(r.err.find("no-such-model"), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  const auto png = Images(".png");
  if (!png.empty()) {
    const RunResult r = Cli({"classify", "no-such-model", png[0]});
    EXPECT_EQ(r.exit_code, 1) << Describe(r);
    EXPECT_EQ(r.err.rfind("error: NOT_FOUND: ", 0), 0u) << Describe(r);
  }
}

// Usage errors are found before any call: no server needed.
TEST(ClientE2eNoServer, UsageErrorsExitTwo) {
  EXPECT_EQ(RunCli({"metadata"}).exit_code, 2);
  EXPECT_EQ(RunCli({}).exit_code, 2);
  EXPECT_EQ(RunCli({"report", kModel, "--format", "pdf"}).exit_code, 2);
  EXPECT_EQ(RunCli({"bench", kModel, "--concurrency", "8:1"}).exit_code, 2);
  const RunResult missing = RunCli({"classify", kModel, "/no/such/file.png"});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_EQ(missing.err, "error: no such file or directory: '/no/such/file.png'\n");
}

TEST(ClientE2eNoServer, EveryCommandHasHelpWithAnExample) {
  for (const char* command : {"health", "models", "metadata", "config", "stats", "load", "unload",
                              "classify", "report", "compare", "bench"}) {
    const RunResult r = RunCli({command, "--help"});
    EXPECT_EQ(r.exit_code, 0) << command;
    EXPECT_NE(r.out.find("Example"), std::string::npos) << command << "\n" << r.out;
    EXPECT_NE(r.out.find(std::string("convserve ") + command), std::string::npos) << r.out;
  }
}

TEST_F(ClientE2eTest, BenchReportsThroughputWithoutErrors) {
  const RunResult r =
      Cli({"bench", kModel, "--duration", "2", "--concurrency", "2", "--format", "csv"}, 60);
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  const auto rows = ParseCsv(r.out);
  ASSERT_EQ(rows.size(), 2u) << r.out;
  auto columns = Columns(rows[0]);
  for (const char* key : {"infer_per_s", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "errors",
                          "server_queue_ms", "server_compute_ms"}) {
    ASSERT_TRUE(columns.count(key)) << key << " missing in\n" << r.out;
  }
  EXPECT_GT(std::stod(rows[1][columns["infer_per_s"]]), 0.0) << r.out;
  EXPECT_EQ(rows[1][columns["errors"]], "0") << r.out;
  EXPECT_GT(std::stod(rows[1][columns["server_compute_ms"]]), 0.0) << r.out;
  EXPECT_LE(std::stod(rows[1][columns["p50_ms"]]), std::stod(rows[1][columns["p99_ms"]]));

  ASSERT_TRUE(fs::is_directory(ImagesDir())) << ImagesDir();
  ASSERT_TRUE(HavePython()) << "python3 (installed by .ci/install-deps) is needed";
  {
    const RunResult images =
        Cli({"bench", kModel, "--duration", "1", "--images", ImagesDir().string(), "--batch", "4",
             "--request-rate", "50", "--format", "json"});
    ASSERT_EQ(images.exit_code, 0) << Describe(images);
    EXPECT_EQ(PythonCheck("import json,sys; d=json.load(open(sys.argv[1])); "
                          "assert d[0][\"requests\"] > 0 and not d[0][\"errors\"] "
                          "and d[0][\"requests\"] <= 60",
                          images.out),
              "");
  }
  {
    // On ModelStreamInfer streams: every request answered, none failed, the stream closed OK
    // (a failed close counts as an error).
    const RunResult streaming = Cli({"bench", kModel, "--duration", "1", "--concurrency", "3",
                                     "--streaming", "--format", "json"},
                                    60);
    ASSERT_EQ(streaming.exit_code, 0) << Describe(streaming);
    EXPECT_EQ(PythonCheck("import json,sys; d=json.load(open(sys.argv[1])); "
                          "assert d[0][\"streaming\"] is True and d[0][\"requests\"] > 0 "
                          "and not d[0][\"errors\"] and d[0][\"server\"][\"compute_ms\"] > 0",
                          streaming.out),
              "");
    // Four requests in flight on each of two streams, answers matched by the ids the client
    // gave: every request answered once, none failed.
    const RunResult pipelined = Cli({"bench", kModel, "--duration", "1", "--concurrency", "2",
                                     "--streaming", "--pipeline", "4", "--format", "json"},
                                    60);
    ASSERT_EQ(pipelined.exit_code, 0) << Describe(pipelined);
    EXPECT_EQ(PythonCheck("import json,sys; d=json.load(open(sys.argv[1])); "
                          "assert d[0][\"pipeline\"] == 4 and d[0][\"requests\"] > 8 "
                          "and not d[0][\"errors\"] and d[0][\"server\"][\"compute_ms\"] > 0",
                          pipelined.out),
              "");
    // Pipelining is a stream's: without --streaming it is a usage error.
    const RunResult unary = Cli({"bench", kModel, "--duration", "1", "--pipeline", "4"}, 60);
    EXPECT_EQ(unary.exit_code, 2) << Describe(unary);
    EXPECT_NE(unary.err.find("--pipeline"), std::string::npos) << Describe(unary);
  }
}

// GetLayerReport / CompareKernels on the bundled model: table columns, JSON and Chrome trace that
// parse, SVG that parses as XML, --sort time, and a free-standing comparison; plus the refusal of
// too many iterations.
TEST_F(ClientE2eTest, ReportAndCompare) {
  const RunResult report = Cli({"report", kModel, "--iterations", "5"}, 300);
  {
    ASSERT_EQ(report.exit_code, 0) << Describe(report);
    EXPECT_TRUE(std::regex_search(report.out, std::regex(R"(NAME +KIND +KERNEL +PARAMS +MACS)")))
        << report.out;
    for (const char* format : {"chrome-trace", "json"}) {
      const RunResult r = Cli({"report", kModel, "--iterations", "5", "--format", format}, 300);
      ASSERT_EQ(r.exit_code, 0) << Describe(r);
      { EXPECT_EQ(PythonCheck(kJsonCheck, r.out), "") << format; }
    }
    const RunResult svg = Cli({"report", kModel, "--iterations", "5", "--format", "svg"}, 300);
    ASSERT_EQ(svg.exit_code, 0) << Describe(svg);
    { EXPECT_EQ(PythonCheck(kXmlCheck, svg.out), ""); }
    const RunResult sorted =
        Cli({"report", kModel, "--iterations", "5", "--sort", "time", "--format", "csv"}, 300);
    ASSERT_EQ(sorted.exit_code, 0) << Describe(sorted);
    const auto rows = ParseCsv(sorted.out);
    auto columns = Columns(rows.at(0));
    for (size_t i = 2; i < rows.size(); ++i) {
      EXPECT_GE(std::stod(rows[i - 1][columns["median_ms"]]),
                std::stod(rows[i][columns["median_ms"]]));
    }
  }

  const RunResult compare = Cli({"compare", "--shape", "28x28", "--in", "8", "--out", "8",
                                 "--kernel", "5", "--iterations", "5"},
                                300);
  {
    ASSERT_EQ(compare.exit_code, 0) << Describe(compare);
    EXPECT_TRUE(std::regex_search(compare.out, std::regex(R"(DESIGN +DESCRIPTION +PARAMS +MACS)")))
        << compare.out;
    EXPECT_NE(compare.out.find("as_is"), std::string::npos) << compare.out;
  }
  const RunResult too_many = Cli({"report", kModel, "--iterations", "100000"}, 60);
  EXPECT_EQ(too_many.exit_code, 1) << Describe(too_many);
  EXPECT_NE(too_many.err.find("INVALID_ARGUMENT"), std::string::npos) << too_many.err;
  EXPECT_NE(too_many.err.find("iterations"), std::string::npos) << too_many.err;
}

TEST(ClientE2eNoServer, ServerDownGivesOneClearLine) {
  const std::string url = "127.0.0.1:" + std::to_string(UnusedPort());
  for (const auto& command : std::vector<std::vector<std::string>>{
           {"models"}, {"health"}, {"metadata", kModel}, {"stats"}, {"report", kModel}}) {
    std::vector<std::string> args = {"--url", url};
    args.insert(args.end(), command.begin(), command.end());
    const RunResult r = RunCli(args, 30);
    EXPECT_EQ(r.exit_code, 1) << command[0] << "\n" << Describe(r);
    EXPECT_EQ(r.err, "error: cannot reach convserve at " + url + " (UNAVAILABLE)\n") << command[0];
  }
}

TEST(ClientE2eRoundRobin, ClassifyCallsReachEveryServer) {
  if (!fs::exists(ModelRepository() / kModel / "config.pbtxt")) {
    FAIL() << "no bundled model at " << ModelRepository();
  }
  std::vector<std::string> png;
  if (fs::is_directory(ImagesDir())) {
    for (const auto& entry : fs::directory_iterator(ImagesDir())) {
      if (entry.path().extension() == ".png") png.push_back(entry.path().string());
    }
  }
  ASSERT_GE(png.size(), 3u) << "need 3 PNG test images in " << ImagesDir();
  std::sort(png.begin(), png.end());
  std::vector<std::unique_ptr<ServerProcess>> servers;
  std::string urls;
  for (int i = 0; i < 3; ++i) {
    std::string error;
    servers.push_back(ServerProcess::Start(&error));
    ASSERT_NE(servers.back(), nullptr) << error;
    if (i > 0) urls += ",";
    urls += servers.back()->url();
  }
  // N classify calls, each one request per image: the calls rotate over the three targets.
  constexpr int kCalls = 3;
  for (int call = 0; call < kCalls; ++call) {
    const RunResult r = RunCli({"--url", urls, "classify", kModel, png[0], png[1], png[2],
                                "--batch", "1", "--format", "csv"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_EQ(ParseCsv(r.out).size(), 4u) << r.out;
  }
  uint64_t total = 0;
  for (const auto& server : servers) {
    const RunResult stats = RunCli({"--url", server->url(), "stats", kModel, "--format", "csv"});
    ASSERT_EQ(stats.exit_code, 0) << Describe(stats);
    const auto rows = ParseCsv(stats.out);
    ASSERT_EQ(rows.size(), 2u) << stats.out;
    auto columns = Columns(rows[0]);
    const uint64_t success = std::stoull(rows[1][columns.at("success")]);
    EXPECT_GT(success, 0u) << server->url() << " got no requests";
    total += success;
  }
  EXPECT_EQ(total, static_cast<uint64_t>(kCalls * 3));
}

// Explicit model control with CONVSERVE_LOAD_MODEL (comma-separated, from the environment as in
// a container): only those models are served at start; `convserve load` adds one.
TEST(ClientE2eExplicit, LoadModelFromTheEnvironmentThenLoadOnRequest) {
  ::setenv("CONVSERVE_MODEL_CONTROL_MODE", "explicit", 1);
  ::setenv("CONVSERVE_LOAD_MODEL", "fashion-k3,fashion-sep", 1);
  std::string error;
  auto server = ServerProcess::Start(&error);
  ::unsetenv("CONVSERVE_MODEL_CONTROL_MODE");
  ::unsetenv("CONVSERVE_LOAD_MODEL");
  ASSERT_NE(server, nullptr) << error;
  const auto states = [&] {
    const RunResult r = RunCli({"--url", server->url(), "models", "--format", "csv"});
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    std::map<std::string, std::string> by_name;
    const auto rows = ParseCsv(r.out);
    if (rows.empty()) return by_name;
    const auto columns = Columns(rows[0]);
    for (size_t i = 1; i < rows.size(); ++i) {
      by_name[rows[i].at(columns.at("name"))] = rows[i].at(columns.at("state"));
    }
    return by_name;
  };
  std::map<std::string, std::string> before = states();
  ASSERT_EQ(before.size(), 5u);
  for (const auto& [name, state] : before) {
    EXPECT_EQ(state, name == "fashion-k3" || name == "fashion-sep" ? "READY" : "UNAVAILABLE")
        << name;
  }
  const RunResult load = RunCli({"--url", server->url(), "load", "fashion-mlp"});
  ASSERT_EQ(load.exit_code, 0) << Describe(load);
  EXPECT_EQ(states().at("fashion-mlp"), "READY");
}

// SIGTERM to the real server process while `convserve bench` runs 4 streams at it: the server
// finishes what it accepted and exits 0; the client sees answers only, OK or UNAVAILABLE (no
// CANCELLED, no deadline).
TEST(ClientE2eShutdown, SigtermDuringARequestLoopLosesNothing) {
  std::string error;
  auto server = ServerProcess::Start(&error);
  ASSERT_NE(server, nullptr) << error;
  TempDir dir;
  const pid_t bench =
      Spawn({CONVSERVE_CLI_BIN, "--url", server->url(), "--timeout", "30", "bench", kModel,
             "--concurrency", "4", "--duration", "6", "--no-progress", "--format", "csv"},
            dir.path() / "out", dir.path() / "err");
  // Terminate once the bench has had answers (the server's statistics count them).
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (true) {
    const RunResult stats = RunCli({"--url", server->url(), "stats", kModel, "--format", "csv"});
    const auto rows = ParseCsv(stats.out);
    if (stats.exit_code == 0 && rows.size() == 2 &&
        std::stoull(rows[1][Columns(rows[0]).at("success")]) >= 50) {
      break;
    }
    ASSERT_LT(Clock::now(), deadline) << "the bench got no answers: " << Describe(stats);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::string log;
  EXPECT_EQ(server->Terminate(std::chrono::seconds(60), &log), 0) << log;
  EXPECT_NE(log.find("exit (all requests finished)"), std::string::npos) << log;
  int status = 0;
  ::waitpid(bench, &status, 0);
  const std::string out = ReadText(dir.path() / "out");
  ASSERT_TRUE(WIFEXITED(status)) << out << ReadText(dir.path() / "err");
  const auto rows = ParseCsv(out);
  ASSERT_EQ(rows.size(), 2u) << out << ReadText(dir.path() / "err");
  const auto columns = Columns(rows[0]);
  EXPECT_GT(std::stoull(rows[1][columns.at("requests")]), 0u) << out;
  // "UNAVAILABLE=n" (refused after the signal, or no server any more) is the only error.
  const std::string errors = rows[1][columns.at("errors")];
  EXPECT_TRUE(errors == "0" || std::regex_match(errors, std::regex("UNAVAILABLE=[0-9]+")))
      << "errors: " << errors;
}

// The CLI against a server on mutual TLS (certificates made by tests/tls/make_test_certs.sh):
// with the CA and a client certificate it classifies; without a certificate, or in plaintext,
// it cannot connect and says so. The server's TLS flags come from the environment here
// (CONVSERVE_TLS_*), as in a container.
TEST(ClientE2eTls, MutualTlsClassifiesWithACertificateAndRefusesWithout) {
  TempDir dir;
  const std::string certs = (dir.path() / "certs").string();
  const std::string make = std::string("bash '") + CONVSERVE_SOURCE_DIR +
                           "/tests/tls/make_test_certs.sh' '" + certs + "' > '" +
                           (dir.path() / "certs.log").string() + "' 2>&1";
  ASSERT_EQ(std::system(make.c_str()), 0) << ReadText(dir.path() / "certs.log");
  const std::vector<std::string> client = {
      "--ca", certs + "/ca.crt", "--cert", certs + "/client.crt", "--key", certs + "/client.key"};
  ::setenv("CONVSERVE_TLS_CERT", (certs + "/server.crt").c_str(), 1);
  ::setenv("CONVSERVE_TLS_KEY", (certs + "/server.key").c_str(), 1);
  ::setenv("CONVSERVE_TLS_CLIENT_CA", (certs + "/ca.crt").c_str(), 1);
  std::string error;
  auto server = ServerProcess::Start(&error, {}, client);
  ::unsetenv("CONVSERVE_TLS_CERT");
  ::unsetenv("CONVSERVE_TLS_KEY");
  ::unsetenv("CONVSERVE_TLS_CLIENT_CA");
  ASSERT_NE(server, nullptr) << error;

  std::vector<std::string> png;
  for (const auto& entry : fs::directory_iterator(ImagesDir())) {
    if (entry.path().extension() == ".png") png.push_back(entry.path().string());
  }
  ASSERT_FALSE(png.empty()) << "no PNG test images in " << ImagesDir();
  std::vector<std::string> args = client;
  args.insert(args.end(), {"--url", server->url(), "classify", kModel, png[0], "--format", "csv"});
  const RunResult r = RunCli(args);
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  const auto rows = ParseCsv(r.out);
  ASSERT_EQ(rows.size(), 2u) << r.out;
  EXPECT_EQ(std::stoi(rows[1][Columns(rows[0]).at("index")]), LabelInName(png[0])) << r.out;

  const std::string unreachable = "error: cannot reach convserve at " + server->url();
  for (const auto& refused :
       std::vector<std::vector<std::string>>{{"--ca", certs + "/ca.crt"},  // no cert
                                             {"--ca", certs + "/ca.crt", "--cert",
                                              certs + "/rogue.crt", "--key", certs + "/rogue.key"},
                                             {}}) {  // plaintext
    std::vector<std::string> health = refused;
    health.insert(health.end(), {"--url", server->url(), "--timeout", "10", "health"});
    const RunResult h = RunCli(health, 30);
    EXPECT_EQ(h.exit_code, 1) << Describe(h);
    EXPECT_EQ(h.err.rfind(unreachable, 0), 0u) << Describe(h);
    // With TLS options the message points at them; in plaintext it does not.
    EXPECT_EQ(h.err.find("with TLS") != std::string::npos, !refused.empty()) << Describe(h);
  }
}

}  // namespace
