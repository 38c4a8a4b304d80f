// shoal_nng: the native state of one pair end (`Core`) and the functions that drive it.
//
// The addon speaks nng's PAIR1 protocol (SP over tcp:// and ipc://) on libnng's stream layer (nng_stream_*,
// Debian libnng 1.5.2). One `NngPair` object (addon.cc) is one end of one pair: a listener that keeps the first
// peer whose SP handshake succeeds, or a dialer. Files by concern:
//   connect.cc  accept, dial and the SP handshake (a candidate stream becomes `conn`)
//   rx.cc       the receive loop: reads, frame parsing, EV_MSG / EV_MSGS
//   tx.cc       the send queue: framing, gathered writes, EV_SEND
//   close.cc    close on a helper thread, teardown when the environment goes away
//   addon.cc    the N-API class, event delivery to JS, the module's exports
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
#pragma once

#include <napi.h>
#include <nng/nng.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace shoal_nng {

enum EventKind : int {
  EV_CONNECTED = 1,  // the SP handshake with the peer succeeded; messages follow
  EV_MSG = 2,        // one whole message (data)
  EV_RX_END = 3,     // the receive side ended (rv: why); no more EV_MSG
  EV_SEND = 4,       // send `id` finished (rv)
  EV_DIAL_FAIL = 5,  // one dial attempt failed (rv); the JS layer retries
  EV_CLOSED = 6,     // close() finished; nothing follows
  EV_BAD_FRAME = 7,  // the peer sent a frame we refuse (rv: 1 too large, 2 no PAIR1 header); connection dropped
  EV_MSGS = 8,       // several small messages in one block (data) with their lengths (lens)
  EV_RX_RESUME = 9,  // internal, never reaches JS: a large body was read on nng's threads, resume JS-thread reads
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
constexpr size_t kJsRead = 64 * 1024;            // bytes per read on the JS thread (jsrx.cc)
constexpr size_t kJsBack = 16 * 1024;            // an nng read smaller than this, fully parsed, hands reads back

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

struct JsRx;

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
  nng_aio* kickAio = nullptr;  // jsrx.cc: moves the submit of a body read onto nng's threads (nng_sleep_aio 0)

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
  std::unique_ptr<uint8_t[]> txSpill;  // the unwritten rest of a partial inline send, written by nng

  // The small-message path (jsrx.cc). For a tcp stream, the socket's fd (found once connected) lets the JS thread
  // write a lone small frame inline and read headers and small frames itself from a uv_poll on its own loop, as
  // the net transport does: no hop through nng's poller and task threads and no thread-safe call per message.
  // Large payloads still go to nng's threads (zero copy, body mode), and then reads resume on the JS thread.
  int fd = -1;            // -1: ipc, or not found: every read and write goes through nng
  bool jsRx = false;      // the JS-thread path exists (the poll is set up)
  bool rxNng = false;     // with jsRx: nng's threads read for now (a large body or bulk); the poll is stopped
  std::vector<Event*>* sink = nullptr;  // set while the JS thread reads: post() collects here, delivered after
  JsRx* jsrx = nullptr;   // JS thread only: the poll and the callback reference

  void unref() {
    if (refs.fetch_sub(1) == 1) delete this;
  }
  ~Core() {
    if (rxBody != nullptr) std::free(rxBody);
  }
  // Hand an event to the JS thread. Call with `mu` held.
  void post(int kind, uint32_t id, int rv, uint8_t* data = nullptr, size_t len = 0, std::vector<uint32_t> lens = {}) {
    Event* e = new Event{kind, id, rv, data, len, std::move(lens)};
    if (sink != nullptr) {  // the JS thread is reading: it delivers these itself once it lets go of mu
      sink->push_back(e);
      return;
    }
    if (tsfnDead || tsfn.NonBlockingCall(e) != napi_ok) {  // environment torn down: nobody listens any more
      std::free(e->data);
      delete e;
    }
  }
};

// connect.cc: aio callbacks of the listener, the dialer and the handshake; StartAccept with `mu` held.
void AcceptDone(void* arg);
void DialDone(void* arg);
void NegoDone(void* arg);
void StartAccept(Core* c);

// rx.cc: the receive loop. RxStart and RxSubmit with `mu` held; RxDone is rxAio's callback.
void RxStart(Core* c);
void RxSubmit(Core* c);
bool RxParse(Core* c);  // frames out of rxBuf to events (or body mode); false: the connection was failed
void RxDone(void* arg);

// tx.cc: the send queue. TxStart (with `mu` held, no write in flight) builds and submits the next write; TxDone is
// txAio's callback.
void TxStart(Core* c);
void TxDone(void* arg);

// Writes the frame header (transport length prefix + PAIR1 hop count) for a `bodyLen`-byte message into `out`
// (13 bytes suffice); returns its size. Inline: Send (addon.cc) frames every message as it queues it.
inline size_t FrameHeader(bool ipc, uint64_t bodyLen, uint8_t* out) {
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

// jsrx.cc: the small-message path. FindTcpFd on nng's threads (once connected); TrySendInline with `mu` held on
// the JS thread (true: the whole frame went to the kernel); StartJsRx / ResumeJsRx / StopJsRx on the JS thread,
// without `mu`; PauseJsRx on the JS thread with `mu` held.
int FindTcpFd(nng_stream* s);
bool TrySendInline(Core* c, const TxItem& it);
void KickDone(void* arg);
void StartJsRx(napi_env env, napi_value cb, Core* c);
void ResumeJsRx(Core* c);
void PauseJsRx(Core* c);
void StopJsRx(Core* c);
// addon.cc: wraps an event's bytes for JS (ownership passes to the ArrayBuffer); fills argv[5].
void EventArgs(Napi::Env env, Event* ev, napi_value argv[5]);

// close.cc: StopWrites (with `mu` held) closes the streams so no write reads JS memory afterwards; StartClose
// closes everything on a helper thread (once) and reports EV_CLOSED.
void StopWrites(Core* c);
void StartClose(Core* c);

}  // namespace shoal_nng
