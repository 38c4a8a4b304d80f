// shoal_nng: a small N-API addon that speaks nng's PAIR1 protocol (SP over tcp:// and ipc://) on libnng's
// stream layer (nng_stream_*, Debian libnng 1.5.2). One `NngPair` object is one end of one pair: a listener
// that keeps the first peer whose SP handshake succeeds, or a dialer.
//
// Why the stream layer and not nng_pair1_open(): in libnng 1.5.2 the SP tcp/ipc transports resubmit a partial
// read/write after the pipe's aio was closed; nni_aio_begin() then refuses it without completing, and
// nng_close() waits forever for that aio (closing either end during a large transfer hangs; fixed upstream in
// a1bc737b "tcp: Finish receive aio on close"). Owning the framing loop we never resubmit after close, and we
// also get zero-copy sends of large messages, batched writes and reads of small ones, and zero-copy receives of
// large ones. The wire is exactly nng's, so nngcat and any nng PAIR1 peer interop.
//
// Wire (both transports): 8-byte SP header {0,'S','P',0, proto u16 BE = 0x11 (pair1), 0, 0} each way, then
// frames. tcp: u64 BE length; ipc: u8 type (1) + u64 BE length. The frame body is the PAIR1 header (u32 BE hop
// count, 1 on a direct link) followed by the payload.
//
// Threading (nng's habit: every async operation completes exactly once through its aio callback):
// - JS methods run on the JS thread and never block on the network.
// - aio callbacks run on nng's threads; they touch only `Core` under `mu` and hand results to JS through one
//   thread-safe function per object (no JS calls, no polling). They never resubmit once `closed` is set.
// - close() runs on a helper thread: mark closed, close the stream/listener/dialer (in-flight aios finish with
//   ECLOSED), nng_aio_stop every aio (waits for callbacks), free everything, report EV_CLOSED.
//
// Buffer ownership:
// - send(id, bytes): queued natively; nng's threads read `bytes` (messages above 16 KiB zero-copy, smaller ones
//   copied into a staging buffer when their write is built) until an EV_SEND covering `id`. The caller (the JS
//   layer) keeps the Uint8Array referenced and unmodified until then. Before the environment can free it without
//   close() (worker teardown), the stream is closed under its lock so no write touches it afterwards.
// - EV_MSG data: a Uint8Array over a malloc'd body owned by its ArrayBuffer (the finalizer frees it).
// - EV_MSGS data: one malloc'd block holding several small payloads (8-byte aligned), owned the same way.
#include <napi.h>
#include <nng/nng.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <deque>
#include <memory>
#include <unordered_map>
#include <vector>

namespace {

enum EventKind : int {
  EV_CONNECTED = 1,  // the SP handshake with the peer succeeded; messages follow
  EV_MSG = 2,        // one whole message (data)
  EV_RX_END = 3,     // the receive side ended (rv: why); no more EV_MSG
  EV_SEND = 4,       // send `id` finished (rv)
  EV_DIAL_FAIL = 5,  // one dial attempt failed (rv); the JS layer retries
  EV_CLOSED = 6,     // close() finished; nothing follows
  EV_BAD_FRAME = 7,  // the peer sent a frame we refuse (rv: 1 too large, 2 no PAIR1 header); connection dropped
  EV_MSGS = 8,       // several small messages in one block (data) with their lengths (lens)
};

constexpr uint16_t kPair1Proto = 0x11;
constexpr size_t kSpHeader = 8;

struct Core;

constexpr unsigned kMaxIov = 8;                  // nng 1.5.2 aios hold at most 8 iovs
constexpr size_t kSmallMessage = 16 * 1024;      // messages up to this size are copied into the stage
constexpr size_t kStageBytes = 256 * 1024 + 13;  // one write's worth of small framed messages
constexpr size_t kMaxBatch = 64;                 // messages per write
constexpr size_t kRxBuf = 256 * 1024;            // receive buffer for headers and small frames
constexpr size_t kRxSmall = 64 * 1024;           // larger payloads are read into their own buffer

// One queued send. `data` is the caller's memory: the JS layer keeps the Uint8Array referenced until EV_SEND
// covers this id, and the stream is closed (under its lock) before the environment can free it.
struct TxItem {
  uint32_t id;
  const uint8_t* data;
  size_t len;
  uint8_t head[13];
  size_t headLen;
};

struct Event {
  int kind;
  uint32_t id;
  int rv;
  uint8_t* data;  // EV_MSG: malloc'd body (may be null when len == 0); EV_MSGS: malloc'd block of payloads
  size_t len;
  std::vector<uint32_t> lens;  // EV_MSGS: payload lengths; each payload starts 8-byte aligned in the block
};

void CallJs(Napi::Env env, Napi::Function cb, Core* core, Event* ev);
void FinalizeTsfn(Napi::Env env, void* data, Core* core);
using Tsfn = Napi::TypedThreadSafeFunction<Core, Event, CallJs>;

enum class Role { None, Listener, Dialer };

struct Core {
  // Set once on the JS thread before any aio starts.
  Role role = Role::None;
  bool ipc = false;
  // Largest payload accepted; read on nng's threads, raised by JS once the peer has authenticated
  // (setMaxMessage), so a peer that is not in the job cannot make us allocate for a frame it only announces.
  std::atomic<uint64_t> maxMessage{0};
  Tsfn tsfn;
  std::atomic<int> refs{3};  // JS wrapper, close path, thread-safe function
  std::atomic<bool> closeStarted{false};
  bool tsfnRefed = true;  // JS thread only

