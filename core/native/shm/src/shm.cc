// shoal shared-memory pair transport.
//
// One POSIX shared-memory segment per pair of ranks on the same host. The segment holds a header and two
// single-producer/single-consumer byte rings, one per direction. Messages are framed as [u64 length][bytes]
// and may be larger than the ring: they stream through it in chunks.
//
// Wake-up (one hop, like a socket): each pair also holds a connected unix stream socket (abstract namespace, so
// nothing is left on disk), set up at dial time, over which each side passes the other an eventfd (cheaper to
// signal than a socket write). The receiving side consumes the incoming ring on the JS thread;
// when it finds nothing new it "arms" (sets the ring's dataWaiters word) and returns to the event loop, which
// watches the socket with uv_poll. A producer that publishes bytes and finds the ring armed disarms it and writes
// the peer's eventfd (or, until it has arrived, one byte to the socket): libuv wakes the JS thread directly, no helper thread in between. The socket also
// carries death: when the peer process exits or closes, the kernel closes its end and the poll reports EOF.
//
// Ordering: the consumer stores dataWaiters = 1 and then loads head; the producer stores head and then
// exchanges dataWaiters with 0 (all sequentially consistent), so at least one of them sees the other: either
// the consumer sees the new head, or the producer sees the armed word and writes the wake byte.
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
#include <napi.h>
#include <malloc.h>
#include <uv.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace {

constexpr uint32_t kMagic = 0x4c4f4853;  // "SHOL"
constexpr uint32_t kVersion = 2;
constexpr size_t kHeaderSize = 4096;
constexpr int kWaitSliceMs = 50;
constexpr size_t kDirectMax = 1 << 20;       // sends up to this size may be copied on the JS thread
constexpr size_t kPublishChunk = 1 << 20;    // producer/consumer publish progress at least this often

struct alignas(64) Ring {
  uint64_t head;  // bytes produced so far (written only by the producer)
  char pad0[56];
  uint64_t tail;  // bytes consumed so far (written only by the consumer)
  char pad1[56];
  uint32_t dataSeq;      // unused since version 2 (kept for layout)
  uint32_t spaceSeq;     // futex word: bumped after tail advances
  uint32_t dataWaiters;  // consumer is armed: the producer writes a wake byte to the socket
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

// Abstract-namespace address for the wake socket of segment `name` (no file: the kernel removes it with the fd).
socklen_t wakeAddr(const std::string& name, sockaddr_un* a) {
  memset(a, 0, sizeof(*a));
  a->sun_family = AF_UNIX;
  std::string s = "shoal-wake" + name;
  if (s.size() > sizeof(a->sun_path) - 2) s.resize(sizeof(a->sun_path) - 2);
  memcpy(a->sun_path + 1, s.data(), s.size());
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + s.size());
}

// Pass `fd` over the unix socket `sock` (SCM_RIGHTS, with one data byte). Returns false on failure (errno set).
bool sendFd(int sock, int fd) {
  char b = 'F';
  iovec iov{&b, 1};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))];
  memset(ctl, 0, sizeof(ctl));
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = ctl;
  m.msg_controllen = sizeof(ctl);
  cmsghdr* c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof(int));
  ssize_t n;
  do n = sendmsg(sock, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  return n == 1;
}

// Read from the socket, picking up a passed descriptor if one comes along (stored in *gotFd).
ssize_t recvWithFd(int sock, char* buf, size_t len, int* gotFd) {
  iovec iov{buf, len};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))];
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = ctl;
  m.msg_controllen = sizeof(ctl);
  ssize_t n;
  do n = recvmsg(sock, &m, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n > 0) {
    for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) memcpy(gotFd, CMSG_DATA(c), sizeof(int));
    }
  }
  return n;
}

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


