#include "server/api/async_rpc.h"

#include <pthread.h>

#include <chrono>
#include <string>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace convserve::api {

AsyncRpc::AsyncRpc(int threads, std::chrono::microseconds spin, std::function<bool()> may_spin)
    : num_threads_(std::max(1, threads)),
      spin_(std::max(spin, std::chrono::microseconds(0))),
      may_spin_(may_spin ? std::move(may_spin) : [] { return true; }) {}

AsyncRpc::~AsyncRpc() { Stop(); }

void AsyncRpc::AddTo(grpc::ServerBuilder& builder) { queue_ = builder.AddCompletionQueue(); }

std::atomic<int64_t>* AsyncRpc::UndeliveredCounter(const google::protobuf::Descriptor* request,
                                                   const google::protobuf::Descriptor* response) {
  // A unary method is named by its types within a service (two services may share them, as
  // inference's and convserve.v1's statistics requests are named alike but are not the same).
  std::string name = request->full_name();
  for (const google::protobuf::FileDescriptor* file : {request->file(), response->file()}) {
    for (int s = 0; s < file->service_count(); ++s) {
      const google::protobuf::ServiceDescriptor* service = file->service(s);
      for (int m = 0; m < service->method_count(); ++m) {
        const google::protobuf::MethodDescriptor* method = service->method(m);
        if (method->input_type() == request && method->output_type() == response &&
            !method->client_streaming() && !method->server_streaming()) {
          name = absl::StrCat(service->full_name(), "/", method->name());
        }
      }
    }
  }
  return UndeliveredCounter(name);
}

void AsyncRpc::Start() {
  // Several calls of each method wait at once: calls that arrive together then reach the queue
  // together (CallsReadyBehind), instead of one by one as each handler posts its successor.
  for (auto& method : methods_) {
    for (int i = 0; i < kWaitingCallsPerMethod; ++i) method->Post();
  }
  for (int i = 0; i < num_threads_; ++i) {
    threads_.emplace_back([this, i] {
      const std::string name = "cs-grpc-" + std::to_string(i);
      pthread_setname_np(pthread_self(), name.c_str());
      // Only a lone thread spins. With more, one of them sleeps in epoll_wait as gRPC's poller,
      // and another polling with a zero deadline only looks at events already completed: the
      // wake-up is not saved, the core is spent.
      Run(num_threads_ == 1 ? spin_ : std::chrono::microseconds(0));
    });
  }
}

namespace {
thread_local int calls_ready_behind = 0;
}  // namespace

int AsyncRpc::CallsReadyBehind() { return calls_ready_behind; }

void AsyncRpc::Run(std::chrono::microseconds spin) {
  struct Event {
    Tag* tag;
    bool ok;
    const void* method;  // of the call it starts, or null
  };
  // Bounded, so that one thread does not hoard a flood while another is idle.
  constexpr size_t kMaxTaken = 64;
  std::vector<Event> ready;
  ready.reserve(kMaxTaken);
  void* tag = nullptr;
  bool ok = false;
  // Asked when taken: an earlier event's Proceed may end another call, never this event's.
  auto take = [&] {
    auto* event = static_cast<Tag*>(tag);
    ready.push_back({event, ok, ok ? event->StartsCallOf() : nullptr});
  };
  while (NextEvent(queue_.get(), spin, may_spin_, waits_.get(), &tag, &ok)) {
    ready.clear();
    take();
    // Only a new call needs to know what follows it (each look is a system call).
    while (ready.front().method != nullptr && ready.size() < kMaxTaken &&
           queue_->AsyncNext(&tag, &ok, gpr_time_0(GPR_CLOCK_MONOTONIC)) ==
               grpc::CompletionQueue::GOT_EVENT) {
      take();
    }
    if (batch_begin_) batch_begin_();
    for (size_t i = 0; i < ready.size(); ++i) {
      int behind = 0;
      if (ready[i].method != nullptr) {
        for (size_t j = i + 1; j < ready.size(); ++j) behind += ready[j].method == ready[i].method;
      }
      calls_ready_behind = behind;
      ready[i].tag->Proceed(ready[i].ok);
    }
    calls_ready_behind = 0;
    if (batch_end_) batch_end_();
  }
}

void AsyncRpc::CallEnded() {
  if (calls_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    std::lock_guard<std::mutex> lock(mutex_);
    ended_.notify_all();
  }
}

void AsyncRpc::Stop() {
  std::unique_lock<std::mutex> lock(mutex_);
  if (stopped_ || queue_ == nullptr) return;
  stopped_ = true;
  if (!threads_.empty()) {
    // Calls still alive get their last event from the queue, so it keeps running until then.
    // gRPC's shutdown ended the waiting ones; a handler that still holds a Reply must answer
    // first (the serving core answers everything before it is destroyed).
    if (!ended_.wait_for(lock, std::chrono::seconds(5),
                         [this] { return calls_.load(std::memory_order_acquire) == 0; })) {
      spdlog::warn("gRPC: {} calls still open 5 s after shutdown; waiting for them", calls_.load());
      ended_.wait(lock, [this] { return calls_.load(std::memory_order_acquire) == 0; });
    }
  }
  lock.unlock();
  queue_->Shutdown();
  for (auto& thread : threads_) thread.join();
  threads_.clear();
  // Without threads (Start never ran) the queue is drained here.
  void* tag = nullptr;
  bool ok = false;
  while (queue_->Next(&tag, &ok)) static_cast<Tag*>(tag)->Proceed(ok);
}

}  // namespace convserve::api