  std::mutex mu;  // guards everything below
  bool closed = false;
  bool tsfnDead = false;  // the environment finalized the thread-safe function: never call it again
  nng_stream_listener* listener = nullptr;
  nng_stream_dialer* dialer = nullptr;
  nng_stream* candidate = nullptr;  // handshaking
  nng_stream* conn = nullptr;       // the pair's stream once connected
  nng_aio* acceptAio = nullptr;
  nng_aio* dialAio = nullptr;
  nng_aio* negoAio = nullptr;
  nng_aio* rxAio = nullptr;
  nng_aio* txAio = nullptr;

  // Handshake (candidate stream).
  uint8_t negoTx[kSpHeader];
  uint8_t negoRx[kSpHeader];
  size_t negoDone = 0;
  bool negoSending = true;

  // Receive loop. Reads go into `rxBuf` (as much as the kernel has); complete small frames are parsed out of it
  // and handed to JS in one batch per read. A frame whose payload exceeds kRxSmall switches to body mode: the
  // payload is read straight into its own malloc'd buffer (zero copy), then back to rxBuf.
  std::unique_ptr<uint8_t[]> rxBuf{new uint8_t[kRxBuf]};
  size_t rxStart = 0, rxEnd = 0;  // unparsed bytes
  uint8_t* rxBody = nullptr;      // body mode
  size_t rxBodyLen = 0, rxBodyGot = 0;
  bool rxPaused = false;  // JS has too many unclaimed messages: stop reading
  bool rxIdle = false;    // stopped because of rxPaused

  // Send queue. Each write gathers up to kMaxIov iovs from the head of the queue: runs of small messages are
  // framed and copied into `txStage`, larger ones go out zero-copy (header iov + body iov).
  std::deque<TxItem> txq;
  size_t txInWrite = 0;  // messages of txq in the current write (0: no write in flight)
  nng_iov txIov[kMaxIov];
  unsigned txNiov = 0;
  std::unique_ptr<uint8_t[]> txStage{new uint8_t[kStageBytes]};
  int txBroken = 0;  // a write failed: the stream is unusable, later sends fail with this

  void unref() {
    if (refs.fetch_sub(1) == 1) delete this;
  }
  ~Core() {
    if (rxBody != nullptr) std::free(rxBody);
  }
  // Hand an event to the JS thread. Call with `mu` held.
  void post(int kind, uint32_t id, int rv, uint8_t* data = nullptr, size_t len = 0, std::vector<uint32_t> lens = {}) {
    Event* e = new Event{kind, id, rv, data, len, std::move(lens)};
    if (tsfnDead || tsfn.NonBlockingCall(e) != napi_ok) {  // environment torn down: nobody listens any more
      std::free(e->data);
      delete e;
    }
  }
};

// ---- receive loop (all called with mu held) ----

uint64_t GetU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}