// Receive buffers for large messages, recycled: a buffer comes back here when JS collects its ArrayBuffer, and the
// next message of the same size reuses it instead of mapping (and page-faulting, zeroing) fresh memory. Shared by
// a connection and every buffer it handed out (shared_ptr), so buffers may outlive the connection. Thread-safe
// (finalizers run on the JS thread, but an environment teardown may not).
class BufferPool {
 public:
  explicit BufferPool(size_t capBytes) : cap_(capBytes) {}
  ~BufferPool() {
    for (auto& kv : free_) Release(kv.second, kv.first);
  }
  uint8_t* Get(size_t n) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      auto it = free_.find(n);
      if (it != free_.end()) {
        uint8_t* p = it->second;
        free_.erase(it);
        freeBytes_ -= n;
        return p;
      }
    }
    // Below the huge-page size, populate at once: one kernel pass instead of a fault per 4 KiB page.
    int populate = n < (4u << 20) ? MAP_POPULATE : 0;
    void* p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | populate, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    // Transparent huge pages where the system allows them on request: a fresh buffer then faults in 2 MiB at a
    // time instead of 4 KiB (hundreds of times fewer faults; the kernel still zeroes it).
    if (n >= (4u << 20)) madvise(p, n, MADV_HUGEPAGE);
    return static_cast<uint8_t*>(p);
  }
  void Put(uint8_t* p, size_t n) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (!closed_ && freeBytes_ + n <= cap_) {
        free_.emplace(n, p);
        freeBytes_ += n;
        return;
      }
    }
    Release(p, n);
  }
  // The connection closed: keep nothing idle from now on.
  void Drain() {
    std::multimap<size_t, uint8_t*> old;
    {
      std::lock_guard<std::mutex> lk(mu_);
      closed_ = true;
      old.swap(free_);
      freeBytes_ = 0;
    }
    for (auto& kv : old) Release(kv.second, kv.first);
  }

 private:
  static void Release(uint8_t* p, size_t n) { munmap(p, n); }
  std::mutex mu_;
  std::multimap<size_t, uint8_t*> free_;
  size_t freeBytes_ = 0;
  size_t cap_;
  bool closed_ = false;
};

struct PooledBuffer {
  std::shared_ptr<BufferPool> pool;
  size_t len;
};

struct PollBox {
  uv_poll_t handle;
  class Segment* owner;
};

// A JS Error for a failed system call on shared-memory object `name`: message, errno, and a code JS can test.
void ThrowErrnoFor(Napi::Env env, const char* what, const std::string& name, int e) {
  Napi::Error err = Napi::Error::New(env, std::string(what) + " " + name + ": " + strerror(e));
  err.Set("errno", Napi::Number::New(env, e));
  err.Set("code", Napi::String::New(env, e == ENOENT ? "ENOENT" : e == EEXIST || e == EADDRINUSE ? "EEXIST" : e == ENOSPC ? "ENOSPC" : "ESHM"));
  err.ThrowAsJavaScriptException();
}

