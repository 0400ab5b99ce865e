// The services run on gRPC's asynchronous API: one completion queue, served by --grpc-threads
// threads (default 1).
//
// Why not gRPC's callback API: with it (gRPC 1.51 on Linux) every call passed through two
// "nexting" threads and gRPC's executor thread, and each hand-off is a thread wake-up. Measured
// on the 2-core virtual machine of bench/SERVER.md at concurrency 1 (fashion-mlp): 3.1 voluntary
// context switches per request in the server, against 1.0 here with one thread, and 25-32 us
// less overhead at p50 for every bundled model. The thread that polls the socket runs the handler,
// and a lone request is computed right there (see the scheduler).
//
// Before acting on an event, a thread takes every other event that is ready too, so a handler
// knows whether more calls arrived with its own (CallsReadyBehind): requests that arrive together
// are queued for one batch on a worker, while a lone one is computed at once on this thread.
// More threads let calls be received while one computes, at the price of a hand-off between them
// for every call (each in turn waits in the poller).
//
// A handler gets the request, a response to fill and a Reply, and calls Reply::Finish exactly
// once, from any thread, now or later (after the scheduler computed the request). An answer that
// gRPC could not deliver (the call had ended: the client's deadline passed, it cancelled, or the
// connection went) is counted per method (UndeliveredCounts).
//
// Lifecycle: construct, register each method (ServeUnary, or AddMethod with tags of one's own on
// queue()), AddTo(builder), BuildAndStart, Start(); at the end grpc::Server::Shutdown, then every
// handler must have replied, then Stop().
#pragma once

#include <google/protobuf/descriptor.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "server/api/spin_next.h"

namespace convserve::api {

// Answers that could not be delivered, per method, by its full name
// ("inference.GRPCInferenceService/ModelInfer"). The methods are added before the server starts;
// counts are atomic.
struct UndeliveredCounts {
  std::map<std::string, std::atomic<int64_t>> by_method;
  // The counts now, by method.
  std::map<std::string, int64_t> Read() const {
    std::map<std::string, int64_t> counts;
    for (const auto& [method, count] : by_method) {
      counts[method] = count.load(std::memory_order_relaxed);
    }
    return counts;
  }
};

// What a completion-queue event does: the tag of every asynchronous operation is a Tag.
class Tag {
 public:
  virtual void Proceed(bool ok) = 0;
  // When this event is a new call arriving: its method (an identity to compare); else null (the
  // end of an operation of a running call).
  virtual const void* StartsCallOf() const { return nullptr; }

 protected:
  ~Tag() = default;
};

namespace internal {
class Finishable {
 public:
  virtual void Finish(const grpc::Status& status) = 0;

 protected:
  ~Finishable() = default;
};
}  // namespace internal

// Answers one unary call. Finish exactly once, from any thread; the response must be filled
// before. Copyable (one pointer).
class Reply {
 public:
  explicit Reply(internal::Finishable* call) : call_(call) {}
  void Finish(const grpc::Status& status) const { call_->Finish(status); }

 private:
  internal::Finishable* call_;
};

template <class Request, class Response>
using UnaryHandler = std::function<void(grpc::ServerContext*, const Request*, Response*, Reply)>;

class AsyncRpc {
 public:
  // `threads` threads wait on the one completion queue. A lone thread looks for the next event
  // without sleeping for up to `spin`, while `may_spin()` (default: always), before it blocks
  // (spin_next.h); with more threads none spins.
  explicit AsyncRpc(int threads, std::chrono::microseconds spin = std::chrono::microseconds(0),
                    std::function<bool()> may_spin = nullptr);
  ~AsyncRpc();  // Stop()

  AsyncRpc(const AsyncRpc&) = delete;
  AsyncRpc& operator=(const AsyncRpc&) = delete;

  // Serves a unary method of `service` (an AsyncService registered with the builder):
  // `request` is its generated Request<Method> member.
  template <class Service, class Base, class Request, class Response>
  void ServeUnary(Service* service,
                  void (Base::*request)(grpc::ServerContext*, Request*,
                                        grpc::ServerAsyncResponseWriter<Response>*,
                                        grpc::CompletionQueue*, grpc::ServerCompletionQueue*,
                                        void*),
                  std::type_identity_t<UnaryHandler<Request, Response>> handler);

  // One per method: Post() waits for one more call of it (Start posts the first ones).
  class Method {
   public:
    virtual ~Method() = default;
    virtual void Post() = 0;
  };
  void AddMethod(std::unique_ptr<Method> method) { methods_.push_back(std::move(method)); }

  // Called by a thread before and after it acts on the events it took at once (before Start):
  // the server defers the workers' wake-ups for requests that arrived together until the end.
  void SetEventBatchHooks(std::function<void()> begin, std::function<void()> end) {
    batch_begin_ = std::move(begin);
    batch_end_ = std::move(end);
  }

  // Before BuildAndStart.
  void AddTo(grpc::ServerBuilder& builder);
  // After BuildAndStart: every method starts waiting for a call; the threads start.
  void Start();
  // After grpc::Server::Shutdown returned: waits until every call ended (handlers that still hold
  // a Reply must finish), then shuts the queue down and joins the threads. Idempotent.
  void Stop();

  grpc::ServerCompletionQueue* queue() { return queue_.get(); }

  // How the threads' waits for events ended so far (spin_next.h); may outlive this object.
  std::shared_ptr<const WaitCounts> waits() const { return waits_; }