constexpr size_t Align8(size_t n) { return (n + 7) & ~static_cast<size_t>(7); }

// Submit the next read (with mu held): into the body in body mode, else into rxBuf's free tail.
void RxSubmit(Core* c) {
  if (c->rxPaused) {
    c->rxIdle = true;
    return;
  }
  nng_iov iov;
  if (c->rxBody != nullptr || c->rxBodyLen > 0) {
    iov = {c->rxBody + c->rxBodyGot, c->rxBodyLen - c->rxBodyGot};
  } else {
    if (c->rxStart == c->rxEnd) {
      c->rxStart = c->rxEnd = 0;
    } else if (c->rxStart > 0) {  // make room: a pending small frame always fits once moved to the front
      std::memmove(c->rxBuf.get(), c->rxBuf.get() + c->rxStart, c->rxEnd - c->rxStart);
      c->rxEnd -= c->rxStart;
      c->rxStart = 0;
    }
    iov = {c->rxBuf.get() + c->rxEnd, kRxBuf - c->rxEnd};
  }
  nng_aio_set_iov(c->rxAio, 1, &iov);
  nng_stream_recv(c->conn, c->rxAio);
}

void RxStart(Core* c) {
  c->rxStart = c->rxEnd = 0;
  RxSubmit(c);
}

// Fail the connection for a bad frame (with mu held).
void RxBadFrame(Core* c, int why) {
  c->post(EV_BAD_FRAME, 0, why);
  nng_stream_close(c->conn);
}

// Parse complete frames out of rxBuf; post small ones as one batch; maybe enter body mode. Returns false if
// the connection was failed.
bool RxParse(Core* c) {
  const size_t hdr = c->ipc ? 9 : 8;
  struct Small {
    size_t off, len;
  };
  std::vector<Small> smalls;
  size_t blockBytes = 0;
  bool ok = true;
  for (;;) {
    size_t avail = c->rxEnd - c->rxStart;
    if (avail < hdr) break;
    const uint8_t* h = c->rxBuf.get() + c->rxStart;
    if (c->ipc && h[0] != 1) {
      ok = false;
      RxBadFrame(c, 3);
      break;
    }
    uint64_t len = GetU64(c->ipc ? h + 1 : h);
    if (len < 4) {
      ok = false;
      RxBadFrame(c, 2);
      break;
    }
    if (len - 4 > c->maxMessage.load(std::memory_order_relaxed)) {
      ok = false;
      RxBadFrame(c, 1);
      break;
    }
    size_t payload = static_cast<size_t>(len - 4);
    if (payload <= kRxSmall) {
      if (avail < hdr + len) break;  // wait for the rest (it fits in rxBuf)
      smalls.push_back({c->rxStart + hdr + 4, payload});
      blockBytes += Align8(payload);
      c->rxStart += hdr + static_cast<size_t>(len);
      continue;
    }
    // Large: once header and hop count are in, read the payload straight into its own buffer.
    if (avail < hdr + 4) break;
    uint8_t* body = static_cast<uint8_t*>(std::malloc(payload));
    if (body == nullptr) {
      ok = false;
      c->post(EV_RX_END, 0, NNG_ENOMEM);
      nng_stream_close(c->conn);
      break;
    }
    size_t have = std::min(avail - hdr - 4, payload);
    std::memcpy(body, c->rxBuf.get() + c->rxStart + hdr + 4, have);
    c->rxStart += hdr + 4 + have;
    c->rxBody = body;
    c->rxBodyLen = payload;
    c->rxBodyGot = have;
    break;
  }
  if (!smalls.empty()) {
    uint8_t* block = static_cast<uint8_t*>(std::malloc(blockBytes > 0 ? blockBytes : 1));
    std::vector<uint32_t> lens;
    lens.reserve(smalls.size());
    size_t off = 0;
    for (const Small& m : smalls) {
      if (m.len > 0) std::memcpy(block + off, c->rxBuf.get() + m.off, m.len);
      off += Align8(m.len);
      lens.push_back(static_cast<uint32_t>(m.len));
    }
    c->post(EV_MSGS, 0, 0, block, blockBytes, std::move(lens));
  }
  if (ok && c->rxBody != nullptr && c->rxBodyGot == c->rxBodyLen) {  // the whole body was already buffered
    c->post(EV_MSG, 0, 0, c->rxBody, c->rxBodyLen);
    c->rxBody = nullptr;
    c->rxBodyLen = c->rxBodyGot = 0;
    return RxParse(c);
  }
  return ok;
}

