// shoal shared-memory pair transport.
//
// One POSIX shared-memory segment per pair of ranks on the same host. The segment holds a header and two
// single-producer/single-consumer byte rings, one per direction. Messages are framed as [u64 length][bytes]
// and may be larger than the ring: they stream through it in chunks.
//
// Threads (per connection):
//   - a reader thread drains the incoming ring into freshly allocated buffers and hands each whole message to
//     JS through a thread-safe function (the JS side owns the buffer; it is freed by the ArrayBuffer finalizer);
//   - a writer thread copies queued sends into the outgoing ring and reports each completion to JS.
// Waiting: a short spin, then futex waits on sequence words in the shared header (shared futexes work across
// processes), with a 50 ms cap so that a dead peer (kill(pid, 0) == ESRCH) or a close is always noticed.
//
// Ownership: a send's bytes belong to the JS caller, who keeps the buffer alive and unmodified until the send
// completes. Who may block: only the two threads; the JS thread never waits except in close(), which joins
// threads that wake within one wait period.
#include <napi.h>
#include <malloc.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

constexpr uint32_t kMagic = 0x4c4f4853;  // "SHOL"
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderSize = 4096;
constexpr int kWaitSliceMs = 50;
constexpr size_t kDirectMax = 256 * 1024;  // sends up to this size may be copied on the JS thread

struct alignas(64) Ring {
  uint64_t head;  // bytes produced so far (written only by the producer)
  char pad0[56];
  uint64_t tail;  // bytes consumed so far (written only by the consumer)
  char pad1[56];
  uint32_t dataSeq;      // futex word: bumped after head advances
  uint32_t spaceSeq;     // futex word: bumped after tail advances
  uint32_t dataWaiters;  // consumer is (about to be) asleep on dataSeq
  uint32_t spaceWaiters; // producer is (about to be) asleep on spaceSeq
  uint32_t closed;       // producer side closed
  char pad2[44];
};

struct SegHeader {
  uint32_t magic;
  uint32_t version;
  uint64_t capacity;  // bytes per ring, power of two
  int32_t pid[2];     // [0] listener, [1] dialer
  uint32_t attached;  // 0 until a dialer claims the segment
  uint32_t pad;
  Ring ring[2];  // ring[s] is written by side s and read by side 1 - s
};
static_assert(sizeof(SegHeader) <= kHeaderSize, "segment header too large");

