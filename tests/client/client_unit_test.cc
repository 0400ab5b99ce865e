// Unit tests of the CLI's pieces that need no server: target splitting, error lines, tables,
// BYTES encoding, concurrency ranges, file collection, report renderers.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "client/commands.h"
#include "client/image.h"
#include "client/output.h"
#include "client/report_render.h"
#include "client/rpc.h"

namespace convserve::client {
namespace {

namespace fs = std::filesystem;

bool HavePython() { return std::system("python3 -c 'pass' >/dev/null 2>&1") == 0; }

// Runs `python3 -c script file` on `content`; true when it exits 0.
bool PythonAccepts(const std::string& script, const std::string& content) {
  const fs::path file =
      fs::temp_directory_path() / ("convserve_client_unit_" + std::to_string(::getpid()) + ".txt");
  std::ofstream(file) << content;
  const std::string command = "python3 -c '" + script + "' " + file.string() + " 2>&1";
  const int rc = std::system(command.c_str());
  fs::remove(file);
  return rc == 0;
}

constexpr char kJsonCheck[] = "import json,sys; json.load(open(sys.argv[1]))";
constexpr char kXmlCheck[] = "import xml.dom.minidom,sys; xml.dom.minidom.parse(sys.argv[1])";

TEST(SplitTargets, CommaSeparatedHostsBecomeOneTargetEach) {
  EXPECT_EQ(SplitTargets("a:1, b:2,c:3"), (std::vector<std::string>{"a:1", "b:2", "c:3"}));
  EXPECT_EQ(SplitTargets("localhost:8001"), (std::vector<std::string>{"localhost:8001"}));
  EXPECT_EQ(SplitTargets("dns:///svc:8001"), (std::vector<std::string>{"dns:///svc:8001"}));
  EXPECT_TRUE(SplitTargets(" , ").empty());
}

TEST(SplitTargets, Ipv4UriKeepsItsAddressList) {
  EXPECT_EQ(SplitTargets("ipv4:127.0.0.1:1,127.0.0.1:2"),
            (std::vector<std::string>{"ipv4:127.0.0.1:1,127.0.0.1:2"}));
}

TEST(FormatError, ServerErrorShowsCodeAndMessage) {
  EXPECT_EQ(FormatError(absl::NotFoundError("unknown model 'x'")),
            "error: NOT_FOUND: unknown model 'x'");
}

TEST(Table, TextAlignsNumbersRightAndCsvJsonAreFaithful) {
  Table table({"name", "count", "ms"});
  table.AddRow({Text("a"), Int(5), Num(1.5, 2)});
  table.AddRow({Text("long,name"), Int(12345), Num(std::nan(""), 2)});
  EXPECT_EQ(table.RenderText(),
            "NAME       COUNT    MS\n"
            "a              5  1.50\n"
            "long,name  12345     -\n");
  EXPECT_EQ(table.RenderCsv(), "name,count,ms\na,5,1.50\n\"long,name\",12345,\n");
  EXPECT_EQ(table.RenderJson(),
            "[\n  {\"name\": \"a\", \"count\": 5, \"ms\": 1.50},\n"
            "  {\"name\": \"long,name\", \"count\": 12345, \"ms\": null}\n]\n");
}

TEST(Json, StringsAreEscaped) {
  EXPECT_EQ(JsonString("a\"b\\c\n\x01"), "\"a\\\"b\\\\c\\n\\u0001\"");
}

TEST(BytesElements, RoundTrip) {
  const std::vector<std::string> elements = {"", "abc", std::string(300, 'x')};
  const std::string raw = EncodeBytesElements(elements);
  EXPECT_EQ(raw.size(), 3 * 4 + 3 + 300u);
  EXPECT_EQ(raw.substr(0, 4), std::string(4, '\0'));
  std::vector<std::string> decoded;
  ASSERT_TRUE(DecodeBytesElements(raw, &decoded).ok());
  EXPECT_EQ(decoded, elements);
  EXPECT_FALSE(DecodeBytesElements(raw.substr(0, raw.size() - 1), &decoded).ok());
}

TEST(ParseConcurrency, SingleValueAndRanges) {
  std::vector<int> levels;
  ASSERT_TRUE(ParseConcurrency("4", &levels).ok());
  EXPECT_EQ(levels, (std::vector<int>{4}));
  levels.clear();
  ASSERT_TRUE(ParseConcurrency("1:8:2", &levels).ok());
  EXPECT_EQ(levels, (std::vector<int>{1, 3, 5, 7}));
  levels.clear();
  ASSERT_TRUE(ParseConcurrency("2:4", &levels).ok());
  EXPECT_EQ(levels, (std::vector<int>{2, 3, 4}));
  for (const char* bad : {"0", "4:2", "x", "1:2:0", "1:2:3:4", ""}) {
    levels.clear();
    EXPECT_FALSE(ParseConcurrency(bad, &levels).ok()) << bad;
  }
}

TEST(CollectImageFiles, WalksDirectoriesSortedAndKeepsExplicitFiles) {
  const fs::path dir =
      fs::temp_directory_path() / ("convserve_collect_" + std::to_string(::getpid()));
  fs::create_directories(dir / "sub");
  for (const char* name : {"b.png", "a.JPG", "notes.txt", "sub/c.jpeg"}) {
    std::ofstream(dir / name) << "x";
  }
  std::vector<std::string> files;
  ASSERT_TRUE(CollectImageFiles({dir.string(), (dir / "notes.txt").string()}, &files).ok());
  EXPECT_EQ(files, (std::vector<std::string>{(dir / "a.JPG").string(), (dir / "b.png").string(),
                                             (dir / "sub/c.jpeg").string(),
                                             (dir / "notes.txt").string()}));
  files.clear();
  EXPECT_EQ(CollectImageFiles({(dir / "missing").string()}, &files).code(),
            absl::StatusCode::kNotFound);
  fs::remove_all(dir);
}

TEST(Image, SpecFromConfigAppliesDefaults) {
  inference::ModelConfig config;
  config.set_name("m");
  auto* input = config.add_input();
  input->set_name("input");
  input->set_format(inference::ModelInput::FORMAT_NCHW);
  for (int64_t d : {3, 32, 24}) input->add_dims(d);
  auto spec = ImageInputSpecFromConfig(config, "input");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->channels, 3);
  EXPECT_FALSE(spec->hwc);
  EXPECT_EQ(spec->preprocessing.height(), 32);
  EXPECT_EQ(spec->preprocessing.width(), 24);
  EXPECT_FLOAT_EQ(spec->preprocessing.scale(), 1.0f / 255.0f);
  EXPECT_EQ(spec->preprocessing.mean_size(), 3);
  EXPECT_FLOAT_EQ(spec->preprocessing.std(2), 1.0f);
  EXPECT_EQ(spec->preprocessing.color_format(), inference::ModelPreprocessing::RGB);
  input->clear_dims();
  input->add_dims(10);
  EXPECT_FALSE(ImageInputSpecFromConfig(config, "input").ok());
}

convserve::v1::LayerReport SampleReport() {
  convserve::v1::LayerReport report;
  report.set_model_name("m<&>");
  report.set_model_version("1");
  report.set_batch_size(1);
  const struct {
    const char* name;
    const char* kind;
    double ms;
    uint64_t flops;
    uint64_t params;
  } rows[] = {{"conv1", "Conv", 0.5, 1000, 80},
              {"pool\"1", "MaxPool", 0.1, 10, 0},
              {"fc", "Gemm", 0.4, 3000, 300}};
  int index = 0;
  for (const auto& r : rows) {
    auto* row = report.add_layers();
    row->set_index(index++);
    row->set_name(r.name);
    row->set_kind(r.kind);
    row->set_median_ms(r.ms);
    row->set_flops(r.flops);
    row->set_macs(r.flops / 2);
    row->set_params(r.params);
    row->set_time_share(r.ms / 1.0);
    row->set_flops_share(r.flops / 4010.0);
    if (std::string(r.kind) == "Conv") {
      row->set_kernel_h(3);
      row->set_kernel_w(3);
      row->set_stride_h(2);
      row->set_stride_w(2);
      row->set_groups(4);
    }
  }
  return report;
}

TEST(ReportRender, SortAndKernelShape) {
  auto report = SampleReport();
  SortLayers(&report, "flops");
  EXPECT_EQ(report.layers(0).name(), "fc");
  SortLayers(&report, "time");
  EXPECT_EQ(report.layers(0).name(), "conv1");
  SortLayers(&report, "params");
  EXPECT_EQ(report.layers(0).name(), "fc");
  EXPECT_EQ(KernelShape(SampleReport().layers(0)), "3x3 s2 g4");
  EXPECT_EQ(KernelShape(SampleReport().layers(2)), "");
  EXPECT_EQ(Bar(0.5, 10), "#####     ");
  EXPECT_EQ(Bar(2.0, 4, '='), "====");
}

TEST(ReportRender, TableHasOneRowPerLayerWithBars) {
  const std::string table = RenderReportTable(SampleReport());
  EXPECT_NE(table.find("MEDIAN_MS"), std::string::npos);
  EXPECT_NE(table.find("3x3 s2 g4"), std::string::npos);
  EXPECT_NE(table.find("##########           50.0%"), std::string::npos) << table;
  const std::string csv = RenderReportCsv(SampleReport());
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 4);
}