void RxDone(void* arg) {
  Core* c = static_cast<Core*>(arg);
  std::lock_guard<std::mutex> lk(c->mu);
  int rv = nng_aio_result(c->rxAio);
  if (rv == 0 && c->closed) rv = NNG_ECLOSED;
  if (rv != 0) {
    c->post(EV_RX_END, 0, rv);
    return;
  }
  size_t n = nng_aio_count(c->rxAio);
  if (c->rxBody != nullptr) {
    c->rxBodyGot += n;
    if (c->rxBodyGot < c->rxBodyLen) return RxSubmit(c);
    c->post(EV_MSG, 0, 0, c->rxBody, c->rxBodyLen);
    c->rxBody = nullptr;
    c->rxBodyLen = c->rxBodyGot = 0;
  } else {
    c->rxEnd += n;
  }
  if (RxParse(c)) RxSubmit(c);
}

// ---- send (called with mu held) ----

// Writes the frame header (transport length prefix + PAIR1 hop count) for a `bodyLen`-byte message; returns its size.
size_t FrameHeader(bool ipc, uint64_t bodyLen, uint8_t* out) {
  uint64_t len = bodyLen + 4;
  size_t h = 0;
  if (ipc) out[h++] = 1;
  for (int i = 7; i >= 0; i--) out[h++] = static_cast<uint8_t>(len >> (8 * i));
  out[h++] = 0;
  out[h++] = 0;
  out[h++] = 0;
  out[h++] = 1;  // PAIR1 hop count: one hop on a direct link
  return h;
}

// Build the next write from the head of the queue (with mu held, no write in flight) and submit it.
void TxStart(Core* c) {
  size_t staged = 0;
  unsigned niov = 0;
  bool lastIsStage = false;
  size_t n = 0;
  for (; n < c->txq.size() && n < kMaxBatch; n++) {
    TxItem& it = c->txq[n];
    if (it.len <= kSmallMessage && staged + it.headLen + it.len <= kStageBytes) {
      if (!lastIsStage) {
        if (niov == kMaxIov) break;
        c->txIov[niov++] = {c->txStage.get() + staged, 0};
        lastIsStage = true;
      }
      std::memcpy(c->txStage.get() + staged, it.head, it.headLen);
      if (it.len > 0) std::memcpy(c->txStage.get() + staged + it.headLen, it.data, it.len);
      staged += it.headLen + it.len;
      c->txIov[niov - 1].iov_len += it.headLen + it.len;
    } else {
      if (niov + 2 > kMaxIov) break;
      c->txIov[niov++] = {it.head, it.headLen};
      c->txIov[niov++] = {const_cast<uint8_t*>(it.data), it.len};
      lastIsStage = false;
    }
  }
  c->txInWrite = n;
  c->txNiov = niov;
  nng_aio_set_iov(c->txAio, niov, c->txIov);
  nng_stream_send(c->conn, c->txAio);
}

void TxDone(void* arg) {
  Core* c = static_cast<Core*>(arg);
  std::lock_guard<std::mutex> lk(c->mu);
  int rv = nng_aio_result(c->txAio);
  if (rv == 0) {
    // Skip what was written; resubmit the rest (never after close).
    size_t done = nng_aio_count(c->txAio);
    unsigned i = 0;
    while (i < c->txNiov && done >= c->txIov[i].iov_len) done -= c->txIov[i++].iov_len;
    if (i < c->txNiov) {
      if (c->closed) {
        rv = NNG_ECLOSED;
      } else {
        c->txIov[i].iov_buf = static_cast<uint8_t*>(c->txIov[i].iov_buf) + done;
        c->txIov[i].iov_len -= done;
        std::memmove(c->txIov, c->txIov + i, (c->txNiov - i) * sizeof(nng_iov));
        c->txNiov -= i;
        nng_aio_set_iov(c->txAio, c->txNiov, c->txIov);
        nng_stream_send(c->conn, c->txAio);
        return;
      }
    }
  }
  if (rv != 0) {
    // The stream is broken: everything queued fails with it.
    c->txBroken = rv;
    uint32_t last = c->txq.back().id;
    c->txq.clear();
    c->txInWrite = 0;
    c->post(EV_SEND, last, rv);
    return;
  }
  uint32_t last = c->txq[c->txInWrite - 1].id;
  c->txq.erase(c->txq.begin(), c->txq.begin() + static_cast<long>(c->txInWrite));
  c->txInWrite = 0;
  c->post(EV_SEND, last, 0);  // covers every id up to `last`
  if (!c->txq.empty() && !c->closed) TxStart(c);
}

