// shoal_nng: a small N-API addon over libnng (Debian 1.5.2) exposing one PAIR1 socket per `NngSocket` object.
//
// Threading model (nng's habit: every async operation completes exactly once through its aio callback):
// - JS calls (send/recv/cancel/listen/dial/close) run on the JS thread and never block on the network.
// - nng completes aios and pipe events on its own threads; those callbacks touch no JS state: they package the
//   result into an `Event` and hand it to the JS thread through one thread-safe function per socket.
// - The JS thread owns the op table (`Core::ops`); nng threads only see the `Op` they were started with.
// - Closing runs on a helper thread: cancel every in-flight aio, wait until their callbacks have returned, then
//   nng_close() (libnng 1.5.2 can hang in nng_close while a large TCP send is in flight, so never on the JS thread).
//
// Buffer ownership:
// - send: the caller's bytes are copied once into a fresh nng_msg (nng owns it from nng_send_aio on; on failure
//   the aio hands it back and we free it). The caller may reuse its buffer as soon as send() returns.
// - recv: the received nng_msg is handed to JS as an external ArrayBuffer over the message body (zero copy); the
//   ArrayBuffer's finalizer frees the nng_msg when the GC collects it.
#include <napi.h>
#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>

namespace {

enum EventKind : int { EV_RECV = 1, EV_SEND = 2, EV_PIPE_ADD = 3, EV_PIPE_REM = 4, EV_CLOSED = 5 };

struct Core;

// One send or recv in flight. Created and destroyed on the JS thread; the nng aio callback only fills `rv`/`msg`.
struct Op {
  Core* core;
  uint32_t id;
  bool isRecv;
  nng_aio* aio = nullptr;
  int rv = 0;
  nng_msg* msg = nullptr;
};

// What crosses from an nng thread to the JS thread.
struct Event {
  int kind;
  uint32_t id;  // op id, or pipe id for pipe events
  Op* op;       // for EV_RECV / EV_SEND
};

void CallJs(Napi::Env env, Napi::Function cb, Core* core, Event* ev);
void FinalizeTsfn(Napi::Env env, void* data, Core* core);
using Tsfn = Napi::TypedThreadSafeFunction<Core, Event, CallJs>;

// Per-socket native state. Three references: the JS wrapper, the close path (until nng_close has returned) and
// the thread-safe function (until finalized); whichever lets go last deletes it.
struct Core {
  nng_socket sock = NNG_SOCKET_INITIALIZER;
  nng_listener listener = NNG_LISTENER_INITIALIZER;
  nng_dialer dialer = NNG_DIALER_INITIALIZER;
  Tsfn tsfn;
  std::atomic<int> refs{3};
  std::atomic<bool> closeStarted{false};
  bool tsfnRefed = true;  // JS thread only

  // JS thread only.
  std::unordered_map<uint32_t, Op*> ops;

  // Shared with nng threads: aios whose callback has not yet returned.
  std::mutex mu;
  std::condition_variable cv;
  std::unordered_set<nng_aio*> inflight;

