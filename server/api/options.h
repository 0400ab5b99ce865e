// The server's options: one struct, filled by main.cc from flags and environment variables, and
// passed down explicitly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace convserve::api {

struct ServerOptions {
  std::string model_repository;  // empty: the bundled models/repository
  std::string grpc_address = "0.0.0.0";
  int grpc_port = 8001;                     // 0: pick a free port (see Server::grpc_port())
  int metrics_port = 8002;                  // 0: no metrics endpoint; -1: pick a free port
  int threads = 0;                          // compute threads for all models; 0: all cores
  int grpc_threads = 1;                     // threads running gRPC's completion queue
  int grpc_spin_us = 300;                   // each looks for the next call this long, then sleeps
  std::string model_control_mode = "none";  // none | poll | explicit
  std::vector<std::string> load_models;     // explicit mode: loaded at start ("*": all)
  int repository_poll_secs = 15;
  std::string log_level = "info";   // trace | debug | info | warn | error | critical | off
  std::string log_format = "text";  // text | json
  // Largest request accepted. ModelInfer requests up to twice this are read and refused by the
  // server (RESOURCE_EXHAUSTED naming the model and its largest input, counted and logged);
  // anything larger is refused by gRPC before it is read (gRPC's message, not counted).
  int64_t max_request_bytes = 64 << 20;
  int exit_timeout_secs = 30;           // how long shutdown waits for in-flight requests
  int64_t max_image_pixels = 16 << 20;  // decompression-bomb limit for encoded images
  // TLS: PEM server certificate chain and private key (both or neither); with a client CA,
  // mutual TLS: every client must present a certificate that CA signed.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
};

// Where the bundled repository is: next to the executable (../models/repository,
// ../share/convserve/models/repository) or the source tree's models/repository.
std::string DefaultModelRepository();

// How gRPC is served: "plaintext", "TLS" or "mutual TLS".
std::string TransportSecurity(const ServerOptions& options);

}  // namespace convserve::api