// ---- handshake (called with mu held) ----

void NegoSubmit(Core* c) {
  nng_iov iov;
  if (c->negoSending) {
    iov = {c->negoTx + c->negoDone, kSpHeader - c->negoDone};
    nng_aio_set_iov(c->negoAio, 1, &iov);
    nng_stream_send(c->candidate, c->negoAio);
  } else {
    iov = {c->negoRx + c->negoDone, kSpHeader - c->negoDone};
    nng_aio_set_iov(c->negoAio, 1, &iov);
    nng_stream_recv(c->candidate, c->negoAio);
  }
}

void NegoStart(Core* c, nng_stream* s) {
  c->candidate = s;
  const uint8_t hdr[kSpHeader] = {0, 'S', 'P', 0, kPair1Proto >> 8, kPair1Proto & 0xff, 0, 0};
  std::memcpy(c->negoTx, hdr, kSpHeader);
  c->negoDone = 0;
  c->negoSending = true;
  nng_aio_set_timeout(c->negoAio, 10000);
  NegoSubmit(c);
}

void StartAccept(Core* c) { nng_stream_listener_accept(c->listener, c->acceptAio); }

void NegoFailed(Core* c, int rv) {
  nng_stream_close(c->candidate);
  nng_stream_free(c->candidate);
  c->candidate = nullptr;
  if (c->role == Role::Dialer) c->post(EV_DIAL_FAIL, 0, rv);
  // A listener just waits for the next peer (its accept loop is still running).
}

void NegoDone(void* arg) {
  Core* c = static_cast<Core*>(arg);
  std::lock_guard<std::mutex> lk(c->mu);
  int rv = nng_aio_result(c->negoAio);
  if (rv == 0 && c->closed) rv = NNG_ECLOSED;
  if (c->candidate == nullptr) return;
  if (rv != 0) return NegoFailed(c, rv);
  c->negoDone += nng_aio_count(c->negoAio);
  if (c->negoDone < kSpHeader) return NegoSubmit(c);
  if (c->negoSending) {
    c->negoSending = false;
    c->negoDone = 0;
    return NegoSubmit(c);
  }
  const uint8_t* r = c->negoRx;
  uint16_t peerProto = static_cast<uint16_t>((r[4] << 8) | r[5]);
  if (r[0] != 0 || r[1] != 'S' || r[2] != 'P' || r[3] != 0 || r[6] != 0 || r[7] != 0 || peerProto != kPair1Proto) {
    return NegoFailed(c, NNG_EPROTO);
  }
  c->conn = c->candidate;
  c->candidate = nullptr;
  c->post(EV_CONNECTED, 0, 0);
  RxStart(c);
}

