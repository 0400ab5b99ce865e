// Takes the next event of a gRPC completion queue, looking for it without sleeping for up to
// `spin` first, then blocking as Next does.
//
// Why: a thread asleep in the poller is woken by the kernel when a packet arrives, and on the
// 2-core virtual machine of bench/SERVER.md that wake-up costs tens of microseconds (the idle vCPU
// halts and must be woken by an interrupt). At concurrency 1 over loopback the next request
// arrives 60-120 us after the previous answer left; a thread that still looks then takes it at
// once. The price is CPU: up to `spin` of one core after every event. An idle server sleeps.
//
// `may_spin()` is asked before and during the spin: false makes the thread sleep at once (the
// server says false while a compute thread is busy, whose core the spin would take).
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

namespace convserve::api {

// How the waits ended: the event was found while spinning, or the thread went to sleep (spin off
// or not allowed, or it ran out).
struct WaitCounts {
  std::atomic<int64_t> spin_hits{0};
  std::atomic<int64_t> sleeps{0};
};

// False once the queue is shut down and drained, as CompletionQueue::Next. `counts` may be null.
template <class MaySpin>
bool NextEvent(grpc::CompletionQueue* queue, std::chrono::microseconds spin, MaySpin&& may_spin,
               WaitCounts* counts, void** tag, bool* ok) {
  if (spin.count() > 0 && may_spin()) {
    const auto until = std::chrono::steady_clock::now() + spin;
    do {
      // A zero deadline polls the sockets once (epoll_wait with no timeout) and returns, when
      // this thread is gRPC's poller: with one thread on the queue it always is.
      switch (queue->AsyncNext(tag, ok, gpr_time_0(GPR_CLOCK_MONOTONIC))) {
        case grpc::CompletionQueue::GOT_EVENT:
          if (counts != nullptr) counts->spin_hits.fetch_add(1, std::memory_order_relaxed);
          return true;
        case grpc::CompletionQueue::SHUTDOWN:
          return false;
        case grpc::CompletionQueue::TIMEOUT:
          break;
      }
      // A thread woken on this core (a worker given a batch, a client) runs now, not at the
      // scheduler's next tick.
      std::this_thread::yield();
    } while (std::chrono::steady_clock::now() < until && may_spin());
  }
  if (counts != nullptr) counts->sleeps.fetch_add(1, std::memory_order_relaxed);
  return queue->Next(tag, ok);
}

}  // namespace convserve::api
