// shoal_nng: the small-message path of a tcp pair end (see core.h).
//
// Every nng aio completes on one of nng's task threads: a small message used to cost a wake-up of nng's poller, of
// a task thread and of the JS thread (through the thread-safe function) to receive, and a task thread and the JS
// thread again for its EV_SEND: 15-17 context switches per 8-byte ring allreduce on 4 ranks, against about 1 for
// the net transport. Once connected we find the stream's socket (nng 1.5.2 does not expose it) and the JS thread
// uses it directly, as libuv does for net:
// - a lone small frame (nothing queued natively, no write in flight) is written inline with send(); if the kernel
//   takes it all, the JS send is done at once (no EV_SEND), else the rest goes through nng as before;
// - sparse small traffic is read on the JS thread from a uv_poll on its own loop, and its messages are delivered
//   synchronously. A payload above kRxSmall (body mode, zero copy) or a read that fills kJsRead (bulk) hands the
//   reads to nng's threads (rx.cc), which keep them until a read smaller than kJsBack parses completely; then
//   EV_RX_RESUME brings them back to the JS thread. Large transfers stay on nng's threads as before.
// nng never reads while the poll runs (no nng recv is pending then) and never writes while we write inline (only
// with no write in flight, under `mu`), so the byte stream stays nng's framing. The poll is stopped on the JS thread
// before close() lets the helper thread free the stream (and its fd).
#include <dirent.h>
#include <netinet/in.h>
#include <node_api.h>
#include <sys/socket.h>
#include <uv.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "core.h"

namespace shoal_nng {

struct JsRx {
  uv_poll_t h;
  Core* core;  // holds a reference of its own, dropped in the close callback
  napi_env env;
  napi_ref cb;
  napi_async_context ctx;
  bool polling = false;
  bool dead = false;
};

namespace {

bool SameAddr(const nng_sockaddr& n, const sockaddr_storage& s) {
  if (n.s_family == NNG_AF_INET && s.ss_family == AF_INET) {
    const sockaddr_in* a = reinterpret_cast<const sockaddr_in*>(&s);
    return a->sin_port == n.s_in.sa_port && a->sin_addr.s_addr == n.s_in.sa_addr;
  }
  if (n.s_family == NNG_AF_INET6 && s.ss_family == AF_INET6) {
    const sockaddr_in6* a = reinterpret_cast<const sockaddr_in6*>(&s);
    return a->sin6_port == n.s_in6.sa_port && std::memcmp(&a->sin6_addr, n.s_in6.sa_addr, 16) == 0;
  }
  return false;
}

void StopPoll(JsRx* j) {
  if (j != nullptr && j->polling) {
    uv_poll_stop(&j->h);
    j->polling = false;
  }
}

int ErrnoToNng(int e) {
  if (e == ECONNRESET) return NNG_ECONNRESET;
  if (e == EPIPE || e == ESHUTDOWN || e == ENOTCONN) return NNG_ECONNSHUT;
  return NNG_ESYSERR | e;
}

// Hand the reads to nng's threads from one of them, not from this one: nng_stream_recv reads inline until the
// socket is empty, which for a large body would put most of its bytes on the JS thread (measured: 460-490 us of
// main-thread CPU per 1 MiB message, against 150-160 us with nng's threads reading). Single flight: only as the
// poll stops and no nng read is pending.
void Kick(Core* c) { nng_sleep_aio(0, c->kickAio); }

// One readable event (JS thread, mu held): read what the kernel has, parse it (messages go to c->sink), and
// switch to body mode, pause or end as the frames say.
void ReadSome(Core* c, JsRx* j) {
  if (c->closed || !c->jsRx || c->rxNng || c->conn == nullptr) return StopPoll(j);
  for (;;) {
    if (c->rxStart == c->rxEnd) {
      c->rxStart = c->rxEnd = 0;
    } else if (c->rxStart > 0 && kRxBuf - c->rxEnd < kJsRead) {
      std::memmove(c->rxBuf.get(), c->rxBuf.get() + c->rxStart, c->rxEnd - c->rxStart);
      c->rxEnd -= c->rxStart;
      c->rxStart = 0;
    }
    size_t want = std::min(kRxBuf - c->rxEnd, kJsRead);
    ssize_t n = recv(c->fd, c->rxBuf.get() + c->rxEnd, want, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) {
      c->post(EV_RX_END, 0, n == 0 ? NNG_ECONNSHUT : ErrnoToNng(errno));
      c->jsRx = false;
      return StopPoll(j);
    }
    c->rxEnd += static_cast<size_t>(n);
    if (!RxParse(c)) {  // bad frame: the stream was closed
      c->jsRx = false;
      return StopPoll(j);
    }
    if (c->rxBody != nullptr || static_cast<size_t>(n) == want) {
      // A large payload, or bulk arriving: nng's threads read until the traffic is sparse and small again
      // (RxDone posts EV_RX_RESUME), so big transfers keep off the JS thread.
      StopPoll(j);
      c->rxNng = true;
      return Kick(c);
    }
    if (c->rxPaused) {
      c->rxIdle = true;
      return StopPoll(j);
    }
    return;  // the poll is level-triggered: more data wakes us again
  }
}

// Calls onEvent for each collected event, in order, from a uv callback (a callback scope: microtasks run after
// each, as for events from the thread-safe function).
void Deliver(JsRx* j, std::vector<Event*>& evs) {
  if (evs.empty()) return;
  napi_env env = j->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value cb = nullptr, recv = nullptr;
  if (!j->dead) napi_get_reference_value(env, j->cb, &cb);
  napi_get_global(env, &recv);
  for (Event* ev : evs) {
    if (cb == nullptr) {  // closed meanwhile: nobody listens
      std::free(ev->data);
      delete ev;
      continue;
    }
    napi_value argv[5];
    EventArgs(Napi::Env(env), ev, argv);
    napi_value result;
    napi_make_callback(env, j->ctx, recv, cb, 5, argv, &result);
    bool pending = false;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
      napi_value err;
      napi_get_and_clear_last_exception(env, &err);
      napi_fatal_exception(env, err);  // a throwing handler: an uncaught exception, as from the thread-safe call
    }
  }
  napi_close_handle_scope(env, scope);
}

void OnReadable(uv_poll_t* h, int status, int) {
  JsRx* j = static_cast<JsRx*>(h->data);
  if (j == nullptr || j->dead) return;
  Core* c = j->core;
  std::vector<Event*> evs;
  {
    std::lock_guard<std::mutex> lk(c->mu);
    c->sink = &evs;
    if (status < 0) {
      c->post(EV_RX_END, 0, NNG_ESYSERR | (-status));
      c->jsRx = false;
      StopPoll(j);
    } else {
      ReadSome(c, j);
    }
    c->sink = nullptr;
  }
  Deliver(j, evs);
}

}  // namespace

