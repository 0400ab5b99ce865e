#include "server/api/health_service.h"

#include <algorithm>
#include <functional>

namespace convserve::api {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

// One Watch call. Its events: the call arrived, a write completed, the finish completed, the call
// is done (finished or cancelled by the client). It is deleted once done with no write or finish
// outstanding. All state is guarded by the service's mutex.
class HealthService::Watch {
 public:
  explicit Watch(HealthService* health) : health_(health), writer_(&context_) {
    health_->rpc_.CallBegan();
    context_.AsyncNotifyWhenDone(&done_);
  }

  void Request() {
    health_->RequestWatch(&context_, &request_, &writer_, health_->rpc_.queue(),
                          health_->rpc_.queue(), &started_);
  }

  // A new status for every watcher (mutex_ held).
  void Send(Status status) {
    if (finishing_ || done_seen_) return;
    if (writing_) {
      queued_ = status;
      has_queued_ = true;
      return;
    }
    if (sent_any_ && status == sent_) {
      if (health_->shut_down_) End();
      return;
    }
    sent_ = status;
    sent_any_ = true;
    response_.set_status(status);
    writing_ = true;
    writer_.Write(response_, &written_);
  }

 private:
  struct Event final : Tag {
    Event(Watch* watch, void (Watch::*on)(bool)) : watch(watch), on(on) {}
    void Proceed(bool ok) override { (watch->*on)(ok); }
    Watch* watch;
    void (Watch::*on)(bool);
  };

  void OnStarted(bool ok) {
    std::lock_guard<std::mutex> lock(health_->mutex_);
    if (!ok) {
      // The server stopped before a call came. gRPC then never delivers the done event, so this
      // object stays in watches_ until the service is destroyed (after the queue is drained).
      health_->rpc_.CallEnded();
      return;
    }
    started_ok_ = true;
    if (!health_->shut_down_) {
      auto* next = new Watch(health_);
      health_->watches_.insert(next);
      next->Request();
    }
    Send(health_->StatusOf(request_.service()));
    // With several threads the done event (a client that cancelled at once) may have been
    // handled already, before this one: then nothing else would delete this call.
    MaybeDelete();
  }

  void OnWritten(bool ok) {
    std::unique_lock<std::mutex> lock(health_->mutex_);
    writing_ = false;
    if (!ok) {  // the stream is broken: the done event follows
      MaybeDelete();
      return;
    }
    if (has_queued_) {
      has_queued_ = false;
      Send(queued_);
    } else if (health_->shut_down_) {
      End();
    }
    MaybeDelete();
  }

  void OnFinished(bool) {
    std::lock_guard<std::mutex> lock(health_->mutex_);
    finished_ = true;
    MaybeDelete();
  }

  void OnDone(bool) {
    std::lock_guard<std::mutex> lock(health_->mutex_);
    done_seen_ = true;
    MaybeDelete();
  }

  void End() {
    if (finishing_ || writing_) return;
    finishing_ = true;
    writer_.Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "server shutting down"),
                   &finish_event_);
  }

  void MaybeDelete() {
    if (!started_ok_ || !done_seen_ || writing_ || (finishing_ && !finished_)) return;
    health_->watches_.erase(this);
    health_->rpc_.CallEnded();
    delete this;
  }

  friend class HealthService;

  HealthService* health_;
  grpc::ServerContext context_;
  HealthCheckRequest request_;
  HealthCheckResponse response_;
  grpc::ServerAsyncWriter<HealthCheckResponse> writer_;
  Event started_{this, &Watch::OnStarted};
  Event written_{this, &Watch::OnWritten};
  Event finish_event_{this, &Watch::OnFinished};
  Event done_{this, &Watch::OnDone};
  bool started_ok_ = false;
  bool writing_ = false;
  bool finishing_ = false;
  bool finished_ = false;
  bool done_seen_ = false;
  bool sent_any_ = false;
  Status sent_ = HealthCheckResponse::UNKNOWN;
  bool has_queued_ = false;
  Status queued_ = HealthCheckResponse::UNKNOWN;
};

// Start posts the first Watch call; each call that arrives posts the next.
class HealthService::WatchMethod final : public AsyncRpc::Method {
 public:
  explicit WatchMethod(HealthService* health) : health_(health) {}
  void Post() override {
    std::lock_guard<std::mutex> lock(health_->mutex_);
    auto* watch = new Watch(health_);
    health_->watches_.insert(watch);
    watch->Request();
  }

 private:
  HealthService* health_;
};

HealthService::HealthService(AsyncRpc& rpc, std::vector<std::string> services)
    : rpc_(rpc), services_(std::move(services)), status_(HealthCheckResponse::NOT_SERVING) {
  rpc.ServeUnary(this, &grpc::health::v1::Health::AsyncService::RequestCheck,
                 std::bind_front(&HealthService::Check, this));
  rpc.AddMethod(std::make_unique<WatchMethod>(this));
}

HealthService::~HealthService() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (Watch* watch : watches_) delete watch;  // the queue is drained: no event can come
}

HealthService::Status HealthService::StatusOf(const std::string& service) const {
  if (service.empty() || std::find(services_.begin(), services_.end(), service) != services_.end())
    return status_;
  return HealthCheckResponse::SERVICE_UNKNOWN;
}

void HealthService::SetServing(bool serving) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (shut_down_) return;
  status_ = serving ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING;
  for (Watch* watch : watches_) {
    if (watch->started_ok_) watch->Send(StatusOf(watch->request_.service()));
  }
}

void HealthService::Shutdown() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (shut_down_) return;
  shut_down_ = true;
  status_ = HealthCheckResponse::NOT_SERVING;
  for (Watch* watch : watches_) {
    if (watch->started_ok_) watch->Send(StatusOf(watch->request_.service()));
  }
}

void HealthService::Check(grpc::ServerContext*, const HealthCheckRequest* request,
                          HealthCheckResponse* response, Reply reply) {
  Status status;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    status = StatusOf(request->service());
  }
  if (status == HealthCheckResponse::SERVICE_UNKNOWN) {
    reply.Finish(
        grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service '" + request->service() + "'"));
    return;
  }
  response->set_status(status);
  reply.Finish(grpc::Status::OK);
}

}  // namespace convserve::api
