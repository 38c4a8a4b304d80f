// shoal_nng: a small N-API addon that speaks nng's PAIR1 protocol (SP over tcp:// and ipc://) on libnng's
// stream layer. This file holds the JS-facing side: the `NngPair` class (one end of one pair), the delivery of
// events to JS and the module's exports. The design (why the stream layer, the wire, threading and buffer
// ownership) is described in core.h; the loops live in connect.cc, rx.cc, tx.cc and close.cc.
#include <napi.h>
#include <nng/nng.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>

#include "core.h"

namespace shoal_nng {

// Wraps an event's bytes for JS (ownership of the malloc'd data passes to its ArrayBuffer) and fills the
// arguments of onEvent(kind, id, rv, data, lens). Deletes `ev`.
void EventArgs(Napi::Env env, Event* ev, napi_value argv[5]) {
  Napi::Value data = env.Undefined();
  Napi::Value lens = env.Undefined();
  if (ev->kind == EV_MSGS) {
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(
        env, ev->data, ev->len > 0 ? ev->len : 1, [](Napi::Env, void* p) { std::free(p); });
    data = Napi::Uint8Array::New(env, ev->len, ab, 0);
    Napi::Uint32Array l = Napi::Uint32Array::New(env, ev->lens.size());
    std::memcpy(l.Data(), ev->lens.data(), ev->lens.size() * sizeof(uint32_t));
    lens = l;
  } else if (ev->kind == EV_MSG) {
    if (ev->len == 0) {
      std::free(ev->data);
      data = Napi::Uint8Array::New(env, 0);
    } else {
      Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(
          env, ev->data, ev->len, [](Napi::Env, void* p) { std::free(p); });
      data = Napi::Uint8Array::New(env, ev->len, ab, 0);
    }
  } else {
    std::free(ev->data);
  }
  argv[0] = Napi::Number::New(env, ev->kind);
  argv[1] = Napi::Number::New(env, ev->id);
  argv[2] = Napi::Number::New(env, ev->rv);
  argv[3] = data;
  argv[4] = lens;
  delete ev;
}

// Runs on the JS thread for each event posted by Core::post through the thread-safe function: calls
// onEvent(kind, id, rv, data, lens). `env` is null once the environment is torn down. EV_CONNECTED also starts the
// JS-thread reads of a tcp stream (jsrx.cc); EV_RX_RESUME resumes them and does not reach JS.
void CallJs(Napi::Env env, Napi::Function cb, Core* core, Event* ev) {
  if (env == nullptr || cb.IsEmpty()) {
    std::free(ev->data);
    delete ev;
    return;
  }
  if (ev->kind == EV_RX_RESUME) {
    delete ev;
    return ResumeJsRx(core);
  }
  if (ev->kind == EV_CONNECTED && core->fd >= 0) StartJsRx(env, cb, core);
  napi_value argv[5];
  EventArgs(env, ev, argv);
  try {
    cb.Call(5, argv);
  } catch (const Napi::Error& e) {
    // A throwing JS handler must not unwind through Node's C callback: surface it as an uncaught JS exception.
    e.ThrowAsJavaScriptException();
  }
}

namespace {

[[noreturn]] void ThrowNng(Napi::Env env, const std::string& what, int rv) {
  Napi::Error err = Napi::Error::New(env, what + ": " + nng_strerror(rv));
  err.Set("nngErrno", Napi::Number::New(env, rv));
  throw err;
}

class NngPair : public Napi::ObjectWrap<NngPair> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NngPair",
                       {
                           InstanceMethod<&NngPair::Listen>("listen"),
                           InstanceMethod<&NngPair::Dial>("dial"),
                           InstanceMethod<&NngPair::Send>("send"),
                           InstanceMethod<&NngPair::SetRxPaused>("setRxPaused"),
                           InstanceMethod<&NngPair::SetMaxMessage>("setMaxMessage"),
                           InstanceMethod<&NngPair::Close>("close"),
                           InstanceMethod<&NngPair::Ref>("ref"),
                           InstanceMethod<&NngPair::Unref>("unref"),
                       });
  }

  // new NngPair(onEvent(kind, id, rv, data), maxMessageBytes)
  explicit NngPair(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NngPair>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsFunction()) throw Napi::TypeError::New(env, "NngPair: onEvent must be a function");
    c_ = new Core();
    c_->maxMessage = static_cast<uint64_t>(info[1].As<Napi::Number>().Int64Value());
    int rv = 0;
    for (auto [aio, fn] : {std::pair<nng_aio**, void (*)(void*)>{&c_->acceptAio, AcceptDone},
                           {&c_->dialAio, DialDone},
                           {&c_->negoAio, NegoDone},
                           {&c_->rxAio, RxDone},
                           {&c_->txAio, TxDone},
                           {&c_->kickAio, KickDone}}) {
      if (rv == 0) rv = nng_aio_alloc(aio, fn, c_);
    }
    if (rv != 0) {
      for (nng_aio* a : {c_->acceptAio, c_->dialAio, c_->negoAio, c_->rxAio, c_->txAio, c_->kickAio})
        if (a) nng_aio_free(a);
      delete c_;
      c_ = nullptr;
      ThrowNng(env, "nng_aio_alloc", rv);
    }
    c_->tsfn = Tsfn::New(env, info[0].As<Napi::Function>(), "shoal_nng", 0, 1, c_, FinalizeTsfn,
                         static_cast<void*>(nullptr));
    c_->tsfn.Unref(env);
    c_->tsfnRefed = false;
  }

  ~NngPair() override {
    if (c_ != nullptr) {
      {
        std::lock_guard<std::mutex> lk(c_->mu);
        StopWrites(c_);
      }
      StopJsRx(c_);    // before the helper thread frees the stream (and its fd)
      StartClose(c_);  // collected without close(): close in the background
      c_->unref();
    }
  }

 private:
  Core* live(const Napi::CallbackInfo& info) {
    if (c_ == nullptr || c_->closeStarted.load()) throw Napi::Error::New(info.Env(), "nng pair is closed");
    return c_;
  }

  // listen(url) -> bound TCP port (0 for ipc). Starts accepting; EV_CONNECTED reports the peer.
  Napi::Value Listen(const Napi::CallbackInfo& info) {
    Core* c = live(info);
    if (c->role != Role::None) throw Napi::Error::New(info.Env(), "nng pair already listening or dialing");
    std::string url = info[0].As<Napi::String>().Utf8Value();
    nng_stream_listener* l = nullptr;
    int rv = nng_stream_listener_alloc(&l, url.c_str());
    if (rv != 0) ThrowNng(info.Env(), "nng_stream_listener_alloc " + url, rv);
    if (url.rfind("tcp", 0) == 0) {
      // Raw nng streams default to Nagle on (the SP transports turn it off): small messages would wait for ACKs.
      nng_stream_listener_set_bool(l, NNG_OPT_TCP_NODELAY, true);
      nng_stream_listener_set_bool(l, NNG_OPT_TCP_KEEPALIVE, true);
    }
    rv = nng_stream_listener_listen(l);
    if (rv != 0) {
      nng_stream_listener_free(l);
      ThrowNng(info.Env(), "listen " + url, rv);
    }
    int port = 0;
    if (url.rfind("tcp", 0) == 0) nng_stream_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port);
    std::lock_guard<std::mutex> lk(c->mu);
    c->role = Role::Listener;
    c->ipc = url.rfind("ipc://", 0) == 0;
    c->listener = l;
    StartAccept(c);
    return Napi::Number::New(info.Env(), port);
  }

  // dial(url): one connection attempt + handshake; EV_CONNECTED or EV_DIAL_FAIL (then call dial again).
  void Dial(const Napi::CallbackInfo& info) {
    Core* c = live(info);
    std::string url = info[0].As<Napi::String>().Utf8Value();
    std::lock_guard<std::mutex> lk(c->mu);
    if (c->role == Role::Listener || c->conn != nullptr || c->candidate != nullptr)
      throw Napi::Error::New(info.Env(), "nng pair: dial while listening, connected or dialing");
    if (c->dialer == nullptr) {
      int rv = nng_stream_dialer_alloc(&c->dialer, url.c_str());
      if (rv != 0) {
        c->dialer = nullptr;
        ThrowNng(info.Env(), "nng_stream_dialer_alloc " + url, rv);
      }
      if (url.rfind("tcp", 0) == 0) {
        nng_stream_dialer_set_bool(c->dialer, NNG_OPT_TCP_NODELAY, true);  // as for the listener
        nng_stream_dialer_set_bool(c->dialer, NNG_OPT_TCP_KEEPALIVE, true);
      }
      c->role = Role::Dialer;
      c->ipc = url.rfind("ipc://", 0) == 0;
    }
    nng_stream_dialer_dial(c->dialer, c->dialAio);
  }

  // send(id, bytes: Uint8Array, flush: boolean) -> boolean: queue one message, and start writing if `flush` (the
  // JS layer queues a tick's sends with flush only on the last, so they leave in one write); EV_SEND(lastId)
  // reports that every queued message up to and including lastId was handed to the kernel (rv 0) or failed (rv).
  // The caller keeps `bytes` alive and unmodified until then. Returns true when the message was written inline
  // (a lone small frame, nothing queued: it is in the kernel now, no EV_SEND covers it, `bytes` is free).
  Napi::Value Send(const Napi::CallbackInfo& info) {
    Core* c = live(info);
    // `flush` is required: a caller that omits it (a JS layer built before per-tick coalescing against this
    // addon) would queue without ever starting a write, a silent stall; make that a clear error instead.
    if (info.Length() < 3 || !info[2].IsBoolean())
      throw Napi::TypeError::New(info.Env(), "nng pair: send(id, bytes, flush) needs a boolean flush (JS layer and addon out of step? rebuild both)");
    uint32_t id = info[0].As<Napi::Number>().Uint32Value();
    Napi::Uint8Array data = info[1].As<Napi::Uint8Array>();
    bool flush = info[2].As<Napi::Boolean>().Value();
    std::lock_guard<std::mutex> lk(c->mu);
    if (c->conn == nullptr) throw Napi::Error::New(info.Env(), "nng pair: send before connected");
    if (c->txBroken != 0) {
      c->post(EV_SEND, id, c->txBroken);
      return Napi::Boolean::New(info.Env(), false);
    }
    TxItem it{id, data.Data(), data.ByteLength(), {}, 0};
    it.headLen = FrameHeader(c->ipc, it.len, it.head);
    if (flush && c->txq.empty() && c->txInWrite == 0 && TrySendInline(c, it)) return Napi::Boolean::New(info.Env(), true);
    c->txq.push_back(it);
    if (flush && c->txInWrite == 0) TxStart(c);
    return Napi::Boolean::New(info.Env(), false);
  }

  // setMaxMessage(bytes): the largest payload accepted from now on (frames already parsed are not rechecked).
  void SetMaxMessage(const Napi::CallbackInfo& info) {
    Core* c = live(info);
    c->maxMessage.store(static_cast<uint64_t>(info[0].As<Napi::Number>().Int64Value()));
  }

  // setRxPaused(bool): stop reading after the current message (receive backpressure), or resume.
  void SetRxPaused(const Napi::CallbackInfo& info) {
    Core* c = live(info);
    bool paused = info[0].ToBoolean().Value();
    {
      std::lock_guard<std::mutex> lk(c->mu);
      c->rxPaused = paused;
      if (paused) {
        if (c->jsRx) PauseJsRx(c);
        return;
      }
      if (!c->rxIdle || c->conn == nullptr || c->closed) return;
      c->rxIdle = false;
      // nng reads resume (this once on the JS thread); JS-thread reads below
      if (!c->jsRx || c->rxNng) return RxSubmit(c);
    }
    ResumeJsRx(c);
  }

  // close(): closes on a helper thread; EV_CLOSED reports the end. Idempotent.
  void Close(const Napi::CallbackInfo& info) {
    if (c_ == nullptr || c_->closeStarted.load()) return;
    if (!c_->tsfnRefed) {
      c_->tsfn.Ref(info.Env());
      c_->tsfnRefed = true;
    }
    StopJsRx(c_);  // before the helper thread frees the stream (and its fd)
    StartClose(c_);
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

  Core* c_ = nullptr;
};