TEST(ReportRender, ChromeTraceIsJsonWithOneCompleteEventPerLayerEndToEnd) {
  auto report = SampleReport();
  SortLayers(&report, "time");  // the trace is in plan order whatever the sort
  const std::string trace = RenderReportChromeTrace(report);
  size_t events = 0;
  for (size_t at = trace.find("\"ph\": \"X\""); at != std::string::npos;
       at = trace.find("\"ph\": \"X\"", at + 1)) {
    ++events;
  }
  EXPECT_EQ(events, 3u);
  // conv1 0..500 us, pool"1 500..600, fc 600..1000.
  EXPECT_NE(trace.find("\"name\": \"pool\\\"1\", \"cat\": \"MaxPool\", \"ph\": \"X\", \"ts\": "
                       "500.000, \"dur\": 100.000"),
            std::string::npos)
      << trace;
  ASSERT_TRUE(HavePython())
      << "python3 (installed by .ci/install-deps) is needed to parse the JSON";
  EXPECT_TRUE(
      PythonAccepts("import json,sys; d=json.load(open(sys.argv[1])); "
                    "x=[e for e in d[\"traceEvents\"] if e[\"ph\"]==\"X\"]; "
                    "assert len(x)==3 and x[2][\"ts\"]==600.0 and x[2][\"dur\"]==400.0",
                    trace));
}

