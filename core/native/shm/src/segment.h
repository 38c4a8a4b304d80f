// shoal shared-memory pair transport: the N-API `Segment` (one per pair of ranks on the same host).
//
// One POSIX shared-memory segment per pair holds a header and two SPSC byte rings, one per direction (ring.h);
// the pair wakes each other through a unix socket and eventfds (wake.h). Methods are split by concern:
// segment.cc holds the lifecycle (create/dial, handshake, polling, close) and segment-io.cc the data path
// (send, the writer thread, take/readInto).
//
// Sends: small messages (and any message when the ring has room and the writer is idle) are copied on the JS
// thread and complete synchronously; others go to a writer thread that streams them through the ring, waiting
// for space on a futex word (with a 50 ms slice so a dead peer or a close is always noticed) and reporting each
// completion to JS through a thread-safe function.
//
// Ownership: a send's bytes belong to the JS caller, who keeps the buffer alive and unmodified until the send
// completes. Received bytes are copied into buffers owned by JS (small: V8 ArrayBuffers; large: a buffer from
// `alloc` (malloc'd, freed by its finalizer) or from the caller's allocate hook). Who may block: only the writer
// thread; the JS thread never waits except in close(), which joins a writer that wakes within one wait period.
#pragma once

#include <napi.h>
#include <uv.h>

#include <errno.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "buffer-pool.h"
#include "ring.h"

namespace shoal_shm {

constexpr int kWaitSliceMs = 50;
constexpr size_t kDirectMax = 1 << 20;  // sends up to this size may be copied on the JS thread

enum EventKind { kSendDone = 1, kSendFailed = 2 };
struct Event {
  int kind;
  double id;
  std::string error;
  std::string code;
};

struct SendJob {
  double id;
  const uint8_t* data;
  size_t len;
};

struct PollBox {
  uv_poll_t handle;
  class Segment* owner;
};

// A JS Error for a failed system call on shared-memory object `name`: message, errno, and a code JS can test.
void ThrowErrnoFor(Napi::Env env, const char* what, const std::string& name, int e);

class Segment : public Napi::ObjectWrap<Segment> {
 public:
  static Napi::Object Init(Napi::Env env, Napi::Object exports);
  // new Segment(name, create, capacity, maxMessage, spin)
  explicit Segment(const Napi::CallbackInfo& info);
  ~Segment() override;