  void unref() {
    if (refs.fetch_sub(1) == 1) delete this;
  }
};

void AioDone(void* arg) {
  Op* op = static_cast<Op*>(arg);
  Core* core = op->core;
  op->rv = nng_aio_result(op->aio);
  if (op->isRecv) {
    if (op->rv == 0) op->msg = nng_aio_get_msg(op->aio);
  } else if (op->rv != 0) {
    // A failed send gives the message back to us.
    nng_msg* m = nng_aio_get_msg(op->aio);
    if (m != nullptr) nng_msg_free(m);
  }
  Event* ev = new Event{op->isRecv ? EV_RECV : EV_SEND, op->id, op};
  if (core->tsfn.NonBlockingCall(ev) != napi_ok) {
    // The environment is being torn down: nobody will read the result. The aio itself cannot be freed from its
    // own callback, so it (and the op) is leaked; this only happens when a worker exits with sockets open.
    if (op->msg != nullptr) nng_msg_free(op->msg);
    op->msg = nullptr;
    delete ev;
  }
  std::lock_guard<std::mutex> lk(core->mu);
  core->inflight.erase(op->aio);
  core->cv.notify_all();
}

void PipeEvent(nng_pipe p, nng_pipe_ev ev, void* arg) {
  Core* core = static_cast<Core*>(arg);
  int kind = ev == NNG_PIPE_EV_ADD_POST ? EV_PIPE_ADD : EV_PIPE_REM;
  Event* e = new Event{kind, static_cast<uint32_t>(nng_pipe_id(p)), nullptr};
  if (core->tsfn.NonBlockingCall(e) != napi_ok) delete e;
}

void FreeOp(Op* op) {
  if (op->aio != nullptr) nng_aio_free(op->aio);  // waits for the callback to have returned (it has, or nearly)
  if (op->msg != nullptr) nng_msg_free(op->msg);
  delete op;
}

void CallJs(Napi::Env env, Napi::Function cb, Core* core, Event* ev) {
  if (env == nullptr || cb.IsEmpty()) {
    // Teardown: drop the event, free what it owns.
    if (ev->op != nullptr) {
      core->ops.erase(ev->op->id);
      FreeOp(ev->op);
    }
    delete ev;
    return;
  }
  Napi::Value data = env.Undefined();
  int rv = 0;
  if (ev->op != nullptr) {
    Op* op = ev->op;
    core->ops.erase(op->id);
    rv = op->rv;
    if (op->isRecv && rv == 0) {
      nng_msg* m = op->msg;
      op->msg = nullptr;
      size_t len = nng_msg_len(m);
      if (len == 0) {
        nng_msg_free(m);
        data = Napi::Uint8Array::New(env, 0);
      } else {
        Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(
            env, nng_msg_body(m), len, [](Napi::Env, void*, nng_msg* msg) { nng_msg_free(msg); }, m);
        data = Napi::Uint8Array::New(env, len, ab, 0);
      }
    }
    FreeOp(op);
  }
  int kind = ev->kind;
  uint32_t id = ev->id;
  delete ev;
  cb.Call({Napi::Number::New(env, kind), Napi::Number::New(env, id), Napi::Number::New(env, rv), data});
}

void FinalizeTsfn(Napi::Env, void*, Core* core) { core->unref(); }

// Runs on a helper thread: cancel every in-flight aio, wait for their callbacks, close the socket, report.
void CloseWorker(Core* core) {
  {
    std::unique_lock<std::mutex> lk(core->mu);
    for (nng_aio* a : core->inflight) nng_aio_cancel(a);
    core->cv.wait(lk, [core] { return core->inflight.empty(); });
  }
  if (nng_dialer_id(core->dialer) > 0) nng_dialer_close(core->dialer);
  if (nng_listener_id(core->listener) > 0) nng_listener_close(core->listener);
  nng_close(core->sock);
  Event* e = new Event{EV_CLOSED, 0, nullptr};
  if (core->tsfn.NonBlockingCall(e) != napi_ok) delete e;
  core->tsfn.Release();
  core->unref();
}

void StartClose(Core* core) {
  if (core->closeStarted.exchange(true)) return;
  std::thread(CloseWorker, core).detach();
}

[[noreturn]] void ThrowNng(Napi::Env env, const std::string& what, int rv) {
  Napi::Error err = Napi::Error::New(env, what + ": " + nng_strerror(rv));
  err.Set("nngErrno", Napi::Number::New(env, rv));
  throw err;
}

int32_t ToTimeout(const Napi::Value& v) {
  if (!v.IsNumber()) return NNG_DURATION_INFINITE;
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d < 2147483647.0)) return NNG_DURATION_INFINITE;  // Infinity / NaN
  if (d < 0) return 0;
  return static_cast<int32_t>(d);
}