// kickAio's callback (nng's thread): submit the pending body read.
void KickDone(void* arg) {
  Core* c = static_cast<Core*>(arg);
  std::lock_guard<std::mutex> lk(c->mu);
  if (nng_aio_result(c->kickAio) != 0 || c->closed || c->conn == nullptr || !c->rxNng) return;
  RxSubmit(c);  // sees rxPaused itself (setRxPaused(false) resubmits)
}

// The socket of a connected tcp stream: the fd whose local and peer addresses are the stream's. -1 if none.
int FindTcpFd(nng_stream* s) {
  nng_sockaddr loc, rem;
  if (nng_stream_get_addr(s, NNG_OPT_LOCADDR, &loc) != 0 || nng_stream_get_addr(s, NNG_OPT_REMADDR, &rem) != 0) return -1;
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  int found = -1;
  while (dirent* e = readdir(d)) {
    char* end = nullptr;
    long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != 0 || fd == dirfd(d)) continue;
    sockaddr_storage a{}, b{};
    socklen_t al = sizeof a, bl = sizeof b;
    if (getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&a), &al) != 0 || !SameAddr(loc, a)) continue;
    if (getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&b), &bl) != 0 || !SameAddr(rem, b)) continue;
    found = static_cast<int>(fd);
    break;
  }
  closedir(d);
  return found;
}