void AcceptDone(void* arg) {
  Core* c = static_cast<Core*>(arg);
  std::lock_guard<std::mutex> lk(c->mu);
  int rv = nng_aio_result(c->acceptAio);
  if (c->closed) {
    if (rv == 0) {
      nng_stream* s = static_cast<nng_stream*>(nng_aio_get_output(c->acceptAio, 0));
      nng_stream_close(s);
      nng_stream_free(s);
    }
    return;
  }
  if (rv == 0) {
    nng_stream* s = static_cast<nng_stream*>(nng_aio_get_output(c->acceptAio, 0));
    if (c->conn != nullptr || c->candidate != nullptr) {
      // Pair semantics: one peer only. Drop extra connections before the handshake, so their dial fails.
      nng_stream_close(s);
      nng_stream_free(s);
    } else {
      NegoStart(c, s);
    }
  } else if (rv == NNG_ECLOSED) {
    return;
  }
  // Keep accepting (to turn away extra dialers promptly); back off briefly on errors like EMFILE.
  if (rv != 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  StartAccept(c);
}

void DialDone(void* arg) {
  Core* c = static_cast<Core*>(arg);
  std::lock_guard<std::mutex> lk(c->mu);
  int rv = nng_aio_result(c->dialAio);
  if (rv == 0 && c->closed) {
    nng_stream* s = static_cast<nng_stream*>(nng_aio_get_output(c->dialAio, 0));
    nng_stream_close(s);
    nng_stream_free(s);
    return;
  }
  if (rv != 0) {
    if (!c->closed) c->post(EV_DIAL_FAIL, 0, rv);
    return;
  }
  NegoStart(c, static_cast<nng_stream*>(nng_aio_get_output(c->dialAio, 0)));
}

void CallJs(Napi::Env env, Napi::Function cb, Core* core, Event* ev) {
  if (env == nullptr || cb.IsEmpty()) {
    std::free(ev->data);
    delete ev;
    return;
  }
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
  }
  int kind = ev->kind, rv = ev->rv;
  uint32_t id = ev->id;
  delete ev;
  try {
    cb.Call({Napi::Number::New(env, kind), Napi::Number::New(env, id), Napi::Number::New(env, rv), data, lens});
  } catch (const Napi::Error& e) {
    // A throwing JS handler must not unwind through Node's C callback: surface it as an uncaught JS exception.
    e.ThrowAsJavaScriptException();
  }
}

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
  {
    std::lock_guard<std::mutex> lk(core->mu);
    core->tsfnDead = true;
    StopWrites(core);
  }
  core->unref();
}

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
  for (nng_aio* a : {c->acceptAio, c->dialAio, c->negoAio, c->rxAio, c->txAio}) {
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
  for (nng_aio* a : {c->acceptAio, c->dialAio, c->negoAio, c->rxAio, c->txAio}) {
    if (a != nullptr) nng_aio_free(a);
  }
  {
    std::lock_guard<std::mutex> lk(c->mu);
    c->post(EV_CLOSED, 0, 0);
    if (!c->tsfnDead) c->tsfn.Release();
  }
  c->unref();
}

void StartClose(Core* c) {
  if (c->closeStarted.exchange(true)) return;
  std::thread(CloseWorker, c).detach();
}

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
                           {&c_->txAio, TxDone}}) {
      if (rv == 0) rv = nng_aio_alloc(aio, fn, c_);
    }
    if (rv != 0) {
      for (nng_aio* a : {c_->acceptAio, c_->dialAio, c_->negoAio, c_->rxAio, c_->txAio})
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

  // send(id, bytes: Uint8Array, flush: boolean): queue one message, and start writing if `flush` (the JS layer
  // queues a tick's sends with flush only on the last, so they leave in one write); EV_SEND(lastId) reports that every queued message up to and
  // including lastId was handed to the kernel (rv 0) or failed (rv). The caller keeps `bytes` alive and unmodified
  // until then.
  void Send(const Napi::CallbackInfo& info) {
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
      return;
    }
    TxItem it{id, data.Data(), data.ByteLength(), {}, 0};
    it.headLen = FrameHeader(c->ipc, it.len, it.head);
    c->txq.push_back(it);
    if (flush && c->txInWrite == 0) TxStart(c);
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
    std::lock_guard<std::mutex> lk(c->mu);
    c->rxPaused = paused;
    if (!paused && c->rxIdle && c->conn != nullptr && !c->closed) {
      c->rxIdle = false;
      RxSubmit(c);
    }
  }

  // close(): closes on a helper thread; EV_CLOSED reports the end. Idempotent.
  void Close(const Napi::CallbackInfo& info) {
    if (c_ == nullptr || c_->closeStarted.load()) return;
    if (!c_->tsfnRefed) {
      c_->tsfn.Ref(info.Env());
      c_->tsfnRefed = true;
    }
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

Napi::Object Init(Napi::Env env, Napi::Object exports) {
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

NODE_API_MODULE(shoal_nng, Init)
