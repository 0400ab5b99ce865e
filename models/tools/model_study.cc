// The kernel-size study, computed by the project's own code: for each bundled model its
// parameters (total, convolutions, dense layers), MACs per image (engine cost model), PyTorch's
// recorded test accuracy, the engine's test accuracy on the same 10,000 images, the engine's
// latency per image at batch 1 and images/s at batch 64 on this machine.
//
//   convserve-model-study [--repository DIR] [--threads N] [--readme FILE]
//
// Prints a Markdown table; with --readme, replaces the part of FILE between the markers
// "<!-- study:begin -->" and "<!-- study:end -->" with it.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "models/tools/fashion_mnist.h"
#include "server/engine/cost_model.h"
#include "server/engine/engine.h"
#include "server/onnx/importer.h"

namespace fs = std::filesystem;
using namespace convserve;

namespace {

double MedianRunMs(const engine::Plan& plan, int threads, int iterations) {
  std::vector<float> input(engine::NumElements(plan.input_infos()[0].dims));
  for (size_t i = 0; i < input.size(); ++i) input[i] = static_cast<float>((i * 7919) % 255) / 255.f;
  std::vector<float> output(engine::NumElements(plan.output_infos()[0].dims));
  engine::TensorView in{engine::DataType::kFloat32, plan.input_infos()[0].dims, input.data()};
  engine::TensorView out{engine::DataType::kFloat32, plan.output_infos()[0].dims, output.data()};
  auto workspace = plan.CreateWorkspace();
  engine::RunOptions options;
  options.num_threads = threads;
  std::vector<double> ms;
  for (int k = 0; k < iterations + 5; ++k) {
    const auto start = std::chrono::steady_clock::now();
    if (!plan.Run(*workspace, {&in, 1}, {&out, 1}, options).ok()) return -1;
    if (k >= 5) {
      ms.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count());
    }
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

std::string WithThousands(int64_t v) {
  const std::string digits = std::to_string(v);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  fs::path repository = fs::path(CONVSERVE_SOURCE_DIR) / "models" / "repository";
  std::string readme;
  int threads = 1;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--repository") && i + 1 < argc)
      repository = argv[++i];
    else if (!std::strcmp(argv[i], "--readme") && i + 1 < argc)
      readme = argv[++i];
    else if (!std::strcmp(argv[i], "--threads") && i + 1 < argc)
      threads = std::atoi(argv[++i]);
    else {
      std::cerr
          << "usage: convserve-model-study [--repository DIR] [--threads N] [--readme FILE]\n";
      return 2;
    }
  }
  auto data = models::LoadFashionMnistTestSet();
  if (!data.ok()) {
    std::cerr << "error: " << data.status() << "\n";
    return 1;
  }
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(repository)) {
    if (fs::exists(entry.path() / "1" / "model.onnx")) names.push_back(entry.path().filename());
  }
  std::sort(names.begin(), names.end());

  std::ostringstream table;
  table << "| model | params | conv params | dense params | MACs / image | PyTorch acc. | engine "
           "acc. "
           "| agreement | batch 1 ms / image | batch 64 images/s |\n"
        << "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const std::string& name : names) {
    const fs::path dir = repository / name / "1";
    auto graph = onnx_import::ImportOnnxFile(dir / "model.onnx");
    if (!graph.ok()) {
      std::cerr << name << ": " << graph.status() << "\n";
      return 1;
    }
    // Parameters straight from the initializers, by the op that uses them.
    int64_t total = 0, conv = 0, dense = 0;
    for (const auto& [init_name, tensor] : graph->initializers) total += tensor.num_elements();
    for (const auto& node : graph->nodes) {
      for (size_t i = 1; i < node.inputs.size(); ++i) {
        auto it = graph->initializers.find(node.inputs[i]);
        if (it == graph->initializers.end()) continue;
        if (node.op_type == "Conv") conv += it->second.num_elements();
        if (node.op_type == "Gemm" || node.op_type == "MatMul") dense += it->second.num_elements();
      }
    }
    auto model = engine::Model::Create(*std::move(graph), {name, engine::Precision::kFp32});
    if (!model.ok()) {
      std::cerr << name << ": " << model.status() << "\n";
      return 1;
    }
    auto reference = models::LoadPyTorchReference(dir / "pytorch_reference.json");
    auto eval =
        models::EvaluateOnTestSet(**model, *data, reference.ok() ? reference->predictions : "");
    auto plan1 = (*model)->GetPlan(1, threads);
    auto plan64 = (*model)->GetPlan(64, threads);
    if (!eval.ok() || !plan1.ok() || !plan64.ok()) {
      std::cerr << name << ": evaluation failed\n";
      return 1;
    }
    int64_t macs = 0;
    for (const auto& step : (*plan1)->steps()) macs += engine::EstimateStepCost(step).macs;
    const double ms1 = MedianRunMs(**plan1, threads, 300);
    const double ms64 = MedianRunMs(**plan64, threads, 30);
    char row[512];
    std::snprintf(
        row, sizeof(row), "| %s | %s | %s | %s (%.0f%%) | %s | %s | %.2f%% | %s | %.3f | %.0f |\n",
        name.c_str(), WithThousands(total).c_str(), WithThousands(conv).c_str(),
        WithThousands(dense).c_str(), 100.0 * dense / std::max<int64_t>(total, 1),
        WithThousands(macs).c_str(),
        reference.ok() ? (std::to_string(reference->test_accuracy).substr(0, 5) + "%").c_str()
                       : "n/a",
        eval->accuracy,
        reference.ok() ? (std::to_string(eval->agreement / 100.0).substr(0, 6) + "%").c_str()
                       : "n/a",
        ms1, 64.0 / ms64 * 1000.0);
    table << row;
    std::cerr << "measured " << name << "\n";
  }
  const unsigned cores = std::thread::hardware_concurrency();
  table << "\nMeasured with " << threads << " compute thread(s) on a " << cores
        << "-core machine; latency is the median of 300 runs at batch 1, throughput the median of "
           "30 runs at batch 64. Accuracy on the 10,000 Fashion-MNIST test images; agreement = "
           "share of images where the engine and PyTorch predict the same class.\n";
  std::cout << table.str();
  if (!readme.empty()) {
    std::ifstream in(readme);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    const std::string begin = "<!-- study:begin -->", end = "<!-- study:end -->";
    const size_t b = text.find(begin), e = text.find(end);
    if (b == std::string::npos || e == std::string::npos || e < b) {
      std::cerr << "error: " << readme << " has no study markers\n";
      return 1;
    }
    text = text.substr(0, b + begin.size()) + "\n" + table.str() + text.substr(e);
    std::ofstream(readme) << text;
  }
  return 0;
}