class NngSocket : public Napi::ObjectWrap<NngSocket> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NngSocket",
                       {
                           InstanceMethod<&NngSocket::Listen>("listen"),
                           InstanceMethod<&NngSocket::Dial>("dial"),
                           InstanceMethod<&NngSocket::Send>("send"),
                           InstanceMethod<&NngSocket::Recv>("recv"),
                           InstanceMethod<&NngSocket::TryRecv>("tryRecv"),
                           InstanceMethod<&NngSocket::Cancel>("cancel"),
                           InstanceMethod<&NngSocket::CloseEndpoints>("closeEndpoints"),
                           InstanceMethod<&NngSocket::Close>("close"),
                           InstanceMethod<&NngSocket::Ref>("ref"),
                           InstanceMethod<&NngSocket::Unref>("unref"),
                       });
  }

  // new NngSocket(onEvent(kind, id, rv, data), recvMaxSize)
  explicit NngSocket(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NngSocket>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsFunction()) throw Napi::TypeError::New(env, "NngSocket: onEvent must be a function");
    double maxsz = info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : 0;
    core_ = new Core();
    int rv = nng_pair1_open(&core_->sock);
    if (rv != 0) {
      delete core_;
      core_ = nullptr;
      ThrowNng(env, "nng_pair1_open", rv);
    }
    // 0 means unlimited in nng 1.5.2, but newer versions default to 1 MiB and drop larger messages silently.
    rv = nng_socket_set_size(core_->sock, NNG_OPT_RECVMAXSZ, static_cast<size_t>(maxsz));
    if (rv == 0) rv = nng_pipe_notify(core_->sock, NNG_PIPE_EV_ADD_POST, PipeEvent, core_);
    if (rv == 0) rv = nng_pipe_notify(core_->sock, NNG_PIPE_EV_REM_POST, PipeEvent, core_);
    if (rv != 0) {
      nng_close(core_->sock);
      delete core_;
      core_ = nullptr;
      ThrowNng(env, "nng socket setup", rv);
    }
    core_->tsfn = Tsfn::New(env, info[0].As<Napi::Function>(), "shoal_nng", 0, 1, core_, FinalizeTsfn,
                            static_cast<void*>(nullptr));
    core_->tsfn.Unref(env);
    core_->tsfnRefed = false;
  }

  ~NngSocket() override {
    // Collected without close(): close in the background (never block the GC / JS thread).
    if (core_ != nullptr) {
      StartClose(core_);
      core_->unref();
    }
  }

 private:
  Core* live(const Napi::CallbackInfo& info) {
    if (core_ == nullptr || core_->closeStarted.load())
      throw Napi::Error::New(info.Env(), "nng socket is closed");
    return core_;
  }

  // listen(url) -> bound TCP port, or 0 for non-TCP URLs. Throws on bind errors.
  Napi::Value Listen(const Napi::CallbackInfo& info) {
    Core* c = live(info);
    std::string url = info[0].As<Napi::String>().Utf8Value();
    int rv = nng_listener_create(&c->listener, c->sock, url.c_str());
    if (rv != 0) ThrowNng(info.Env(), "nng_listener_create " + url, rv);
    rv = nng_listener_start(c->listener, 0);
    if (rv != 0) {
      nng_listener_close(c->listener);
      c->listener = NNG_LISTENER_INITIALIZER;
      ThrowNng(info.Env(), "listen " + url, rv);
    }
    int port = 0;
    if (url.rfind("tcp", 0) == 0) nng_listener_get_int(c->listener, NNG_OPT_TCP_BOUND_PORT, &port);
    return Napi::Number::New(info.Env(), port);
  }

  // dial(url, reconnectMinMs, reconnectMaxMs): starts a background dialer that keeps retrying; the connection
  // is reported by a pipe-add event.
  void Dial(const Napi::CallbackInfo& info) {
    Core* c = live(info);
    std::string url = info[0].As<Napi::String>().Utf8Value();
    int rv = nng_dialer_create(&c->dialer, c->sock, url.c_str());
    if (rv != 0) ThrowNng(info.Env(), "nng_dialer_create " + url, rv);
    nng_dialer_set_ms(c->dialer, NNG_OPT_RECONNMINT, info[1].As<Napi::Number>().Int32Value());
    nng_dialer_set_ms(c->dialer, NNG_OPT_RECONNMAXT, info[2].As<Napi::Number>().Int32Value());
    rv = nng_dialer_start(c->dialer, NNG_FLAG_NONBLOCK);
    if (rv != 0) {
      nng_dialer_close(c->dialer);
      c->dialer = NNG_DIALER_INITIALIZER;
      ThrowNng(info.Env(), "dial " + url, rv);
    }
  }

  Op* startOp(Core* c, const Napi::CallbackInfo& info, uint32_t id, bool isRecv) {
    Op* op = new Op{c, id, isRecv};
    int rv = nng_aio_alloc(&op->aio, AioDone, op);
    if (rv != 0) {
      delete op;
      ThrowNng(info.Env(), "nng_aio_alloc", rv);
    }
    c->ops.emplace(id, op);
    {
      std::lock_guard<std::mutex> lk(c->mu);
      c->inflight.insert(op->aio);
    }
    return op;
  }

  // send(id, bytes: Uint8Array, timeoutMs): copies `bytes` into a new message; completion arrives as EV_SEND.
  void Send(const Napi::CallbackInfo& info) {
    Core* c = live(info);
    uint32_t id = info[0].As<Napi::Number>().Uint32Value();
    Napi::Uint8Array data = info[1].As<Napi::Uint8Array>();
    size_t len = data.ByteLength();
    nng_msg* m = nullptr;
    int rv = nng_msg_alloc(&m, len);
    if (rv != 0) ThrowNng(info.Env(), "nng_msg_alloc", rv);
    if (len > 0) std::memcpy(nng_msg_body(m), data.Data(), len);
    Op* op;
    try {
      op = startOp(c, info, id, false);
    } catch (...) {
      nng_msg_free(m);
      throw;
    }
    nng_aio_set_timeout(op->aio, ToTimeout(info[2]));
    nng_aio_set_msg(op->aio, m);
    nng_send_aio(c->sock, op->aio);
  }

  // recv(id, timeoutMs): completion arrives as EV_RECV with the message (or an nng errno).
  void Recv(const Napi::CallbackInfo& info) {
    Core* c = live(info);
    uint32_t id = info[0].As<Napi::Number>().Uint32Value();
    Op* op = startOp(c, info, id, true);
    nng_aio_set_timeout(op->aio, ToTimeout(info[1]));
    nng_recv_aio(c->sock, op->aio);
  }

  // tryRecv() -> Uint8Array | null: a message already queued in the socket, without waiting.
  Napi::Value TryRecv(const Napi::CallbackInfo& info) {
    Core* c = live(info);
    Napi::Env env = info.Env();
    nng_msg* m = nullptr;
    int rv = nng_recvmsg(c->sock, &m, NNG_FLAG_NONBLOCK);
    if (rv == NNG_EAGAIN) return env.Null();
    if (rv != 0) ThrowNng(env, "nng_recvmsg", rv);
    size_t len = nng_msg_len(m);
    if (len == 0) {
      nng_msg_free(m);
      return Napi::Uint8Array::New(env, 0);
    }
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(
        env, nng_msg_body(m), len, [](Napi::Env, void*, nng_msg* msg) { nng_msg_free(msg); }, m);
    return Napi::Uint8Array::New(env, len, ab, 0);
  }

  // cancel(id) -> whether the op was still in flight; it then completes with NNG_ECANCELED (or its result).
  Napi::Value Cancel(const Napi::CallbackInfo& info) {
    uint32_t id = info[0].As<Napi::Number>().Uint32Value();
    if (core_ == nullptr) return Napi::Boolean::New(info.Env(), false);
    auto it = core_->ops.find(id);
    if (it == core_->ops.end()) return Napi::Boolean::New(info.Env(), false);
    nng_aio_cancel(it->second->aio);
    return Napi::Boolean::New(info.Env(), true);
  }

  // closeEndpoints(): stop the dialer from reconnecting (after the peer went away).
  void CloseEndpoints(const Napi::CallbackInfo& info) {
    Core* c = live(info);
    if (nng_dialer_id(c->dialer) > 0) {
      nng_dialer_close(c->dialer);
      c->dialer = NNG_DIALER_INITIALIZER;
    }
  }

  // close(): starts the close on a helper thread; EV_CLOSED reports the end. Idempotent.
  void Close(const Napi::CallbackInfo& info) {
    if (core_ == nullptr) return;
    if (!core_->tsfnRefed) {
      core_->tsfn.Ref(info.Env());
      core_->tsfnRefed = true;
    }
    StartClose(core_);
  }

  void Ref(const Napi::CallbackInfo& info) {
    Core* c = live(info);
    if (!c->tsfnRefed) c->tsfn.Ref(info.Env());
    c->tsfnRefed = true;
  }
  void Unref(const Napi::CallbackInfo& info) {
    Core* c = live(info);
    if (c->tsfnRefed) c->tsfn.Unref(info.Env());
    c->tsfnRefed = false;
  }

  Core* core_ = nullptr;
};