class Segment : public Napi::ObjectWrap<Segment> {
 public:
  static Napi::Object Init(Napi::Env env, Napi::Object exports) {
    Napi::Function fn = DefineClass(env, "Segment",
                                    {
                                        InstanceMethod("attached", &Segment::Attached),
                                        InstanceMethod("start", &Segment::Start),
                                        InstanceMethod("send", &Segment::Send),
                                        InstanceMethod("take", &Segment::Take),
                                        InstanceMethod("readInto", &Segment::ReadInto),
                                        InstanceMethod("arm", &Segment::Arm),
                                        InstanceMethod("spin", &Segment::Spin),
                                        InstanceMethod("alloc", &Segment::Alloc),
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
    double poolBytes = info.Length() > 5 && info[5].IsNumber() ? info[5].As<Napi::Number>().DoubleValue() : 0;
    pool_ = std::make_shared<BufferPool>(static_cast<size_t>(poolBytes));
    sockaddr_un addr;
    socklen_t alen = wakeAddr(name_, &addr);
    if (create) {
      if (cap < 4096 || (cap & (cap - 1)) != 0) {
        Napi::RangeError::New(env, "shm capacity must be a power of two >= 4096").ThrowAsJavaScriptException();
        return;
      }
      listenFd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (listenFd_ < 0) { ThrowErrno(env, "socket"); return; }
      if (bind(listenFd_, reinterpret_cast<sockaddr*>(&addr), alen) != 0 || listen(listenFd_, 4) != 0) {
        int e = errno;
        CloseFds();
        errno = e;
        ThrowErrno(env, "bind wake socket");
        return;
      }
      int fd = shm_open(name_.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
      if (fd < 0) { int e = errno; CloseFds(); errno = e; ThrowErrno(env, "shm_open(create)"); return; }
      size_ = kHeaderSize + 2 * cap;
      if (ftruncate(fd, static_cast<off_t>(size_)) != 0) {
        int e = errno;
        close(fd);
        shm_unlink(name_.c_str());
        CloseFds();
        errno = e;
        ThrowErrno(env, "ftruncate");
        return;
      }
      base_ = static_cast<uint8_t*>(mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
      close(fd);
      if (base_ == MAP_FAILED) {
        int e = errno;
        base_ = nullptr;
        shm_unlink(name_.c_str());
        CloseFds();
        errno = e;
        ThrowErrno(env, "mmap");
        return;
      }
      hdr_ = reinterpret_cast<SegHeader*>(base_);
      memset(hdr_, 0, sizeof(SegHeader));
      hdr_->version = kVersion;
      hdr_->capacity = cap;
      hdr_->pid[0] = getpid();
      side_ = 0;
      unlinked_ = false;
      myEvt_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
      if (myEvt_ < 0) { int e = errno; Unmap(); shm_unlink(name_.c_str()); CloseFds(); errno = e; ThrowErrno(env, "eventfd"); return; }
      store(&hdr_->magic, kMagic);  // publish last: the wake socket is listening already
    } else {
      int fd = shm_open(name_.c_str(), O_RDWR, 0600);
      if (fd < 0) { ThrowErrno(env, "shm_open"); return; }
      struct stat st;
      if (fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) < kHeaderSize) {
        close(fd);
        ThrowCode(env, "ENOTREADY", "segment not initialised yet");
        return;
      }
      size_ = static_cast<size_t>(st.st_size);
      base_ = static_cast<uint8_t*>(mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
      close(fd);
      if (base_ == MAP_FAILED) {
        base_ = nullptr;
        ThrowErrno(env, "mmap");
        return;
      }
      hdr_ = reinterpret_cast<SegHeader*>(base_);
      if (load(&hdr_->magic) != kMagic) {
        Unmap();
        ThrowCode(env, "ENOTREADY", "segment not initialised yet");
        return;
      }
      if (hdr_->version != kVersion || kHeaderSize + 2 * hdr_->capacity != size_) {
        Unmap();
        ThrowCode(env, "EBADSEG", "segment has a wrong version or size");
        return;
      }
      uint32_t expected = 0;
      if (!__atomic_compare_exchange_n(&hdr_->attached, &expected, 1u, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
        Unmap();
        ThrowCode(env, "EBUSY", "segment already has a peer");
        return;
      }
      // Claimed: connect the wake socket; the listener accepts it once it sees `attached`.
      fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd_ < 0 || connect(fd_, reinterpret_cast<sockaddr*>(&addr), alen) != 0) {
        int e = errno;
        CloseFds();
        Unmap();
        errno = e;
        ThrowErrno(env, "connect wake socket");
        return;
      }
      // Our eventfd goes to the listener, which writes it to wake us; theirs comes back over the socket.
      myEvt_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
      if (myEvt_ < 0 || !sendFd(fd_, myEvt_)) {
        int e = errno;
        CloseFds();
        Unmap();
        errno = e;
        ThrowErrno(env, "pass wake eventfd");
        return;
      }
      store(&hdr_->pid[1], static_cast<int32_t>(getpid()));
      // Both ends are mapped now: remove the name so a crash leaves nothing behind in /dev/shm.
      shm_unlink(name_.c_str());
      unlinked_ = true;
      side_ = 1;
    }
    cap_ = hdr_->capacity;
  }

  ~Segment() override {
    StopThreads();
    StopPoll();
    CloseFds();
    Unmap();
  }

 private:
  void ThrowErrno(Napi::Env env, const char* what) { ThrowErrnoFor(env, what, name_, errno); }
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
  void CloseFds() {
    if (listenFd_ >= 0) close(listenFd_);
    listenFd_ = -1;
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    if (myEvt_ >= 0) close(myEvt_);
    myEvt_ = -1;
    int pe = peerEvt_.exchange(-1);
    if (pe >= 0) close(pe);
  }

  // Listener: true once a dialer has claimed the segment and its wake socket is accepted.
  Napi::Value Attached(const Napi::CallbackInfo& info) {
    bool ok = false;
    if (hdr_ && load(&hdr_->attached) == 1 && load(&hdr_->pid[1]) != 0) {
      if (fd_ < 0 && listenFd_ >= 0) {
        // The abstract namespace has no permissions: take the wake socket only from the process that claimed the
        // segment (which only this user can map), checked by the kernel's credentials of the connecting end.
        // Anyone else's connection is closed; the claimant's is still queued behind it.
        for (;;) {
          int fd = accept4(listenFd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0) break;
          ucred cred{};
          socklen_t clen = sizeof(cred);
          if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0 && cred.uid == geteuid() &&
              cred.pid == load(&hdr_->pid[1])) {
            fd_ = fd;
            close(listenFd_);
            listenFd_ = -1;
            break;
          }
          close(fd);
        }
      }
      if (fd_ >= 0 && peerEvt_.load() < 0) {
        // The dialer passes its eventfd right after connecting; answer with ours.
        char b[16];
        int got = -1;
        if (recvWithFd(fd_, b, sizeof(b), &got) > 0 && got >= 0) {
          peerEvt_.store(got);
          if (!sendFd(fd_, myEvt_)) {
            close(got);
            peerEvt_.store(-1);
          }
        }
      }
      ok = fd_ >= 0 && peerEvt_.load() >= 0;
    }
    return Napi::Boolean::New(info.Env(), ok);
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

  // start(onSendEvent(kind, id, error|undefined, code|undefined), onReadable(eof: boolean))
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (started_ || !hdr_ || fd_ < 0) {
      Napi::Error::New(env, "segment already started, closed or not connected").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    // The dialer unlinks the name once it is mapped; the listener does too, in case it raced.
    if (!unlinked_) {
      shm_unlink(name_.c_str());
      unlinked_ = true;
    }
    env_ = env;
    tsfn_ = Napi::ThreadSafeFunction::New(env, info[0].As<Napi::Function>(), "shoal-shm", 0, 1);
    tsfn_.Unref(env);
    onReadable_ = Napi::Persistent(info[1].As<Napi::Function>());
    asyncCtx_ = new Napi::AsyncContext(env, "shoal-shm-readable");
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(env, &loop);
    poll_ = new PollBox();
    poll_->owner = this;
    uv_poll_init(loop, &poll_->handle, fd_);
    poll_->handle.data = poll_;
    uv_poll_start(&poll_->handle, UV_READABLE | UV_DISCONNECT, &Segment::OnPoll);
    uv_unref(reinterpret_cast<uv_handle_t*>(&poll_->handle));
    evtPoll_ = new PollBox();
    evtPoll_->owner = this;
    uv_poll_init(loop, &evtPoll_->handle, myEvt_);
    evtPoll_->handle.data = evtPoll_;
    uv_poll_start(&evtPoll_->handle, UV_READABLE, &Segment::OnEvt);
    uv_unref(reinterpret_cast<uv_handle_t*>(&evtPoll_->handle));
    started_ = true;
    writer_ = std::thread([this] { WriterLoop(); });
    return env.Undefined();
  }

  static void OnPoll(uv_poll_t* h, int status, int events) {
    PollBox* box = static_cast<PollBox*>(h->data);
    Segment* self = box->owner;
    if (!self) return;
    bool eof = status < 0 || (events & UV_DISCONNECT);
    char buf[256];
    for (;;) {
      int got = -1;
      ssize_t n = recvWithFd(self->fd_, buf, sizeof(buf), &got);
      if (got >= 0) {
        int old = self->peerEvt_.exchange(got);
        if (old >= 0) close(old);
      }
      if (n > 0 && static_cast<size_t>(n) < sizeof(buf)) break;  // a short read drained the stream: spare a syscall
      if (n > 0) continue;
      if (n == 0) eof = true;
      else if (errno == EINTR) continue;
      else if (errno != EAGAIN && errno != EWOULDBLOCK) eof = true;
      break;
    }
    if (eof) self->StopPoll();  // the peer's end is gone: stop watching (the fd stays readable forever)
    self->CallReadable(eof);
  }

  static void OnEvt(uv_poll_t* h, int status, int events) {
    PollBox* box = static_cast<PollBox*>(h->data);
    Segment* self = box->owner;
    if (!self) return;
    uint64_t v;
    ssize_t n;
    do n = read(self->myEvt_, &v, sizeof(v));
    while (n < 0 && errno == EINTR);
    self->CallReadable(false);
  }

  void CallReadable(bool eof) {
    Segment* self = this;
    Napi::Env env = self->env_;
    Napi::HandleScope scope(env);
    napi_value argv[1] = {Napi::Boolean::New(env, eof)};
    napi_value result;
    napi_status st = napi_make_callback(env, *self->asyncCtx_, env.Global(), self->onReadable_.Value(), 1, argv, &result);
    if (st == napi_pending_exception) {
      napi_value err;
      napi_get_and_clear_last_exception(env, &err);
      napi_fatal_exception(env, err);
    }
  }

  static void ClosePoll(PollBox*& p) {
    if (!p) return;
    uv_poll_stop(&p->handle);
    p->owner = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&p->handle), [](uv_handle_t* h) { delete static_cast<PollBox*>(h->data); });
    p = nullptr;
  }
  // Stop watching both descriptors (on EOF the socket stays readable forever; the eventfd is moot then).
  void StopPoll() {
    ClosePoll(poll_);
    ClosePoll(evtPoll_);
  }

  // Disarm the peer's consumer and wake it through the socket if it was armed. Any thread of the producer side.
  void NotifyData(Ring& r) {
    if (__atomic_exchange_n(&r.dataWaiters, 0u, __ATOMIC_SEQ_CST) != 0 && fd_ >= 0) {
      int pe = peerEvt_.load();
      if (pe >= 0) {
        uint64_t one = 1;
        ssize_t w;
        do w = write(pe, &one, sizeof(one));
        while (w < 0 && errno == EINTR);
        return;  // EAGAIN (counter saturated) still leaves it readable
      }
      // Before the listener's eventfd has arrived (dialer only, briefly): a byte on the socket wakes it as well.
      char b = 1;
      ssize_t n;
      do n = send(fd_, &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
      while (n < 0 && errno == EINTR);
      // EAGAIN: wake bytes are already pending, the consumer wakes anyway. EPIPE: the peer is gone.
    }
  }

  // send(u8, id): returns true when copied synchronously; otherwise completion arrives as kSendDone/kSendFailed.
  Napi::Value Send(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Uint8Array a = info[0].As<Napi::Uint8Array>();
    double id = info[1].As<Napi::Number>().DoubleValue();
    {
      std::lock_guard<std::mutex> lk(mu_);
      // Fast path: idle writer, room in the ring for the whole frame: copy it now on this thread, publish once.
      if (hdr_ && queue_.empty() && !writerBusy_ && !stopping_.load() && a.ByteLength() <= kDirectMax) {
        Ring& r = hdr_->ring[side_];
        uint64_t len = a.ByteLength();
        uint64_t need = len + sizeof(uint64_t);
        uint64_t h = r.head;
        if (cap_ - (h - load(&r.tail)) >= need && !load(&hdr_->ring[1 - side_].closed)) {
          uint8_t* data = base_ + kHeaderSize + static_cast<size_t>(side_) * cap_;
          CopyIn(data, h, reinterpret_cast<uint8_t*>(&len), sizeof(len));
          CopyIn(data, h + sizeof(len), a.Data(), a.ByteLength());
          store(&r.head, h + need);
          NotifyData(r);
          return Napi::Boolean::New(env, true);
        }
      }
      queue_.push_back(SendJob{id, a.Data(), a.ByteLength()});
    }
    cv_.notify_one();
    return Napi::Boolean::New(env, false);
  }

  void CopyIn(uint8_t* ringData, uint64_t pos, const uint8_t* src, size_t n) {
    uint64_t off = pos & (cap_ - 1);
    size_t first = n < cap_ - off ? n : static_cast<size_t>(cap_ - off);
    memcpy(ringData + off, src, first);
    if (first < n) memcpy(ringData, src + first, n - first);
  }
  void CopyOut(const uint8_t* ringData, uint64_t pos, uint8_t* dst, size_t n) {
    uint64_t off = pos & (cap_ - 1);
    size_t first = n < cap_ - off ? n : static_cast<size_t>(cap_ - off);
    memcpy(dst, ringData + off, first);
    if (first < n) memcpy(dst + first, ringData, n - first);
  }

  Ring* InRing() { return hdr_ ? &hdr_->ring[1 - side_] : nullptr; }
  uint8_t* InData() { return base_ + kHeaderSize + static_cast<size_t>(1 - side_) * cap_; }

  void ConsumerAdvance(Ring& r, uint64_t t) {
    store(&r.tail, t);
    add(&r.spaceSeq, 1u);
    if (load(&r.spaceWaiters)) futexWake(&r.spaceSeq);
  }

  // The producer never gets more than the ring's capacity ahead of the consumer: indices that say otherwise were
  // written by something else than the pair's two ends (a corrupt or scribbled segment). Without this check a
  // consumer would take messages out of garbage for ever (the fuzzer of issue #15 found zero-length "messages"
  // growing the heap until V8 aborted). ERR_BAD_FRAME fails the connection instead.
  Napi::Value ThrowCorrupt(Napi::Env env, uint64_t h, uint64_t t) {
    Napi::Error err = Napi::Error::New(env, "ring indices are corrupt (" + std::to_string(h - t) + " bytes pending in a ring of " +
                                                std::to_string(cap_) + ")");
    err.Set("code", Napi::String::New(env, "ERR_BAD_FRAME"));
    err.ThrowAsJavaScriptException();
    return env.Undefined();
  }

  // take(smallMax): the next message on the JS thread.
  //  - a Uint8Array: a whole message of <= smallMax bytes was in the ring and is now consumed;
  //  - a number >= 0: the header of a larger message was consumed; fetch its body with readInto;
  //  - -1: no (whole small) message yet; -2: the connection is closed.
  // Throws (code ERR_BAD_FRAME) on a length above maxMessage. Must not be called while a body is pending.
  Napi::Value Take(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Ring* rp = InRing();
    if (!rp) return Napi::Number::New(env, -2);
    Ring& r = *rp;
    uint64_t smallMax = static_cast<uint64_t>(info[0].As<Napi::Number>().DoubleValue());
    if (smallMax > cap_ - sizeof(uint64_t)) smallMax = cap_ - sizeof(uint64_t);
    uint64_t h = load(&r.head);
    lastHead_ = h;
    uint64_t t = r.tail;
    if (h - t > cap_) return ThrowCorrupt(env, h, t);
    if (h - t < sizeof(uint64_t)) return Napi::Number::New(env, -1);
    uint8_t* data = InData();
    uint64_t len = 0;
    CopyOut(data, t, reinterpret_cast<uint8_t*>(&len), sizeof(len));
    if (len > maxMessage_) {
      Napi::Error err = Napi::Error::New(env, "message of " + std::to_string(len) + " bytes exceeds the limit of " +
                                                  std::to_string(maxMessage_));
      err.Set("code", Napi::String::New(env, "ERR_BAD_FRAME"));
      err.ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (len <= smallMax) {
      if (h - t < sizeof(uint64_t) + len) return Napi::Number::New(env, -1);
      Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, static_cast<size_t>(len));
      if (len) CopyOut(data, t + sizeof(uint64_t), static_cast<uint8_t*>(ab.Data()), static_cast<size_t>(len));
      ConsumerAdvance(r, t + sizeof(uint64_t) + len);
      return Napi::Uint8Array::New(env, static_cast<size_t>(len), ab, 0);
    }
    ConsumerAdvance(r, t + sizeof(uint64_t));
    return Napi::Number::New(env, static_cast<double>(len));
  }

  // readInto(u8, offset): copy the bytes of the pending body that are in the ring to u8[offset..]; returns the
  // count (0 when nothing new arrived). The caller tracks how many the body still needs (u8.length - offset).
  Napi::Value ReadInto(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Ring* rp = InRing();
    if (!rp) return Napi::Number::New(env, 0);
    Ring& r = *rp;
    Napi::Uint8Array a = info[0].As<Napi::Uint8Array>();
    size_t off = static_cast<size_t>(info[1].As<Napi::Number>().DoubleValue());
    size_t want = a.ByteLength() > off ? a.ByteLength() - off : 0;
    uint8_t* data = InData();
    size_t got = 0;
    uint64_t t = r.tail;
    while (got < want) {
      uint64_t h = load(&r.head);
      lastHead_ = h;
      if (h == t) break;
      if (h - t > cap_) return ThrowCorrupt(env, h, t);
      size_t chunk = static_cast<size_t>(h - t);
      if (chunk > want - got) chunk = want - got;
      if (chunk > kPublishChunk) chunk = kPublishChunk;
      CopyOut(data, t, a.Data() + off + got, chunk);
      got += chunk;
      t += chunk;
      ConsumerAdvance(r, t);
    }
    return Napi::Number::New(env, static_cast<double>(got));
  }

  // arm(): announce that this side waits for data (the producer will write a wake byte). Returns true when
  // bytes arrived since the last take/readInto looked, so the caller must look again before sleeping.
  Napi::Value Arm(const Napi::CallbackInfo& info) {
    Ring* rp = InRing();
    if (!rp) return Napi::Boolean::New(info.Env(), false);
    store(&rp->dataWaiters, 1u);
    return Napi::Boolean::New(info.Env(), load(&rp->head) != lastHead_);
  }

  // spin(micros): busy-wait on the JS thread up to `micros` for bytes beyond what was last seen. Returns true
  // when some arrived. Only worth it when both ranks have a core to themselves.
  Napi::Value Spin(const Napi::CallbackInfo& info) {
    Ring* rp = InRing();
    double us = info[0].As<Napi::Number>().DoubleValue();
    if (!rp) return Napi::Boolean::New(info.Env(), false);
    timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (uint32_t i = 0;; i++) {
      if (load(&rp->head) != lastHead_) return Napi::Boolean::New(info.Env(), true);
      if ((i & 63) == 0) {
        timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - t0.tv_sec) * 1e6 + (now.tv_nsec - t0.tv_nsec) / 1e3 >= us) break;
      }
      cpuRelax();
    }
    return Napi::Boolean::New(info.Env(), false);
  }

  // alloc(bytes): an uninitialised receive buffer from this connection's pool (recycled from a collected earlier
  // message of the same size when possible; otherwise freshly mapped). It goes back to the pool when collected.
  Napi::Value Alloc(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    size_t n = static_cast<size_t>(info[0].As<Napi::Number>().DoubleValue());
    if (n == 0) return Napi::Uint8Array::New(env, 0);
    uint8_t* p = pool_->Get(n);
    if (!p) {
      Napi::Error::New(env, "out of memory for a " + std::to_string(n) + "-byte message").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    auto* hint = new PooledBuffer{pool_, n};
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(
        env, p, n, [](Napi::Env, void* q, PooledBuffer* h) {
          h->pool->Put(static_cast<uint8_t*>(q), h->len);
          delete h;
        },
        hint);
    return Napi::Uint8Array::New(env, n, ab, 0);
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (!unlinked_ && hdr_) {
      shm_unlink(name_.c_str());
      unlinked_ = true;
    }
    StopThreads();
    StopPoll();
    if (started_) {
      tsfn_.Release();
      onReadable_.Reset();
      delete asyncCtx_;
      asyncCtx_ = nullptr;
      started_ = false;
    }
    pool_->Drain();
    CloseFds();  // after the writer is joined: the peer sees EOF, and ring.closed is already set
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
      NotifyData(mine);
      add(&mine.spaceSeq, 1u);
      futexWake(&mine.spaceSeq);
      add(&theirs.spaceSeq, 1u);
      futexWake(&theirs.spaceSeq);
    }
    cv_.notify_all();
    JoinThreads();
  }
  void JoinThreads() {
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
        delete e;
        return;
      }
      Napi::Value err = e->error.empty() ? env.Undefined() : Napi::String::New(env, e->error);
      Napi::Value code = e->code.empty() ? env.Undefined() : Napi::String::New(env, e->code);
      napi_value argv[4] = {Napi::Number::New(env, e->kind), Napi::Number::New(env, e->id), err, code};
      napi_value result;
      // Raw call: during shutdown JS may not run; ignore the status instead of aborting the process.
      napi_call_function(env, env.Undefined(), cb, 4, argv, &result);
      delete e;
    });
    if (st != napi_ok) delete ev;
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
      size_t chunk = static_cast<size_t>(cap_ - used);
      if (chunk > n - put) chunk = n - put;
      if (chunk > kPublishChunk) chunk = kPublishChunk;
      CopyIn(ringData, h, src + put, chunk);
      put += chunk;
      h += chunk;
      store(&r.head, h);
      NotifyData(r);
    }
    return true;
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
          Emit(new Event{kSendDone, job.id, "", ""});
          continue;
        }
        broken = true;
      }
      SetIdle();
      Emit(new Event{kSendFailed, job.id, reason, code});
    }
    std::lock_guard<std::mutex> lk(mu_);
    for (const SendJob& job : queue_) {
      Emit(new Event{kSendFailed, job.id, "connection closed", "ERR_CLOSED"});
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

Napi::Object InitAll(Napi::Env env, Napi::Object exports) { return Segment::Init(env, exports); }

// Large receive buffers are malloc'd; glibc would mmap (and page-fault in) every buffer above its dynamic
// threshold. Raising the threshold lets freed receive buffers be reused from the heap. Called explicitly from JS
// (`tuneMalloc`) because it is process-wide.
Napi::Value TuneMalloc(const Napi::CallbackInfo& info) {
  int bytes = info[0].As<Napi::Number>().Int32Value();
  bool ok = mallopt(M_MMAP_THRESHOLD, bytes) == 1 && mallopt(M_TRIM_THRESHOLD, bytes * 2) == 1;
  return Napi::Boolean::New(info.Env(), ok);
}

// Named shared regions: plain byte arrays two processes of one host map (the parameter server's same-host data
// plane). `mapRegion(name, bytes, create)` returns an ArrayBuffer over the mapping, unmapped when V8 collects it.
// Creating reserves the pages (posix_fallocate), so a full /dev/shm is an error here and not a SIGBUS at first
// touch; both sides map with MAP_POPULATE, so the first round does not page-fault.
Napi::Value MapRegion(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsNumber()) {
    Napi::TypeError::New(env, "mapRegion(name: string, bytes: number, create: boolean)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string name = info[0].As<Napi::String>();
  double want = info[1].As<Napi::Number>().DoubleValue();
  bool create = info[2].ToBoolean();
  if (!(want >= 1) || want > 1e15) {
    Napi::RangeError::New(env, "region size must be positive").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  size_t bytes = static_cast<size_t>(want);
  int fd = shm_open(name.c_str(), create ? (O_CREAT | O_EXCL | O_RDWR) : O_RDWR, 0600);
  if (fd < 0) {
    ThrowErrnoFor(env, create ? "shm_open(create)" : "shm_open", name, errno);
    return env.Undefined();
  }
  if (create) {
    int e = posix_fallocate(fd, 0, static_cast<off_t>(bytes));
    if (e != 0) {
      close(fd);
      shm_unlink(name.c_str());
      ThrowErrnoFor(env, "posix_fallocate", name, e);
      return env.Undefined();
    }
  } else {
    struct stat st;
    if (fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) != bytes) {
      close(fd);
      Napi::Error err = Napi::Error::New(env, "region " + name + " has " + std::to_string(static_cast<long long>(st.st_size)) + " bytes, expected " + std::to_string(bytes));
      err.Set("code", Napi::String::New(env, "ESIZE"));
      err.ThrowAsJavaScriptException();
      return env.Undefined();
    }
  }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  int e = errno;
  close(fd);
  if (p == MAP_FAILED) {
    if (create) shm_unlink(name.c_str());
    ThrowErrnoFor(env, "mmap", name, e);
    return env.Undefined();
  }
  return Napi::ArrayBuffer::New(
      env, p, bytes, [](Napi::Env, void* data, size_t* len) { munmap(data, *len); delete len; }, new size_t(bytes));
}

Napi::Value UnlinkRegion(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString()) {
    Napi::TypeError::New(info.Env(), "unlinkRegion(name: string)").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  std::string name = info[0].As<Napi::String>();
  return Napi::Boolean::New(info.Env(), shm_unlink(name.c_str()) == 0);
}

}  // namespace

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  InitAll(env, exports);
  exports.Set("tuneMalloc", Napi::Function::New(env, TuneMalloc));
  exports.Set("mapRegion", Napi::Function::New(env, MapRegion));
  exports.Set("unlinkRegion", Napi::Function::New(env, UnlinkRegion));
  return exports;
}

NODE_API_MODULE(shoal_shm, InitModule)