  // Answers gRPC could not deliver, per unary method served; may outlive this object.
  std::shared_ptr<const UndeliveredCounts> undelivered() const { return undelivered_; }
  // The counter of the unary method taking `request` and returning `response` (found in their
  // files' services), created on first use: only while methods are being added, before Start.
  std::atomic<int64_t>* UndeliveredCounter(const google::protobuf::Descriptor* request,
                                           const google::protobuf::Descriptor* response);
  // The counter of a method by its full name ("package.Service/Method"), created on first use:
  // only while methods are being added, before Start.
  std::atomic<int64_t>* UndeliveredCounter(const std::string& method) {
    return &undelivered_->by_method[method];
  }

  // In a handler: how many more calls of the same method arrived together with this one and
  // wait, ready, right behind it on this thread. A thread takes every event that is ready before it
  // acts on the first, so a handler can tell a lone request (compute it now, on this thread) from a
  // burst (queue them all, so that they form a batch).
  static int CallsReadyBehind();

  // Calls alive (waiting for a request, running or finishing): for Stop, and for tags of one's
  // own that live as long as a call (health Watch).
  void CallBegan() { calls_.fetch_add(1, std::memory_order_relaxed); }
  void CallEnded();

 private:
  void Run(std::chrono::microseconds spin);

  static constexpr int kWaitingCallsPerMethod = 16;

  const int num_threads_;
  const std::chrono::microseconds spin_;
  const std::function<bool()> may_spin_;
  std::function<void()> batch_begin_, batch_end_;
  const std::shared_ptr<WaitCounts> waits_ = std::make_shared<WaitCounts>();
  const std::shared_ptr<UndeliveredCounts> undelivered_ = std::make_shared<UndeliveredCounts>();
  std::unique_ptr<grpc::ServerCompletionQueue> queue_;
  std::vector<std::unique_ptr<Method>> methods_;
  std::vector<std::thread> threads_;
  std::atomic<int64_t> calls_{0};
  std::mutex mutex_;
  std::condition_variable ended_;
  bool stopped_ = false;
};

namespace internal {

template <class Request, class Response>
class UnaryMethod final : public AsyncRpc::Method {
 public:
  using RequestFn = std::function<void(grpc::ServerContext*, Request*,
                                       grpc::ServerAsyncResponseWriter<Response>*, void* tag)>;
  UnaryMethod(AsyncRpc* rpc, RequestFn request, UnaryHandler<Request, Response> handler)
      : rpc_(rpc),
        request_(std::move(request)),
        handler_(std::move(handler)),
        undelivered_(rpc->UndeliveredCounter(Request::descriptor(), Response::descriptor())) {}

  void Post() override;

 private:
  // One call: waits for a request, runs the handler, sends the reply, deletes itself.
  class Call final : public Tag, public Finishable {
   public:
    explicit Call(UnaryMethod* method) : method_(method), writer_(&context_) {
      method_->rpc_->CallBegan();
    }
    ~Call() { method_->rpc_->CallEnded(); }

    void Start() { method_->request_(&context_, &request_, &writer_, this); }

    const void* StartsCallOf() const override { return finishing_ ? nullptr : method_; }

    void Proceed(bool ok) override {
      if (finishing_ || !ok) {  // reply sent (or not: call ended), or the server stopped
        if (finishing_ && !ok) method_->undelivered_->fetch_add(1, std::memory_order_relaxed);
        delete this;
        return;
      }
      method_->Post();
      finishing_ = true;  // the next event of this call is its Finish
      // Nothing of *this may be touched after the handler returns: Finish may already have
      // completed on another thread and deleted it.
      method_->handler_(&context_, &request_, &response_, Reply(this));
    }

    void Finish(const grpc::Status& status) override {
      if (status.ok()) {
        writer_.Finish(response_, status, this);
      } else {
        writer_.FinishWithError(status, this);
      }
    }

   private:
    UnaryMethod* method_;
    grpc::ServerContext context_;
    Request request_;
    Response response_;
    grpc::ServerAsyncResponseWriter<Response> writer_;
    bool finishing_ = false;
  };

  AsyncRpc* rpc_;
  RequestFn request_;
  UnaryHandler<Request, Response> handler_;
  std::atomic<int64_t>* undelivered_;
};

template <class Request, class Response>
void UnaryMethod<Request, Response>::Post() {
  (new Call(this))->Start();
}

}  // namespace internal

template <class Service, class Base, class Request, class Response>
void AsyncRpc::ServeUnary(Service* service,
                          void (Base::*request)(grpc::ServerContext*, Request*,
                                                grpc::ServerAsyncResponseWriter<Response>*,
                                                grpc::CompletionQueue*,
                                                grpc::ServerCompletionQueue*, void*),
                          std::type_identity_t<UnaryHandler<Request, Response>> handler) {
  static_assert(std::is_base_of_v<Base, Service>);
  auto request_fn = [this, service, request](grpc::ServerContext* context, Request* message,
                                             grpc::ServerAsyncResponseWriter<Response>* writer,
                                             void* tag) {
    (service->*request)(context, message, writer, queue_.get(), queue_.get(), tag);
  };
  AddMethod(std::make_unique<internal::UnaryMethod<Request, Response>>(this, std::move(request_fn),
                                                                       std::move(handler)));
}

}  // namespace convserve::api
