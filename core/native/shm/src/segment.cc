// The shared-memory Segment's lifecycle: create or dial, the wake-socket handshake, polling, close (segment.h).
#include "segment.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "wake.h"

namespace shoal_shm {

// A JS Error for a failed system call on shared-memory object `name`: message, errno, and a code JS can test.
void ThrowErrnoFor(Napi::Env env, const char* what, const std::string& name, int e) {
  Napi::Error err = Napi::Error::New(env, std::string(what) + " " + name + ": " + strerror(e));
  err.Set("errno", Napi::Number::New(env, e));
  err.Set("code", Napi::String::New(env, e == ENOENT ? "ENOENT" : e == EEXIST || e == EADDRINUSE ? "EEXIST" : e == ENOSPC ? "ENOSPC" : "ESHM"));
  err.ThrowAsJavaScriptException();
}

Napi::Object Segment::Init(Napi::Env env, Napi::Object exports) {
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
Segment::Segment(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Segment>(info) {
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

Segment::~Segment() {
  StopThreads();
  StopPoll();
  CloseFds();
  Unmap();
}

void Segment::ThrowCode(Napi::Env env, const char* code, const std::string& msg) {
  Napi::Error err = Napi::Error::New(env, msg + " (" + name_ + ")");
  err.Set("code", Napi::String::New(env, code));
  err.ThrowAsJavaScriptException();
}

void Segment::Unmap() {
  if (base_) {
    munmap(base_, size_);
    base_ = nullptr;
    hdr_ = nullptr;
  }
}

void Segment::CloseFds() {
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
Napi::Value Segment::Attached(const Napi::CallbackInfo& info) {
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

Napi::Value Segment::Info(const Napi::CallbackInfo& info) {
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
Napi::Value Segment::Start(const Napi::CallbackInfo& info) {
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

void Segment::OnPoll(uv_poll_t* h, int status, int events) {
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

void Segment::OnEvt(uv_poll_t* h, int status, int events) {
  PollBox* box = static_cast<PollBox*>(h->data);
  Segment* self = box->owner;
  if (!self) return;
  uint64_t v;
  ssize_t n;
  do n = read(self->myEvt_, &v, sizeof(v));
  while (n < 0 && errno == EINTR);
  self->CallReadable(false);
}

void Segment::CallReadable(bool eof) {
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

void Segment::ClosePoll(PollBox*& p) {
  if (!p) return;
  uv_poll_stop(&p->handle);
  p->owner = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&p->handle), [](uv_handle_t* h) { delete static_cast<PollBox*>(h->data); });
  p = nullptr;
}

// Stop watching both descriptors (on EOF the socket stays readable forever; the eventfd is moot then).
void Segment::StopPoll() {
  ClosePoll(poll_);
  ClosePoll(evtPoll_);
}

// Disarm the peer's consumer and wake it through the socket if it was armed. Any thread of the producer side.
void Segment::NotifyData(Ring& r) {
  if (__atomic_exchange_n(&r.dataWaiters, 0u, __ATOMIC_SEQ_CST) != 0 && fd_ >= 0) wakePeer(peerEvt_.load(), fd_);
}

Napi::Value Segment::Close(const Napi::CallbackInfo& info) {
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

void Segment::StopThreads() {
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

void Segment::JoinThreads() {
  if (writer_.joinable()) writer_.join();
}

bool Segment::PeerDead() {
  int32_t pid = load(&hdr_->pid[1 - side_]);
  if (pid <= 0) return false;
  return kill(pid, 0) != 0 && errno == ESRCH;
}

}  // namespace shoal_shm

namespace {

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  shoal_shm::Segment::Init(env, exports);
  shoal_shm::InitRegions(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(shoal_shm, InitModule)