TEST(ReportRender, SvgIsWellFormedXml) {
  const std::string svg = RenderReportSvg(SampleReport());
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_NE(svg.find("m&lt;&amp;&gt;"), std::string::npos);
  ASSERT_TRUE(HavePython()) << "python3 (installed by .ci/install-deps) is needed to parse the XML";
  EXPECT_TRUE(PythonAccepts(kXmlCheck, svg));
}

TEST(ReportRender, JsonAndComparisonFormats) {
  convserve::v1::CompareKernelsResponse response;
  auto* comparison = response.add_comparisons();
  comparison->set_layer_name("conv1");
  auto* design = comparison->add_designs();
  design->set_design("as_is");
  design->set_description("5x5 8->8");
  design->set_params(1608);
  design->set_params_ratio(1.0);
  const std::string table = RenderComparison(response, "table");
  EXPECT_NE(table.find("layer conv1"), std::string::npos);
  EXPECT_NE(table.find("as_is"), std::string::npos);
  EXPECT_NE(RenderComparison(response, "csv").find("conv1,as_is,5x5 8->8,1608"), std::string::npos);
  ASSERT_TRUE(HavePython())
      << "python3 (installed by .ci/install-deps) is needed to parse the JSON";
  EXPECT_TRUE(PythonAccepts(kJsonCheck, RenderComparison(response, "json")));
  EXPECT_TRUE(PythonAccepts(kJsonCheck, RenderReportJson(SampleReport())));
}

}  // namespace
}  // namespace convserve::client