Napi::Value StrError(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), nng_strerror(info[0].As<Napi::Number>().Int32Value()));
}

// The module's exports: the NngPair class, strerror and the event and error constants.
Napi::Object Exports(Napi::Env env, Napi::Object exports) {
  exports.Set("NngPair", NngPair::Init(env));
  exports.Set("strerror", Napi::Function::New(env, StrError, "strerror"));
  Napi::Object k = Napi::Object::New(env);
  auto num = [&](const char* name, double v) { k.Set(name, Napi::Number::New(env, v)); };
  num("EV_CONNECTED", EV_CONNECTED);
  num("EV_MSG", EV_MSG);
  num("EV_RX_END", EV_RX_END);
  num("EV_SEND", EV_SEND);
  num("EV_DIAL_FAIL", EV_DIAL_FAIL);
  num("EV_CLOSED", EV_CLOSED);
  num("EV_BAD_FRAME", EV_BAD_FRAME);
  num("EV_MSGS", EV_MSGS);
  num("ECLOSED", NNG_ECLOSED);
  num("ECONNSHUT", NNG_ECONNSHUT);
  num("ECONNRESET", NNG_ECONNRESET);
  num("ETIMEDOUT", NNG_ETIMEDOUT);
  k.Set("version", nng_version());
  exports.Set("constants", k);
  return exports;
}

}  // namespace

}  // namespace shoal_nng

namespace {

Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return shoal_nng::Exports(env, exports); }

}  // namespace

NODE_API_MODULE(shoal_nng, InitModule)