Napi::Value StrError(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), nng_strerror(info[0].As<Napi::Number>().Int32Value()));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("NngSocket", NngSocket::Init(env));
  exports.Set("strerror", Napi::Function::New(env, StrError, "strerror"));
  Napi::Object c = Napi::Object::New(env);
  c.Set("EV_RECV", Napi::Number::New(env, EV_RECV));
  c.Set("EV_SEND", Napi::Number::New(env, EV_SEND));
  c.Set("EV_PIPE_ADD", Napi::Number::New(env, EV_PIPE_ADD));
  c.Set("EV_PIPE_REM", Napi::Number::New(env, EV_PIPE_REM));
  c.Set("EV_CLOSED", Napi::Number::New(env, EV_CLOSED));
  c.Set("ETIMEDOUT", Napi::Number::New(env, NNG_ETIMEDOUT));
  c.Set("ECANCELED", Napi::Number::New(env, NNG_ECANCELED));
  c.Set("ECLOSED", Napi::Number::New(env, NNG_ECLOSED));
  c.Set("EADDRINUSE", Napi::Number::New(env, NNG_EADDRINUSE));
  c.Set("version", nng_version());
  exports.Set("constants", c);
  return exports;
}

}  // namespace

NODE_API_MODULE(shoal_nng, Init)