template <typename T> inline T load(T* p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
template <typename T> inline void store(T* p, T v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
template <typename T> inline T add(T* p, T v) { return __atomic_add_fetch(p, v, __ATOMIC_SEQ_CST); }

inline void futexWait(uint32_t* addr, uint32_t val, int ms) {
  timespec ts{ms / 1000, (ms % 1000) * 1000000L};
  syscall(SYS_futex, addr, FUTEX_WAIT, val, &ts, nullptr, 0);
}
inline void futexWake(uint32_t* addr) { syscall(SYS_futex, addr, FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0); }
inline void cpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

enum EventKind { kMessage = 0, kSendDone = 1, kSendFailed = 2, kRecvFailed = 3 };
struct Event {
  int kind;
  double id;
  uint8_t* data;
  size_t len;
  std::string error;
  std::string code;
  // kMessage only: further whole messages that were already in the ring, delivered in the same call.
  std::vector<std::pair<uint8_t*, size_t>> more;
  // kMessage only: decremented when delivered, so tryRecv never overtakes a message still in the queue.
  std::atomic<int>* inflight = nullptr;
};

struct SendJob {
  double id;
  const uint8_t* data;
  size_t len;
};

class Segment : public Napi::ObjectWrap<Segment> {
 public:
  static Napi::Object Init(Napi::Env env, Napi::Object exports) {
    Napi::Function fn = DefineClass(env, "Segment",
                                    {
                                        InstanceMethod("attached", &Segment::Attached),
                                        InstanceMethod("start", &Segment::Start),
                                        InstanceMethod("send", &Segment::Send),
                                        InstanceMethod("tryRecv", &Segment::TryRecv),
                                        InstanceMethod("close", &Segment::Close),
                                        InstanceMethod("info", &Segment::Info),
                                    });
    exports.Set("Segment", fn);
    return exports;
  }

  // new Segment(name, create, capacity, maxMessage, spin)
  explicit Segment(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Segment>(info) {
    Napi::Env env = info.Env();
    name_ = info[0].As<Napi::String>().Utf8Value();
    bool create = info[1].As<Napi::Boolean>().Value();
    uint64_t cap = static_cast<uint64_t>(info[2].As<Napi::Number>().DoubleValue());
    maxMessage_ = static_cast<uint64_t>(info[3].As<Napi::Number>().DoubleValue());
    spin_ = info[4].As<Napi::Number>().Int32Value();
    if (create) {
      if (cap < 4096 || (cap & (cap - 1)) != 0) {
        Napi::RangeError::New(env, "shm capacity must be a power of two >= 4096").ThrowAsJavaScriptException();
        return;
      }
      int fd = shm_open(name_.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
      if (fd < 0) { ThrowErrno(env, "shm_open(create)"); return; }
      size_ = kHeaderSize + 2 * cap;
      if (ftruncate(fd, static_cast<off_t>(size_)) != 0) {
        int e = errno;
        close(fd);
        shm_unlink(name_.c_str());
        errno = e;
        { ThrowErrno(env, "ftruncate"); return; }
      }
      base_ = static_cast<uint8_t*>(mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
      close(fd);
      if (base_ == MAP_FAILED) {
        base_ = nullptr;
        shm_unlink(name_.c_str());
        { ThrowErrno(env, "mmap"); return; }
      }
      hdr_ = reinterpret_cast<SegHeader*>(base_);
      memset(hdr_, 0, sizeof(SegHeader));
      hdr_->version = kVersion;
      hdr_->capacity = cap;
      hdr_->pid[0] = getpid();
      side_ = 0;
      unlinked_ = false;
      store(&hdr_->magic, kMagic);  // publish last
    } else {
      int fd = shm_open(name_.c_str(), O_RDWR, 0600);
      if (fd < 0) { ThrowErrno(env, "shm_open"); return; }
      struct stat st;
      if (fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) < kHeaderSize) {
        close(fd);
        { ThrowCode(env, "ENOTREADY", "segment not initialised yet"); return; }
      }
      size_ = static_cast<size_t>(st.st_size);
      base_ = static_cast<uint8_t*>(mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
      close(fd);
      if (base_ == MAP_FAILED) {
        base_ = nullptr;
        { ThrowErrno(env, "mmap"); return; }
      }
      hdr_ = reinterpret_cast<SegHeader*>(base_);
      if (load(&hdr_->magic) != kMagic) {
        Unmap();
        { ThrowCode(env, "ENOTREADY", "segment not initialised yet"); return; }
      }
      if (hdr_->version != kVersion || kHeaderSize + 2 * hdr_->capacity != size_) {
        Unmap();
        { ThrowCode(env, "EBADSEG", "segment has a wrong version or size"); return; }
      }
      uint32_t expected = 0;
      if (!__atomic_compare_exchange_n(&hdr_->attached, &expected, 1u, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
        Unmap();
        { ThrowCode(env, "EBUSY", "segment already has a peer"); return; }
      }
      store(&hdr_->pid[1], static_cast<int32_t>(getpid()));
      futexWake(&hdr_->attached);
      // Both ends are mapped now: remove the name so a crash leaves nothing behind in /dev/shm.
      shm_unlink(name_.c_str());
      unlinked_ = true;
      side_ = 1;
    }
    cap_ = hdr_->capacity;
  }

  ~Segment() override {
    StopThreads();
    Unmap();
  }

 private:
  void ThrowErrno(Napi::Env env, const char* what) {
    int e = errno;
    Napi::Error err = Napi::Error::New(env, std::string(what) + " " + name_ + ": " + strerror(e));
    err.Set("errno", Napi::Number::New(env, e));
    err.Set("code", Napi::String::New(env, e == ENOENT ? "ENOENT" : e == EEXIST ? "EEXIST" : "ESHM"));
    err.ThrowAsJavaScriptException();
  }
  void ThrowCode(Napi::Env env, const char* code, const std::string& msg) {
    Napi::Error err = Napi::Error::New(env, msg + " (" + name_ + ")");
    err.Set("code", Napi::String::New(env, code));
    err.ThrowAsJavaScriptException();
  }
  void Unmap() {
    if (base_) {
      munmap(base_, size_);
      base_ = nullptr;
      hdr_ = nullptr;
    }
  }

  Napi::Value Attached(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), hdr_ && load(&hdr_->attached) == 1 && load(&hdr_->pid[1]) != 0);
  }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("name", name_);
    o.Set("side", side_);
    o.Set("capacity", static_cast<double>(cap_));
    if (hdr_) {
      o.Set("pid", hdr_->pid[side_]);
      o.Set("peerPid", load(&hdr_->pid[1 - side_]));
    }
    return o;
  }

  // start(callback(kind, id, buffer|undefined, error|undefined, code|undefined))
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (started_ || !hdr_) {
      Napi::Error::New(env, "segment already started or closed").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    // The dialer unlinks the name once it is mapped; the listener does too, in case it raced.
    if (!unlinked_) {
      shm_unlink(name_.c_str());
      unlinked_ = true;
    }
    tsfn_ = Napi::ThreadSafeFunction::New(env, info[0].As<Napi::Function>(), "shoal-shm", 0, 1);
    tsfn_.Unref(env);
    started_ = true;
    reader_ = std::thread([this] { ReaderLoop(); });
    writer_ = std::thread([this] { WriterLoop(); });
    return env.Undefined();
  }

  // send(u8, id): queue; completion arrives as kSendDone / kSendFailed with the same id.
  Napi::Value Send(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Uint8Array a = info[0].As<Napi::Uint8Array>();
    double id = info[1].As<Napi::Number>().DoubleValue();
    {
      std::lock_guard<std::mutex> lk(mu_);
      // Fast path: small message, idle writer, room in the ring: copy it now on this thread and report
      // completion synchronously (returns true), sparing a thread hop.
      if (hdr_ && queue_.empty() && !writerBusy_ && !stopping_.load() && a.ByteLength() <= kDirectMax) {
        Ring& r = hdr_->ring[side_];
        uint64_t need = a.ByteLength() + sizeof(uint64_t);
        if (cap_ - (r.head - load(&r.tail)) >= need && !load(&hdr_->ring[1 - side_].closed)) {
          uint8_t* data = base_ + kHeaderSize + static_cast<size_t>(side_) * cap_;
          std::string code, reason;
          uint64_t len = a.ByteLength();
          WriteBytes(r, data, reinterpret_cast<uint8_t*>(&len), sizeof(len), code, reason);
          WriteBytes(r, data, a.Data(), a.ByteLength(), code, reason);
          return Napi::Boolean::New(env, true);
        }
      }
      queue_.push_back(SendJob{id, a.Data(), a.ByteLength()});
    }
    cv_.notify_one();
    return Napi::Boolean::New(env, false);
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (!unlinked_ && hdr_) {
      shm_unlink(name_.c_str());
      unlinked_ = true;
    }
    StopThreads();
    if (started_) {
      tsfn_.Release();
      started_ = false;
    }
    Unmap();
    return info.Env().Undefined();
  }

  void StopThreads() {
    if (stopping_.exchange(true)) {
      JoinThreads();
      return;
    }
    if (hdr_) {
      Ring& mine = hdr_->ring[side_];
      Ring& theirs = hdr_->ring[1 - side_];
      store(&mine.closed, 1u);
      add(&mine.dataSeq, 1u);
      futexWake(&mine.dataSeq);
      add(&theirs.dataSeq, 1u);
      futexWake(&theirs.dataSeq);
      add(&mine.spaceSeq, 1u);
      futexWake(&mine.spaceSeq);
      add(&theirs.spaceSeq, 1u);
      futexWake(&theirs.spaceSeq);
    }
    cv_.notify_all();
    JoinThreads();
  }
  void JoinThreads() {
    if (reader_.joinable()) reader_.join();
    if (writer_.joinable()) writer_.join();
  }

  bool PeerDead() {
    int32_t pid = load(&hdr_->pid[1 - side_]);
    if (pid <= 0) return false;
    return kill(pid, 0) != 0 && errno == ESRCH;
  }

  void Emit(Event* ev) {
    napi_status st = tsfn_.BlockingCall(ev, [](Napi::Env env, Napi::Function cb, Event* e) {
      if (env == nullptr || cb.IsEmpty()) {  // environment teardown: drop the event
        if (e->kind == kMessage) {
          free(e->data);
          for (auto& m : e->more) free(m.first);
        }
        delete e;
        return;
      }
      auto wrap = [&env](uint8_t* data, size_t len) -> Napi::Value {
        if (len == 0) return Napi::Uint8Array::New(env, 0);
        Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, data, len, [](Napi::Env, void* p) { free(p); });
        return Napi::Uint8Array::New(env, len, ab, 0);
      };
      Napi::Value buf = env.Undefined();
      if (e->kind == kMessage) {
        if (e->inflight) e->inflight->fetch_sub(1);
        if (e->more.empty()) {
          buf = wrap(e->data, e->len);
        } else {
          Napi::Array arr = Napi::Array::New(env, e->more.size() + 1);
          arr.Set(uint32_t(0), wrap(e->data, e->len));
          for (size_t i = 0; i < e->more.size(); i++) arr.Set(uint32_t(i + 1), wrap(e->more[i].first, e->more[i].second));
          buf = arr;
        }
      }
      Napi::Value err = e->error.empty() ? env.Undefined() : Napi::String::New(env, e->error);
      Napi::Value code = e->code.empty() ? env.Undefined() : Napi::String::New(env, e->code);
      napi_value argv[5] = {Napi::Number::New(env, e->kind), Napi::Number::New(env, e->id), buf, err, code};
      napi_value result;
      // Raw call: during shutdown JS may not run; ignore the status instead of aborting the process.
      napi_call_function(env, env.Undefined(), cb, 5, argv, &result);
      delete e;
    });
    if (st != napi_ok) {
      if (ev->kind == kMessage) {
        free(ev->data);
        for (auto& m : ev->more) free(m.first);
      }
      delete ev;
    }
  }

  // Wait until ring.head != seen (data to read). Returns false on stop, peer close or peer death (reason set).
  bool WaitData(Ring& r, uint64_t seen, std::string& code, std::string& reason) {
    for (int i = 0; i < spin_; i++) {
      if (load(&r.head) != seen) return true;
      cpuRelax();
    }
    for (;;) {
      if (stopping_.load()) {
        code = "ERR_CLOSED";
        reason = "connection closed";
        return false;
      }
      uint32_t seq = load(&r.dataSeq);
      add(&r.dataWaiters, 1u);
      if (load(&r.head) != seen) {
        add(&r.dataWaiters, static_cast<uint32_t>(-1));
        return true;
      }
      if (load(&r.closed)) {
        add(&r.dataWaiters, static_cast<uint32_t>(-1));
        if (load(&r.head) != seen) return true;
        code = "ERR_PEER_CLOSED";
        reason = "peer closed the shared-memory connection";
        return false;
      }
      futexWait(&r.dataSeq, seq, kWaitSliceMs);
      add(&r.dataWaiters, static_cast<uint32_t>(-1));
      if (load(&r.head) != seen) return true;
      if (PeerDead()) {
        code = "ERR_PEER_CLOSED";
        reason = "peer process " + std::to_string(load(&hdr_->pid[1 - side_])) + " is gone";
        return false;
      }
    }
  }

  // Wait until the ring has free space (head - tail < cap).
  bool WaitSpace(Ring& r, uint64_t head, std::string& code, std::string& reason) {
    Ring& peerRing = hdr_->ring[1 - side_];
    for (int i = 0; i < spin_; i++) {
      if (head - load(&r.tail) < cap_) return true;
      cpuRelax();
    }
    for (;;) {
      if (stopping_.load()) {
        code = "ERR_CLOSED";
        reason = "connection closed";
        return false;
      }
      uint32_t seq = load(&r.spaceSeq);
      add(&r.spaceWaiters, 1u);
      if (head - load(&r.tail) < cap_) {
        add(&r.spaceWaiters, static_cast<uint32_t>(-1));
        return true;
      }
      if (load(&peerRing.closed)) {
        add(&r.spaceWaiters, static_cast<uint32_t>(-1));
        code = "ERR_PEER_CLOSED";
        reason = "peer closed the shared-memory connection";
        return false;
      }
      futexWait(&r.spaceSeq, seq, kWaitSliceMs);
      add(&r.spaceWaiters, static_cast<uint32_t>(-1));
      if (head - load(&r.tail) < cap_) return true;
      if (PeerDead()) {
        code = "ERR_PEER_CLOSED";
        reason = "peer process " + std::to_string(load(&hdr_->pid[1 - side_])) + " is gone";
        return false;
      }
    }
  }

  bool ReadBytes(Ring& r, uint8_t* ringData, uint8_t* dst, size_t n, std::string& code, std::string& reason) {
    size_t got = 0;
    uint64_t t = r.tail;
    while (got < n) {
      uint64_t h = load(&r.head);
      if (h == t) {
        if (!WaitData(r, t, code, reason)) return false;
        continue;
      }
      uint64_t off = t & (cap_ - 1);
      size_t chunk = static_cast<size_t>(h - t);
      if (chunk > n - got) chunk = n - got;
      if (chunk > cap_ - off) chunk = static_cast<size_t>(cap_ - off);
      memcpy(dst + got, ringData + off, chunk);
      got += chunk;
      t += chunk;
      store(&r.tail, t);
      add(&r.spaceSeq, 1u);
      if (load(&r.spaceWaiters)) futexWake(&r.spaceSeq);
    }
    return true;
  }

  bool WriteBytes(Ring& r, uint8_t* ringData, const uint8_t* src, size_t n, std::string& code, std::string& reason) {
    size_t put = 0;
    uint64_t h = r.head;
    while (put < n) {
      if (stopping_.load()) {
        code = "ERR_CLOSED";
        reason = "connection closed during a send";
        return false;
      }
      uint64_t used = h - load(&r.tail);
      if (used >= cap_) {
        if (!WaitSpace(r, h, code, reason)) return false;
        continue;
      }
      uint64_t off = h & (cap_ - 1);
      size_t chunk = static_cast<size_t>(cap_ - used);
      if (chunk > n - put) chunk = n - put;
      if (chunk > cap_ - off) chunk = static_cast<size_t>(cap_ - off);
      memcpy(ringData + off, src + put, chunk);
      put += chunk;
      h += chunk;
      store(&r.head, h);
      add(&r.dataSeq, 1u);
      if (load(&r.dataWaiters)) futexWake(&r.dataSeq);
    }
    return true;
  }

  // tryRecv(pollMicros): on the JS thread, take the next message if it is wholly in the ring, spinning up to
  // pollMicros for it to arrive. Returns a Uint8Array, or undefined (then the reader thread delivers it).
  // Never overtakes a message the reader thread has already queued for JS (inflight_ > 0).
  Napi::Value TryRecv(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!hdr_ || !started_) return env.Undefined();
    double pollUs = info[0].As<Napi::Number>().DoubleValue();
    int peer = 1 - side_;
    Ring& r = hdr_->ring[peer];
    uint8_t* data = base_ + kHeaderSize + static_cast<size_t>(peer) * cap_;
    timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    jsPolling_.store(true);
    uint8_t* buf = nullptr;
    uint64_t len = 0;
    bool got = false;
    for (uint32_t spins = 0;; spins++) {
      // A message already queued for JS arrives through the event loop, which cannot run while we spin.
      if (inflight_.load() > 0) break;
      if (load(&r.head) - load(&r.tail) >= sizeof(uint64_t) && rmu_.try_lock()) {
        uint64_t t = r.tail;
        uint64_t avail = load(&r.head) - t;
        if (inflight_.load() == 0 && avail >= sizeof(uint64_t)) {
          for (size_t i = 0; i < sizeof(len); i++) reinterpret_cast<uint8_t*>(&len)[i] = data[(t + i) & (cap_ - 1)];
          if (len <= maxMessage_ && avail >= sizeof(uint64_t) + len) {
            buf = len ? static_cast<uint8_t*>(malloc(len)) : nullptr;
            if (!len || buf) {
              std::string code, reason;
              uint64_t skip;
              ReadBytes(r, data, reinterpret_cast<uint8_t*>(&skip), sizeof(skip), code, reason);
              ReadBytes(r, data, buf, len, code, reason);
              got = true;
            }
          }
        }
        rmu_.unlock();
        if (got) break;
      }
      if ((spins & 63) == 0) {
        timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double us = (now.tv_sec - t0.tv_sec) * 1e6 + (now.tv_nsec - t0.tv_nsec) / 1e3;
        if (us >= pollUs) break;
      }
      cpuRelax();
    }
    jsPolling_.store(false);
    if (!got) return env.Undefined();
    if (len == 0) return Napi::Uint8Array::New(env, 0);
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, buf, len, [](Napi::Env, void* p) { free(p); });
    return Napi::Uint8Array::New(env, len, ab, 0);
  }

  void ReaderLoop() {
    int peer = 1 - side_;
    Ring& r = hdr_->ring[peer];
    uint8_t* data = base_ + kHeaderSize + static_cast<size_t>(peer) * cap_;
    std::string code, reason;
    for (;;) {
      // Wait for data without holding the consumer lock, then let a polling JS thread go first.
      uint64_t seen = load(&r.tail);
      if (load(&r.head) == seen && !WaitData(r, seen, code, reason)) break;
      for (int i = 0; jsPolling_.load() && i < 10000; i++) sched_yield();
      std::unique_lock<std::mutex> lk(rmu_);
      if (load(&r.head) == r.tail) continue;  // the JS thread took it
      uint64_t len = 0;
      if (!ReadBytes(r, data, reinterpret_cast<uint8_t*>(&len), sizeof(len), code, reason)) break;
      if (len > maxMessage_) {
        code = "ERR_BAD_FRAME";
        reason = "message of " + std::to_string(len) + " bytes exceeds the limit of " + std::to_string(maxMessage_);
        break;
      }
      uint8_t* buf = nullptr;
      if (len > 0) {
        buf = static_cast<uint8_t*>(malloc(len));
        if (!buf) {
          code = "ERR_TRANSPORT";
          reason = "out of memory for a " + std::to_string(len) + "-byte message";
          break;
        }
      }
      if (!ReadBytes(r, data, buf, len, code, reason)) {
        free(buf);
        if (code == "ERR_PEER_CLOSED") reason += " in the middle of a message";
        break;
      }
      Event* ev = new Event{kMessage, 0, buf, static_cast<size_t>(len), "", "", {}};
      // Batch: take every further message that is already complete in the ring (bounded), one JS call for all.
      while (ev->more.size() < 256) {
        uint64_t t = r.tail;
        uint64_t avail = load(&r.head) - t;
        if (avail < sizeof(uint64_t)) break;
        uint64_t next = 0;
        for (size_t i = 0; i < sizeof(next); i++) reinterpret_cast<uint8_t*>(&next)[i] = data[(t + i) & (cap_ - 1)];
        if (next > maxMessage_ || avail < sizeof(uint64_t) + next || next > (1u << 20)) break;
        uint8_t* nb = next ? static_cast<uint8_t*>(malloc(next)) : nullptr;
        if (next && !nb) break;
        ReadBytes(r, data, reinterpret_cast<uint8_t*>(&next), sizeof(next), code, reason);
        ReadBytes(r, data, nb, next, code, reason);
        ev->more.emplace_back(nb, static_cast<size_t>(next));
      }
      ev->inflight = &inflight_;
      inflight_.fetch_add(1);
      lk.unlock();
      Emit(ev);
    }
    if (code != "ERR_CLOSED") Emit(new Event{kRecvFailed, 0, nullptr, 0, reason, code, {}});
  }

  void SetIdle() {
    std::lock_guard<std::mutex> lk(mu_);
    writerBusy_ = false;
  }

  void WriterLoop() {
    Ring& r = hdr_->ring[side_];
    uint8_t* data = base_ + kHeaderSize + static_cast<size_t>(side_) * cap_;
    std::string code, reason;
    bool broken = false;
    for (;;) {
      SendJob job;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [this] { return stopping_.load() || !queue_.empty(); });
        if (queue_.empty()) break;  // stopping
        job = queue_.front();
        queue_.pop_front();
        writerBusy_ = true;
      }
      if (!broken) {
        uint64_t len = job.len;
        if (WriteBytes(r, data, reinterpret_cast<uint8_t*>(&len), sizeof(len), code, reason) &&
            WriteBytes(r, data, job.data, job.len, code, reason)) {
          SetIdle();
          Emit(new Event{kSendDone, job.id, nullptr, 0, "", "", {}});
          continue;
        }
        broken = true;
      }
      SetIdle();
      Emit(new Event{kSendFailed, job.id, nullptr, 0, reason, code, {}});
    }
    std::lock_guard<std::mutex> lk(mu_);
    for (const SendJob& job : queue_) {
      Emit(new Event{kSendFailed, job.id, nullptr, 0, "connection closed", "ERR_CLOSED", {}});
    }
    queue_.clear();
  }

  std::string name_;
  uint8_t* base_ = nullptr;
  SegHeader* hdr_ = nullptr;
  size_t size_ = 0;
  uint64_t cap_ = 0;
  uint64_t maxMessage_ = 0;
  int spin_ = 0;
  int side_ = 0;
  bool unlinked_ = true;
  bool started_ = false;
  std::atomic<bool> stopping_{false};
  Napi::ThreadSafeFunction tsfn_;
  std::thread reader_, writer_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<SendJob> queue_;
  bool writerBusy_ = false;  // guarded by mu_: the writer thread is copying a job into the ring
  std::mutex rmu_;           // consumer lock: held while a message is taken out of the incoming ring
  std::atomic<int> inflight_{0};     // message events queued for JS and not yet delivered
  std::atomic<bool> jsPolling_{false};  // the JS thread is spinning in tryRecv: the reader thread backs off
};

Napi::Object InitAll(Napi::Env env, Napi::Object exports) { return Segment::Init(env, exports); }

// Received messages are malloc'd; glibc would mmap (and page-fault in) every buffer above its dynamic threshold.
// Raising the threshold lets freed receive buffers be reused from the heap (measured: 64 MiB messages went from
// ~1.9 to see bench/README.md). Called explicitly from JS (`tuneMalloc`) because it is process-wide.
Napi::Value TuneMalloc(const Napi::CallbackInfo& info) {
  int bytes = info[0].As<Napi::Number>().Int32Value();
  bool ok = mallopt(M_MMAP_THRESHOLD, bytes) == 1 && mallopt(M_TRIM_THRESHOLD, bytes * 2) == 1;
  return Napi::Boolean::New(info.Env(), ok);
}

}  // namespace

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  InitAll(env, exports);
  exports.Set("tuneMalloc", Napi::Function::New(env, TuneMalloc));
  return exports;
}

NODE_API_MODULE(shoal_shm, InitModule)
