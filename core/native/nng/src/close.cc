// shoal_nng: closing a pair end (see core.h). close() never blocks the JS thread: a helper thread closes the
// streams, waits for every aio callback (none resubmits once `closed` is set), frees everything and reports
// EV_CLOSED. When the environment goes away first (a worker thread exits with the pair open), the thread-safe
// function's finalizer stops the writes synchronously, since queued sends point into JS memory.
#include <nng/nng.h>

#include <mutex>
#include <thread>

#include "core.h"

namespace shoal_nng {

// Queued sends point into JS memory. Before the environment can free it (teardown without close()), stop the
// streams synchronously: the stream's close takes its lock, so no write is in progress after it. Call with mu held.
void StopWrites(Core* c) {
  c->closed = true;
  if (c->conn) nng_stream_close(c->conn);
  if (c->candidate) nng_stream_close(c->candidate);
}

// Runs on the JS thread when the thread-safe function goes away: after CloseWorker's Release, or when the
// environment (e.g. a worker thread) is torn down with the pair still open; Node frees the function right after,
// so nng threads must stop calling it first.
void FinalizeTsfn(Napi::Env, void*, Core* core) {
  StopJsRx(core);  // teardown without close(): the poll goes before the stream
  {
    std::lock_guard<std::mutex> lk(core->mu);
    core->tsfnDead = true;
    StopWrites(core);
  }
  core->unref();
}

namespace {

// Helper thread: stop everything without ever blocking the JS thread.
void CloseWorker(Core* c) {
  {
    std::lock_guard<std::mutex> lk(c->mu);
    c->closed = true;
    if (c->conn) nng_stream_close(c->conn);
    if (c->candidate) nng_stream_close(c->candidate);
    if (c->listener) nng_stream_listener_close(c->listener);
    if (c->dialer) nng_stream_dialer_close(c->dialer);
  }
  // Wait for every callback to have returned; none resubmits once `closed` is set.
  for (nng_aio* a : {c->acceptAio, c->dialAio, c->negoAio, c->rxAio, c->txAio, c->kickAio}) {
    if (a != nullptr) nng_aio_stop(a);
  }
  {
    std::lock_guard<std::mutex> lk(c->mu);
    if (!c->txq.empty()) {  // queued behind the aborted write (or never started): they fail with the close
      c->post(EV_SEND, c->txq.back().id, NNG_ECLOSED);
      c->txq.clear();
    }
    if (c->conn) nng_stream_free(c->conn);
    if (c->candidate) nng_stream_free(c->candidate);
    if (c->listener) nng_stream_listener_free(c->listener);
    if (c->dialer) nng_stream_dialer_free(c->dialer);
    c->conn = c->candidate = nullptr;
    c->listener = nullptr;
    c->dialer = nullptr;
  }
  for (nng_aio* a : {c->acceptAio, c->dialAio, c->negoAio, c->rxAio, c->txAio, c->kickAio}) {
    if (a != nullptr) nng_aio_free(a);
  }
  {
    std::lock_guard<std::mutex> lk(c->mu);
    c->post(EV_CLOSED, 0, 0);
    if (!c->tsfnDead) c->tsfn.Release();
  }
  c->unref();
}

}  // namespace

void StartClose(Core* c) {
  if (c->closeStarted.exchange(true)) return;
  std::thread(CloseWorker, c).detach();
}

}  // namespace shoal_nng
