// Benchmark runner for convserve's engine, driven over stdin by bench/run.py so that it can be
// interleaved with peer runtimes (ONNX Runtime, PyTorch) in the same rounds.
//
// Protocol (one command per line, one JSON answer per line):
//   load NAME PATH DIMS                 -> {"ok":true}   (DIMS: per-image input dims, unused)
//   run NAME BATCH THREADS ITERATIONS   -> {"ok":true,"ms":[...]}   (per-iteration wall time)
//   profile NAME BATCH THREADS ITERS   -> {"ok":true,"steps":[{"name","kind","kernel","ms"}...]}
//   check NAME BATCH INPUT.bin OUTPUT.bin -> {"ok":true,"max_abs_diff":x,"max_abs_ref":y}
//   report NAME BATCH THREADS ITERS    ->
//   {"ok":true,"peak_gflops":p,"steps":[{"name","kernel","kh","kw",
//                                          "groups","flops","ms","gflops","peak_percent"}...]}
//   quit
// Inputs are filled with seeded uniform random data (never-written buffers distort timings).
#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "server/engine/engine.h"
#include "server/engine/profiler.h"
#include "server/onnx/importer.h"

using convserve::engine::DataType;
using convserve::engine::Model;
using convserve::engine::TensorView;

namespace {

std::string JsonError(const std::string& message) {
  std::string escaped;
  for (char c : message) {
    if (c == '"' || c == '\\') escaped += '\\';
    escaped += (c == '\n' ? ' ' : c);
  }
  return "{\"ok\":false,\"error\":\"" + escaped + "\"}";
}

}  // namespace

