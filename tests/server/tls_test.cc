// TLS and mutual TLS on the gRPC port: an in-process server with certificates made by
// tests/tls/make_test_certs.sh (a test CA, a server certificate for 127.0.0.1, a client
// certificate from the same CA, and a client certificate from another CA), real gRPC stubs.
// The oracle is the handshake itself: verified clients are served, everyone else is refused.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "proto/inference.grpc.pb.h"
#include "server/api/server.h"
#include "tests/server/test_models.h"

namespace convserve::testing {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

std::string Read(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(MakeTempDir("convserve-tls-test"));
    const std::string command =
        absl::StrCat("bash '", CONVSERVE_SOURCE_DIR, "/tests/tls/make_test_certs.sh' '",
                     (*dir_ / "certs").string(), "' > '", (*dir_ / "certs.log").string(), "' 2>&1");
    certs_made_ = std::system(command.c_str()) == 0;
    BuildTestRepository(*dir_ / "repository");
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }
  void SetUp() override {
    ASSERT_TRUE(certs_made_) << "make_test_certs.sh failed (is openssl installed?):\n"
                             << Read(*dir_ / "certs.log");
  }
  void TearDown() override { server_.reset(); }

  static std::string Cert(const std::string& name) { return (*dir_ / "certs" / name).string(); }

  api::ServerOptions Options(bool mutual) {
    api::ServerOptions options;
    options.model_repository = (*dir_ / "repository").string();
    options.grpc_address = "127.0.0.1";
    options.grpc_port = 0;
    options.metrics_port = 0;
    options.threads = 1;
    options.tls_cert_file = Cert("server.crt");
    options.tls_key_file = Cert("server.key");
    if (mutual) options.tls_client_ca_file = Cert("ca.crt");
    return options;
  }

  void StartServer(bool mutual) {
    auto server = api::Server::Start(Options(mutual));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  // ServerLive over a fresh connection with `credentials`.
  grpc::Status Live(const std::shared_ptr<grpc::ChannelCredentials>& credentials,
                    bool* live = nullptr) {
    auto channel =
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->grpc_port()), credentials);
    auto stub = inference::GRPCInferenceService::NewStub(channel);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    inference::ServerLiveResponse response;
    grpc::Status status = stub->ServerLive(&context, {}, &response);
    if (live != nullptr) *live = response.live();
    return status;
  }

  static std::shared_ptr<grpc::ChannelCredentials> Ssl(const std::string& ca,
                                                       const std::string& client = "") {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = Read(Cert(ca));
    if (!client.empty()) {
      ssl.pem_cert_chain = Read(Cert(client + ".crt"));
      ssl.pem_private_key = Read(Cert(client + ".key"));
    }
    return grpc::SslCredentials(ssl);
  }

  static fs::path* dir_;
  static bool certs_made_;
  std::unique_ptr<api::Server> server_;
};

fs::path* TlsTest::dir_ = nullptr;
bool TlsTest::certs_made_ = false;

TEST_F(TlsTest, ServesClientsThatVerifyItsCertificateAndNobodyElse) {
  StartServer(/*mutual=*/false);
  EXPECT_EQ(api::TransportSecurity(Options(false)), "TLS");
  bool live = false;
  grpc::Status status = Live(Ssl("ca.crt"), &live);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(live);
  // A client certificate is not needed, and not refused.
  EXPECT_TRUE(Live(Ssl("ca.crt", "client")).ok());
  // Plaintext cannot talk to a TLS port; a client trusting another CA refuses the server.
  EXPECT_EQ(Live(grpc::InsecureChannelCredentials()).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Live(Ssl("rogue-ca.crt")).error_code(), grpc::StatusCode::UNAVAILABLE);
  // Still serving after the failed handshakes.
  EXPECT_TRUE(Live(Ssl("ca.crt")).ok());
}

TEST_F(TlsTest, MutualTlsServesOnlyClientsWithACertificateFromTheClientCa) {
  StartServer(/*mutual=*/true);
  EXPECT_EQ(api::TransportSecurity(Options(true)), "mutual TLS");
  bool live = false;
  grpc::Status status = Live(Ssl("ca.crt", "client"), &live);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(live);
  EXPECT_EQ(Live(Ssl("ca.crt")).error_code(), grpc::StatusCode::UNAVAILABLE);  // no certificate
  EXPECT_EQ(Live(Ssl("ca.crt", "rogue")).error_code(),
            grpc::StatusCode::UNAVAILABLE);  // signed by another CA
  EXPECT_EQ(Live(grpc::InsecureChannelCredentials()).error_code(), grpc::StatusCode::UNAVAILABLE);

  // An inference over mutual TLS: the test model's logits are known (see test_models.h).
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->grpc_port()),
                                     Ssl("ca.crt", "client"));
  auto stub = inference::GRPCInferenceService::NewStub(channel);
  const inference::ModelInferRequest request = PatternRequest("tiny", {4});
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  inference::ModelInferResponse response;
  status = stub->ModelInfer(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.raw_output_contents_size(), 1);
  const std::array<float, kClasses> expected = LinearLogits(PatternFloats(4).data(), 0.0f);
  ASSERT_EQ(response.raw_output_contents(0).size(), kClasses * sizeof(float));
  const float* logits = reinterpret_cast<const float*>(response.raw_output_contents(0).data());
  for (int k = 0; k < kClasses; ++k) EXPECT_NEAR(logits[k], expected[k], 1e-6) << k;
}

TEST_F(TlsTest, BadTlsOptionsStopTheStartWithAMessageNamingTheFlag) {
  struct Case {
    std::function<void(api::ServerOptions&)> change;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](auto& o) { o.tls_key_file.clear(); }, "--tls-cert and --tls-key go together"},
      {[](auto& o) { o.tls_cert_file.clear(); }, "--tls-cert and --tls-key go together"},
      {[](auto& o) {
         o.tls_cert_file.clear();
         o.tls_key_file.clear();
         o.tls_client_ca_file = Cert("ca.crt");
       },
       "--tls-client-ca needs --tls-cert and --tls-key"},
      {[](auto& o) { o.tls_cert_file = Cert("missing.crt"); },
       "cannot read --tls-cert file '" + Cert("missing.crt") + "': No such file"},
      {[](auto& o) { o.tls_key_file = Cert("server.crt"); },
       "--tls-key file '" + Cert("server.crt") + "' holds no PEM PRIVATE KEY block"},
      {[](auto& o) { o.tls_cert_file = Cert("server.key"); },
       "--tls-cert file '" + Cert("server.key") + "' holds no PEM CERTIFICATE block"},
      {[](auto& o) { o.tls_client_ca_file = Cert("ca.key"); },
       "--tls-client-ca file '" + Cert("ca.key") + "' holds no PEM CERTIFICATE block"},
      // PEM of the right kinds that do not belong together: gRPC refuses the pair.
      {[](auto& o) { o.tls_key_file = Cert("client.key"); }, "gRPC rejected the TLS certificate"},
  };
  for (const Case& c : cases) {
    api::ServerOptions options = Options(/*mutual=*/true);
    c.change(options);
    auto server = api::Server::Start(options);
    ASSERT_FALSE(server.ok()) << c.message;
    EXPECT_EQ(server.status().code(), c.message.find("gRPC rejected") != std::string::npos
                                          ? absl::StatusCode::kUnavailable
                                          : absl::StatusCode::kInvalidArgument)
        << server.status();
    EXPECT_THAT(std::string(server.status().message()), HasSubstr(c.message));
  }
  EXPECT_EQ(api::TransportSecurity(api::ServerOptions()), "plaintext");
}

}  // namespace
}  // namespace convserve::testing