 private:
  void ThrowErrno(Napi::Env env, const char* what) { ThrowErrnoFor(env, what, name_, errno); }
  void ThrowCode(Napi::Env env, const char* code, const std::string& msg);
  void Unmap();
  void CloseFds();
  void CopyIn(uint8_t* ringData, uint64_t pos, const uint8_t* src, size_t n) { ringCopyIn(ringData, cap_, pos, src, n); }
  void CopyOut(const uint8_t* ringData, uint64_t pos, uint8_t* dst, size_t n) { ringCopyOut(ringData, cap_, pos, dst, n); }
  // Listener: true once a dialer has claimed the segment and its wake socket is accepted.
  Napi::Value Attached(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  // start(onSendEvent(kind, id, error|undefined, code|undefined), onReadable(eof: boolean))
  Napi::Value Start(const Napi::CallbackInfo& info);
  static void OnPoll(uv_poll_t* h, int status, int events);
  static void OnEvt(uv_poll_t* h, int status, int events);
  void CallReadable(bool eof);
  static void ClosePoll(PollBox*& p);
  // Stop watching both descriptors (on EOF the socket stays readable forever; the eventfd is moot then).
  void StopPoll();
  // Disarm the peer's consumer and wake it through the socket if it was armed. Any thread of the producer side.
  void NotifyData(Ring& r);
  // send(u8, id): returns true when copied synchronously; otherwise completion arrives as kSendDone/kSendFailed.
  Napi::Value Send(const Napi::CallbackInfo& info);

  Ring* InRing() { return hdr_ ? &hdr_->ring[1 - side_] : nullptr; }
  uint8_t* InData() { return base_ + kHeaderSize + static_cast<size_t>(1 - side_) * cap_; }
  // The producer never gets more than the ring's capacity ahead of the consumer: indices that say otherwise were
  // written by something else than the pair's two ends (a corrupt or scribbled segment). Without this check a
  // consumer would take messages out of garbage for ever (the fuzzer of issue #15 found zero-length "messages"
  // growing the heap until V8 aborted). ERR_BAD_FRAME fails the connection instead.
  Napi::Value ThrowCorrupt(Napi::Env env, uint64_t h, uint64_t t);
  // take(smallMax): the next message on the JS thread.
  //  - a Uint8Array: a whole message of <= smallMax bytes was in the ring and is now consumed;
  //  - a number >= 0: the header of a larger message was consumed; fetch its body with readInto;
  //  - -1: no (whole small) message yet; -2: the connection is closed.
  // Throws (code ERR_BAD_FRAME) on a length above maxMessage. Must not be called while a body is pending.
  Napi::Value Take(const Napi::CallbackInfo& info);
  // readInto(u8, offset): copy the bytes of the pending body that are in the ring to u8[offset..]; returns the
  // count (0 when nothing new arrived). The caller tracks how many the body still needs (u8.length - offset).
  Napi::Value ReadInto(const Napi::CallbackInfo& info);
  // arm(): announce that this side waits for data (the producer will write a wake byte). Returns true when
  // bytes arrived since the last take/readInto looked, so the caller must look again before sleeping.
  Napi::Value Arm(const Napi::CallbackInfo& info);
  // spin(micros): busy-wait on the JS thread up to `micros` for bytes beyond what was last seen. Returns true
  // when some arrived. Only worth it when both ranks have a core to themselves.
  Napi::Value Spin(const Napi::CallbackInfo& info);
  // alloc(bytes): an uninitialised receive buffer from this connection's pool (recycled from a collected earlier
  // message of the same size when possible; otherwise freshly mapped). It goes back to the pool when collected.
  Napi::Value Alloc(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  void StopThreads();
  void JoinThreads();
  bool PeerDead();
  void Emit(Event* ev);
  // Wait until the ring has free space (head - tail < cap).
  bool WaitSpace(Ring& r, uint64_t head, std::string& code, std::string& reason);
  bool WriteBytes(Ring& r, uint8_t* ringData, const uint8_t* src, size_t n, std::string& code, std::string& reason);
  void SetIdle();
  void WriterLoop();

  std::string name_;
  uint8_t* base_ = nullptr;
  SegHeader* hdr_ = nullptr;
  size_t size_ = 0;
  uint64_t cap_ = 0;
  uint64_t maxMessage_ = 0;
  int spin_ = 0;
  int side_ = 0;
  int listenFd_ = -1;  // listener only, until the dialer's wake socket is accepted
  int fd_ = -1;        // the connected wake socket
  bool unlinked_ = true;
  bool started_ = false;
  std::atomic<bool> stopping_{false};
  napi_env env_ = nullptr;
  Napi::ThreadSafeFunction tsfn_;
  Napi::FunctionReference onReadable_;
  Napi::AsyncContext* asyncCtx_ = nullptr;
  PollBox* poll_ = nullptr;     // watches the socket: wake bytes before the eventfd exchange, passed fds, EOF
  PollBox* evtPoll_ = nullptr;  // watches myEvt_: the peer's wake-ups
  int myEvt_ = -1;              // eventfd the peer writes to wake this side
  std::atomic<int> peerEvt_{-1};  // eventfd of the peer (written by NotifyData on either producer thread)
  std::shared_ptr<BufferPool> pool_;
  uint64_t lastHead_ = 0;  // JS thread: incoming head as last seen by take/readInto
  std::thread writer_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<SendJob> queue_;
  bool writerBusy_ = false;  // guarded by mu_: the writer thread is copying a job into the ring
};

// Registers the named regions and tuneMalloc (region.cc) on the addon exports.
void InitRegions(Napi::Env env, Napi::Object exports);

}  // namespace shoal_shm