int main() {
  std::map<std::string, std::unique_ptr<Model>> models;
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string command;
    in >> command;
    if (command == "quit") break;
    if (command == "load") {
      std::string name, path;
      in >> name >> path;
      auto graph = convserve::onnx_import::ImportOnnxFile(path);
      if (!graph.ok()) {
        std::cout << JsonError(graph.status().ToString()) << std::endl;
        continue;
      }
      convserve::engine::ModelOptions options;
      options.model_name = name;
      auto model = Model::Create(*std::move(graph), options);
      if (!model.ok()) {
        std::cout << JsonError(model.status().ToString()) << std::endl;
        continue;
      }
      models[name] = *std::move(model);
      std::cout << "{\"ok\":true}" << std::endl;
    } else if (command == "run" || command == "profile" || command == "report" ||
               command == "check") {
      std::string name;
      int64_t batch = 1;
      int threads = 1, iterations = 1;
      std::string input_file, output_file;
      in >> name >> batch;
      if (command == "check") {
        in >> input_file >> output_file;
      } else {
        in >> threads >> iterations;
      }
      auto it = models.find(name);
      if (it == models.end()) {
        std::cout << JsonError("unknown model " + name) << std::endl;
        continue;
      }
      auto plan = it->second->GetPlan(batch, threads);
      if (!plan.ok()) {
        std::cout << JsonError(plan.status().ToString()) << std::endl;
        continue;
      }
      auto workspace = (*plan)->CreateWorkspace();
      std::mt19937 rng(42);
      std::uniform_real_distribution<float> dist(-1.f, 1.f);
      std::vector<std::vector<float>> buffers;
      std::vector<TensorView> inputs, outputs;
      for (const auto& info : (*plan)->input_infos()) {
        buffers.emplace_back(convserve::engine::NumElements(info.dims));
        for (float& v : buffers.back()) v = dist(rng);
        inputs.push_back({DataType::kFloat32, info.dims, buffers.back().data()});
      }
      for (const auto& info : (*plan)->output_infos()) {
        buffers.emplace_back(convserve::engine::NumElements(info.dims));
        outputs.push_back({DataType::kFloat32, info.dims, buffers.back().data()});
      }
      convserve::engine::RunOptions options;
      options.num_threads = threads;
      if (command == "check") {
        std::ifstream fin(input_file, std::ios::binary);
        fin.read(reinterpret_cast<char*>(buffers[0].data()), buffers[0].size() * sizeof(float));
        absl::Status status = (*plan)->Run(*workspace, inputs, outputs, options);
        if (!status.ok()) {
          std::cout << JsonError(status.ToString()) << std::endl;
          continue;
        }
        std::vector<float> expected(buffers.back().size());
        std::ifstream fout(output_file, std::ios::binary);
        fout.read(reinterpret_cast<char*>(expected.data()), expected.size() * sizeof(float));
        double max_diff = 0, max_ref = 0;
        for (size_t k = 0; k < expected.size(); ++k) {
          max_diff = std::max<double>(max_diff, std::abs(expected[k] - buffers.back()[k]));
          max_ref = std::max<double>(max_ref, std::abs(expected[k]));
        }
        std::cout << "{\"ok\":true,\"max_abs_diff\":" << max_diff << ",\"max_abs_ref\":" << max_ref
                  << "}" << std::endl;
        continue;
      }
      if (command == "report") {
        convserve::engine::ProfileOptions profile_options;
        profile_options.iterations = iterations;
        profile_options.num_threads = threads;
        auto profile = convserve::engine::ProfilePlan(**plan, inputs, profile_options);
        if (!profile.ok()) {
          std::cout << JsonError(profile.status().ToString()) << std::endl;
          continue;
        }
        std::ostringstream out;
        out << "{\"ok\":true,\"peak_gflops\":" << profile->peak_gflops << ",\"steps\":[";
        for (size_t s = 0; s < profile->steps.size(); ++s) {
          const auto& step = profile->steps[s];
          out << (s ? "," : "") << "{\"name\":\"" << step.info.name << "\",\"kind\":\""
              << step.info.kind << "\",\"kernel\":\"" << step.info.kernel
              << "\",\"kh\":" << step.cost.kernel_h << ",\"kw\":" << step.cost.kernel_w
              << ",\"groups\":" << step.cost.groups << ",\"flops\":" << step.cost.flops
              << ",\"ms\":" << step.median_ms << ",\"gflops\":" << step.gflops
              << ",\"peak_percent\":" << step.peak_percent << "}";
        }
        std::cout << out.str() << "]}" << std::endl;
        continue;
      }
      if (command == "profile") {
        const auto& steps = (*plan)->steps();
        std::vector<std::vector<int64_t>> samples(steps.size());
        std::vector<int64_t> step_ns;
        for (int k = 0; k < iterations; ++k) {
          absl::Status status = (*plan)->RunProfiled(*workspace, inputs, outputs, step_ns, options);
          if (!status.ok()) break;
          for (size_t s = 0; s < steps.size(); ++s) samples[s].push_back(step_ns[s]);
        }
        std::ostringstream out;
        out << "{\"ok\":true,\"steps\":[";
        for (size_t s = 0; s < steps.size(); ++s) {
          auto& v = samples[s];
          std::sort(v.begin(), v.end());
          const double median_ms = v.empty() ? 0 : v[v.size() / 2] / 1e6;
          out << (s ? "," : "") << "{\"name\":\"" << steps[s].name << "\",\"kind\":\""
              << steps[s].kind << "\",\"kernel\":\"" << steps[s].kernel << "\",\"src\":\""
              << steps[s].src_format << "\",\"dst\":\"" << steps[s].dst_format
              << "\",\"ms\":" << median_ms << "}";
        }
        std::cout << out.str() << "]}" << std::endl;
        continue;
      }
      std::ostringstream out;
      out << "{\"ok\":true,\"ms\":[";
      bool failed = false;
      for (int k = 0; k < iterations && !failed; ++k) {
        const auto start = std::chrono::steady_clock::now();
        absl::Status status = (*plan)->Run(*workspace, inputs, outputs, options);
        const double ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                .count();
        if (!status.ok()) {
          std::cout << JsonError(status.ToString()) << std::endl;
          failed = true;
          break;
        }
        out << (k ? "," : "") << ms;
      }
      if (!failed) std::cout << out.str() << "]}" << std::endl;
    } else if (!command.empty()) {
      std::cout << JsonError("unknown command " + command) << std::endl;
    }
  }
  return 0;
}