// A lone small frame, written from the JS thread (mu held, nothing queued, no write in flight). True: all of it is
// in the kernel. A partial write hands the rest to nng (queued as `it`, EV_SEND follows); an error or a full
// socket leaves `it` to the caller's queue.
bool TrySendInline(Core* c, const TxItem& it) {
  if (c->fd < 0 || c->closed || it.len > kSmallMessage) return false;
  size_t total = it.headLen + it.len;
  uint8_t* stage = c->txStage.get();  // free: no write in flight
  std::memcpy(stage, it.head, it.headLen);
  if (it.len > 0) std::memcpy(stage + it.headLen, it.data, it.len);
  ssize_t n;
  do {
    n = send(c->fd, stage, total, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(total)) return true;
  if (n <= 0) return false;  // nothing written: nng writes it (and reports the error, if any)
  size_t rest = total - static_cast<size_t>(n);
  c->txSpill.reset(new uint8_t[rest]);
  std::memcpy(c->txSpill.get(), stage + n, rest);
  c->txq.push_back(it);
  c->txInWrite = 1;
  c->txIov[0] = {c->txSpill.get(), rest};
  c->txNiov = 1;
  nng_aio_set_iov(c->txAio, 1, c->txIov);
  nng_stream_send(c->conn, c->txAio);
  return false;
}

// On EV_CONNECTED (JS thread): poll the socket on this thread's loop. If that fails, nng reads as before.
void StartJsRx(napi_env env, napi_value cb, Core* c) {
  uv_loop_t* loop = nullptr;
  JsRx* j = new JsRx();
  j->core = c;
  j->env = env;
  napi_value name;
  bool ok = napi_get_uv_event_loop(env, &loop) == napi_ok && napi_create_string_utf8(env, "shoal_nng", NAPI_AUTO_LENGTH, &name) == napi_ok &&
            napi_async_init(env, nullptr, name, &j->ctx) == napi_ok;
  if (ok && napi_create_reference(env, cb, 1, &j->cb) != napi_ok) {
    napi_async_destroy(env, j->ctx);
    ok = false;
  }
  std::lock_guard<std::mutex> lk(c->mu);
  if (ok && !c->closed && c->conn != nullptr && uv_poll_init(loop, &j->h, c->fd) == 0) {
    j->h.data = j;
    uv_unref(reinterpret_cast<uv_handle_t*>(&j->h));  // the thread-safe function's ref keeps the loop alive
    c->refs.fetch_add(1);
    c->jsrx = j;
    c->jsRx = true;
    j->polling = uv_poll_start(&j->h, UV_READABLE, OnReadable) == 0;
    if (j->polling) return;
    c->jsRx = false;  // fall through: nng reads
    return RxStart(c);
  }
  if (ok) {
    napi_delete_reference(env, j->cb);
    napi_async_destroy(env, j->ctx);
  }
  delete j;
  if (!c->closed && c->conn != nullptr) RxStart(c);
}

// Resume JS-thread reads after a body, or after a pause (JS thread, without mu).
void ResumeJsRx(Core* c) {
  std::lock_guard<std::mutex> lk(c->mu);
  JsRx* j = c->jsrx;
  if (j == nullptr || j->dead || !c->jsRx || c->closed) return;
  if (c->rxPaused) {
    c->rxIdle = true;
    return;
  }
  if (c->rxNng) return;  // nng's threads read (setRxPaused(false) resubmitted)
  if (!j->polling) j->polling = uv_poll_start(&j->h, UV_READABLE, OnReadable) == 0;
}

// Receive backpressure in JS mode (JS thread, mu held): stop polling until setRxPaused(false).
void PauseJsRx(Core* c) {
  JsRx* j = c->jsrx;
  if (j == nullptr || !j->polling) return;  // nng's threads read: RxSubmit or ResumeJsRx sees rxPaused
  StopPoll(j);
  c->rxIdle = true;
}

// Before close (JS thread, without mu): stop and close the poll, drop the callback reference.
void StopJsRx(Core* c) {
  JsRx* j = c->jsrx;
  if (j == nullptr) return;
  {
    std::lock_guard<std::mutex> lk(c->mu);
    c->jsRx = false;
    c->jsrx = nullptr;
  }
  j->dead = true;
  StopPoll(j);
  napi_delete_reference(j->env, j->cb);
  napi_async_destroy(j->env, j->ctx);
  uv_close(reinterpret_cast<uv_handle_t*>(&j->h), [](uv_handle_t* h) {
    JsRx* x = static_cast<JsRx*>(h->data);
    x->core->unref();
    delete x;
  });
}

}  // namespace shoal_nng
