// shoal shared-segment collective (same-host allreduce / broadcast / barrier).
//
// One POSIX shared-memory segment mapped by all P ranks of a group on one host (DeepSpeed's and oneCCL's CPU
// shm allreduce). Layout:
//
//   [header 4 KiB: magic, size, nbuf, chunk bytes, attach count, abort word, waiter count, pid of every rank]
//   [counters: per rank three u32 words, each on its own cache line: in, red, out]
//   [descriptors: per rank and buffer one 64-byte op descriptor (op sequence, kind, dtype, op, root, count)]
//   [data: per rank `nbuf` slots of `chunk` bytes, then `nbuf` result buffers of `chunk` bytes]
//
// A collective moves its payload in chunks numbered globally (every rank numbers the same way); chunk g uses
// buffer b = g % nbuf. For each chunk a rank: (1) waits until every rank has copied out chunk g - nbuf (the
// buffers are free), writes its descriptor and copies its chunk into its slot except its own slice (nobody else
// reads that), publishes in = g + 1; (2) copies out the previous chunk once every rank has published red >= g,
// publishes out = g; (3) waits until every rank published in >= g + 1, checks that every descriptor equals its
// own, reduces ITS slice of the chunk over the P contributions in rank order (its own straight from its data)
// into the result buffer, writes the slice back into its data and publishes red = g + 1. After the last chunk it
// copies that one out (all but its own slice, already in place). Every element is reduced once, by one rank, in rank order: all ranks get bitwise the same result,
// independent of timing. Counters only grow (compared modulo 2^32).
//
// Waits: spin (pause) for a while, then sleep on the lagging rank's counter word (a shared futex) in 5 ms slices;
// publishers wake only when the waiter count is non-zero (store word, load waiters / add waiters, load word, all
// sequentially consistent: one of the two sees the other). Each slice checks the abort word (set by close() and
// by a rank that failed), the deadline (ERR_TIMEOUT names the missing ranks) and whether the peers' processes
// are alive (kill(pid, 0)).
//
// Threads: an op may run on the JS thread for a bounded spin budget (small payloads: no thread hop); if it is
// not finished by then it continues on this object's own worker thread (not the libuv pool, which ranks that are
// threads of one process could exhaust), which reports completion through a thread-safe function.
#include <napi.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>
#include "shoal_reduce.h"
#ifdef SHOAL_X86
#include <immintrin.h>
#endif

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

// ---- kernels: the shared reduction loops (core/native/include/shoal_reduce.h) plus int32 mean ----
void shoal_coll_div_i32(int32_t* d, int32_t p, size_t n) {
  for (size_t i = 0; i < n; i++) d[i] = d[i] / p;  // truncates toward zero (like Math.trunc)
}

namespace {

constexpr uint32_t kMagic = 0x4c4f4343;  // "CCOL"
constexpr uint32_t kVersion = 1;
constexpr uint32_t kMaxRanks = 256;
constexpr size_t kHeaderSize = 4096;
constexpr size_t kPidsOff = 256;
constexpr size_t kLine = 64;
constexpr int kSliceMs = 5;

enum Dtype { F32 = 0, F64 = 1, I32 = 2, U8 = 3 };
enum Kind { ALLREDUCE = 0, BROADCAST = 1 };
enum RedOp { SUM = 0, MIN = 1, MAX = 2, MEAN = 3 };
enum Ctr { IN = 0, RED = 1, OUT = 2 };

struct Header {
  uint32_t magic;
  uint32_t version;
  uint32_t size;
  uint32_t nbuf;
  uint32_t chunkBytes;
  uint32_t attached;
  uint32_t abortWord;    // 0, or 1 + the rank that aborted
  uint32_t abortReason;  // 1 closed, 2 timed out, 3 saw a dead peer, 4 error
  uint32_t waiters;
};

struct Desc {
  uint32_t opSeq;
  uint8_t kind, dtype, op, pad;
  uint32_t root;
  uint32_t pad2;
  uint64_t count;
};

inline uint32_t ld(const uint32_t* p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
inline uint32_t ldAcq(const uint32_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
inline void st(uint32_t* p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
inline void futexWait(uint32_t* addr, uint32_t val, int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  syscall(SYS_futex, addr, FUTEX_WAIT, val, &ts, nullptr, 0);
}
inline void futexWake(uint32_t* addr) { syscall(SYS_futex, addr, FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0); }
inline uint64_t nowNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
inline void cpuRelax() {
#ifdef SHOAL_X86
  _mm_pause();
#endif
}
inline bool reached(uint32_t v, uint32_t target) { return (int32_t)(v - target) >= 0; }

size_t esizeOf(int dt) { return dt == F64 ? 8 : dt == U8 ? 1 : 4; }
const char* kindName(int k) { return k == BROADCAST ? "broadcast" : "allreduce"; }
const char* dtypeName(int d) { return d == F32 ? "float32" : d == F64 ? "float64" : d == I32 ? "int32" : "uint8"; }
const char* opName(int o) { return o == SUM ? "sum" : o == MIN ? "min" : o == MAX ? "max" : "mean"; }

struct Op {
  int kind = ALLREDUCE, dtype = F32, op = SUM;
  uint32_t root = 0;
  uint8_t* data = nullptr;
  uint64_t count = 0;
  size_t esize = 4;
  uint64_t chunkElems = 0;
  uint32_t first = 0;  // global index of the op's first chunk
  uint32_t nChunks = 1;
  uint32_t k = 0;      // chunk being worked on (relative)
  int phase = 0;
  bool mismatch = false;
  uint32_t opSeq = 0;
  uint64_t deadline = 0;
  uint64_t timeoutMs = 0;
  uint64_t spinNs = 0;
  std::string errCode, errMsg;
};

class Coll : public Napi::ObjectWrap<Coll> {
 public:
  static Napi::Object Init(Napi::Env env, Napi::Object exports) {
    Napi::Function f = DefineClass(env, "Collective",
                                   {InstanceMethod("start", &Coll::Start), InstanceMethod("attached", &Coll::Attached),
                                    InstanceMethod("unlink", &Coll::Unlink), InstanceMethod("abort", &Coll::Abort),
                                    InstanceMethod("close", &Coll::Close), InstanceMethod("info", &Coll::Info),
                                    InstanceMethod("aborted", &Coll::Aborted)});
    exports.Set("Collective", f);
    return exports;
  }

  // new Collective(name, create, rank, size, chunkBytes, nbuf, onDone)
  Coll(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Coll>(info) {
    Napi::Env env = info.Env();
    name_ = info[0].As<Napi::String>().Utf8Value();
    bool create = info[1].As<Napi::Boolean>().Value();
    rank_ = info[2].As<Napi::Number>().Uint32Value();
    size_ = info[3].As<Napi::Number>().Uint32Value();
    uint32_t chunk = info[4].As<Napi::Number>().Uint32Value();
    uint32_t nbuf = info[5].As<Napi::Number>().Uint32Value();
    if (size_ < 1 || size_ > kMaxRanks || rank_ >= size_) { throwErr(env, "ERR_INVALID", "bad rank/size"); return; }
    int fd = -1;
    if (create) {
      if (chunk < 4096 || chunk % 4096 != 0 || nbuf < 2 || nbuf > 16) { throwErr(env, "ERR_INVALID", "bad chunk/nbuf"); return; }
      fd = shm_open(name_.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
      if (fd < 0) { throwErrno(env, "shm_open"); return; }
      layout(size_, chunk, nbuf);
      if (ftruncate(fd, (off_t)bytes_) != 0) {
        int e = errno;
        close(fd);
        shm_unlink(name_.c_str());
        errno = e;
        { throwErrno(env, "ftruncate"); return; }
      }
    } else {
      fd = shm_open(name_.c_str(), O_RDWR, 0600);
      if (fd < 0) { throwErrno(env, "shm_open"); return; }
      struct stat sb;
      if (fstat(fd, &sb) != 0 || (size_t)sb.st_size < kHeaderSize) {
        close(fd);
        { throwErr(env, "ENOTREADY", "segment not initialised yet"); return; }
      }
      bytes_ = (size_t)sb.st_size;
    }
    void* p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
      if (create) shm_unlink(name_.c_str());
      { throwErrno(env, "mmap"); return; }
    }
    base_ = (uint8_t*)p;
    hdr_ = (Header*)base_;
    if (create) {
      hdr_->size = size_;
      hdr_->nbuf = nbuf;
      hdr_->chunkBytes = chunk;
      pids()[0] = (int32_t)getpid();
      hdr_->attached = 1;
      hdr_->version = kVersion;
      __atomic_store_n(&hdr_->magic, kMagic, __ATOMIC_RELEASE);
    } else {
      if (__atomic_load_n(&hdr_->magic, __ATOMIC_ACQUIRE) != kMagic) {
        munmap(base_, bytes_);
        base_ = nullptr;
        { throwErr(env, "ENOTREADY", "segment not initialised yet"); return; }
      }
      if (hdr_->size != size_) {
        munmap(base_, bytes_);
        base_ = nullptr;
        { throwErr(env, "ERR_MISMATCH", "segment was made for another group size"); return; }
      }
      layout(size_, hdr_->chunkBytes, hdr_->nbuf);
      __atomic_store_n(&pids()[rank_], (int32_t)getpid(), __ATOMIC_SEQ_CST);
      __atomic_fetch_add(&hdr_->attached, 1, __ATOMIC_SEQ_CST);
    }
    pid_ = getpid();
    // The finalizer runs when Node tears the environment down (a worker thread terminated, the process exiting)
    // before close(): it stops this collective's thread there, so the thread never calls into a freed TSFN. After
    // a close() it only frees the guard (`owner` is cleared first).
    guard_ = new TsfnGuard{this};
    tsfn_ = Napi::ThreadSafeFunction::New(env, info[6].As<Napi::Function>(), "shoal-shmcoll", 0, 1, [](Napi::Env, TsfnGuard* g) {
      if (g->owner) g->owner->tsfnFinalized();
      delete g;
    }, guard_);
    tsfn_.Unref(env);
    hasTsfn_ = true;
    worker_ = std::thread([this] { loop(); });
  }

  ~Coll() { shutdown(); }

 private:
  // ---- layout ----
  void layout(uint32_t P, uint32_t chunk, uint32_t nbuf) {
    chunk_ = chunk;
    nbuf_ = nbuf;
    ctrOff_ = kHeaderSize;
    descOff_ = ctrOff_ + (size_t)P * 3 * kLine;
    dataOff_ = (descOff_ + (size_t)P * nbuf * kLine + 4095) & ~(size_t)4095;
    bytes_ = dataOff_ + (size_t)(P + 1) * nbuf * chunk;
  }
  int32_t* pids() { return (int32_t*)(base_ + kPidsOff); }
  uint32_t* ctr(uint32_t r, int which) { return (uint32_t*)(base_ + ctrOff_ + ((size_t)r * 3 + which) * kLine); }
  Desc* desc(uint32_t r, uint32_t b) { return (Desc*)(base_ + descOff_ + ((size_t)r * nbuf_ + b) * kLine); }
  uint8_t* slot(uint32_t r, uint32_t b) { return base_ + dataOff_ + ((size_t)r * nbuf_ + b) * chunk_; }
  uint8_t* result(uint32_t b) { return base_ + dataOff_ + ((size_t)size_ * nbuf_ + b) * chunk_; }

  void throwErr(Napi::Env env, const char* code, const std::string& msg) {
    Napi::Error e = Napi::Error::New(env, msg);
    e.Set("code", Napi::String::New(env, code));
    e.ThrowAsJavaScriptException();
  }
  void throwErrno(Napi::Env env, const char* what) {
    int e = errno;
    const char* code = e == ENOENT ? "ENOENT" : e == EEXIST ? "EEXIST" : "ERR_TRANSPORT";
    throwErr(env, code, std::string(what) + " " + name_ + ": " + strerror(e));
  }

  void publish(int which, uint32_t v) {
    uint32_t* w = ctr(rank_, which);
    st(w, v);
    if (ld(&hdr_->waiters) != 0) futexWake(w);
  }

  void setAbort(uint32_t reason) {
    uint32_t zero = 0;
    __atomic_compare_exchange_n(&hdr_->abortWord, &zero, rank_ + 1, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    if (zero == 0) st(&hdr_->abortReason, reason);
    for (uint32_t r = 0; r < size_; r++)
      for (int w = 0; w < 3; w++) futexWake(ctr(r, w));
  }

  std::string missing(int which, uint32_t target) {
    std::string s;
    for (uint32_t q = 0; q < size_; q++)
      if (!reached(ldAcq(ctr(q, which)), target)) s += (s.empty() ? "" : ", ") + std::to_string(q);
    return s;
  }

  std::string opLabel(const Op& op) {
    return std::string("shm-collective ") + kindName(op.kind) + " (op #" + std::to_string(op.opSeq) + ", rank " + std::to_string(rank_) + " of " +
           std::to_string(size_) + ")";
  }

  // 0: condition met; 1: not yet (non-blocking budget spent); -1: failed (op.errCode set).
  int waitAll(Op& op, int which, uint32_t target, bool blocking, uint64_t spinUntil) {
    uint32_t q = 0;
    uint64_t iter = 0;
    uint64_t nextPidCheck = 0;
    bool sleeping = false;
    uint32_t spins = 0;
    for (;;) {
      while (q < size_ && reached(ldAcq(ctr(q, which)), target)) q++;
      if (q == size_) return 0;
      uint32_t ab = ld(&hdr_->abortWord);
      if (ab != 0) {
        uint32_t who = ab - 1, why = ld(&hdr_->abortReason);
        if (who == rank_ && closing_) {
          op.errCode = "ERR_CLOSED";
          op.errMsg = opLabel(op) + ": the collective was closed";
        } else {
          op.errCode = "ERR_PEER_CLOSED";
          op.errMsg = opLabel(op) + ": rank " + std::to_string(who) +
                      (why == 1 ? " closed the group" : why == 2 ? " timed out" : why == 3 ? " saw a dead peer" : " failed") +
                      "; the shared-memory group is broken";
        }
        return -1;
      }
      if ((++iter & 63) != 0 && !sleeping) {
        cpuRelax();
        continue;
      }
      uint64_t t = nowNs();
      if (t >= op.deadline) {
        std::string m = missing(which, target);
        op.errCode = "ERR_TIMEOUT";
        op.errMsg = opLabel(op) + " waiting for rank(s) " + m + " (chunk " +
                    std::to_string(target) + ", stage " + (which == IN ? "copy-in" : which == RED ? "reduce" : "copy-out") + ")";
        setAbort(2);
        return -1;
      }
      if (t >= nextPidCheck) {
        nextPidCheck = t + 2000000ull;
        for (uint32_t r = 0; r < size_; r++) {
          int32_t pid = __atomic_load_n(&pids()[r], __ATOMIC_ACQUIRE);
          if (pid <= 0 || pid == pid_) continue;
          if (kill(pid, 0) != 0 && errno == ESRCH) {
            op.errCode = "ERR_PEER_CLOSED";
            op.errMsg = opLabel(op) + ": rank " + std::to_string(r) + " (pid " + std::to_string(pid) + ") died; the shared-memory group is broken";
            setAbort(3);
            return -1;
          }
        }
      }
      if (t < spinUntil) {
        // Past the first few microseconds, let another thread have the core (ranks may outnumber cores).
        if (++spins > 16) sched_yield();
        continue;
      }
      if (!blocking) return 1;
      sleeping = true;
      uint32_t* w = ctr(q, which);
      uint32_t v = ld(w);
      if (reached(v, target)) continue;
      __atomic_fetch_add(&hdr_->waiters, 1, __ATOMIC_SEQ_CST);
      if (ld(w) == v && ld(&hdr_->abortWord) == 0) futexWait(w, v, kSliceMs);
      __atomic_fetch_sub(&hdr_->waiters, 1, __ATOMIC_SEQ_CST);
    }
  }

  uint64_t chunkLen(const Op& op, uint32_t k) {
    uint64_t s = (uint64_t)k * op.chunkElems;
    if (s >= op.count) return 0;
    uint64_t n = op.count - s;
    return n < op.chunkElems ? n : op.chunkElems;
  }

  void copyIn(Op& op, uint32_t g) {
    uint32_t b = g % nbuf_;
    Desc* d = desc(rank_, b);
    d->opSeq = op.opSeq;
    d->kind = (uint8_t)op.kind;
    d->dtype = (uint8_t)op.dtype;
    d->op = (uint8_t)op.op;
    d->root = op.root;
    d->count = op.count;
    if (op.kind == BROADCAST && op.root != rank_) return;
    uint64_t n = chunkLen(op, op.k);
    uint8_t* src = op.data + (uint64_t)op.k * op.chunkElems * op.esize;
    if (op.kind == BROADCAST) {
      if (n) memcpy(slot(rank_, b), src, n * op.esize);
      return;
    }
    // Only the other ranks' slices: nobody but this rank reads its own slice, which it takes from `data`.
    uint64_t s, len;
    sliceOf(n, rank_, s, len);
    if (s) memcpy(slot(rank_, b), src, s * op.esize);
    if (s + len < n) memcpy(slot(rank_, b) + (s + len) * op.esize, src + (s + len) * op.esize, (n - s - len) * op.esize);
  }

  // This rank's slice [s, s + len) of a chunk of n elements (64-byte aligned starts).
  void sliceOf(uint64_t n, uint32_t r, uint64_t& s, uint64_t& len) {
    uint64_t per = ((n + size_ - 1) / size_ + 15) & ~(uint64_t)15;
    s = (uint64_t)r * per;
    if (s > n) s = n;
    len = n - s < per ? n - s : per;
  }

  void copyOut(Op& op, uint32_t k, uint32_t g) {
    if (op.mismatch) return;
    uint32_t b = g % nbuf_;
    uint64_t n = chunkLen(op, k);
    if (!n) return;
    uint8_t* dst = op.data + (uint64_t)k * op.chunkElems * op.esize;
    if (op.kind == BROADCAST) {
      if (op.root != rank_) memcpy(dst, slot(op.root, b), n * op.esize);
      return;
    }
    // The own slice is already in `data` (written by reduceSlice).
    uint64_t s, len;
    sliceOf(n, rank_, s, len);
    const uint8_t* src = result(b);
    if (s) memcpy(dst, src, s * op.esize);
    if (s + len < n) memcpy(dst + (s + len) * op.esize, src + (s + len) * op.esize, (n - s - len) * op.esize);
  }

  bool checkDescs(Op& op, uint32_t g) {
    uint32_t b = g % nbuf_;
    Desc* mine = desc(rank_, b);
    for (uint32_t q = 0; q < size_; q++) {
      Desc* d = desc(q, b);
      if (d->opSeq == mine->opSeq && d->kind == mine->kind && d->dtype == mine->dtype && d->op == mine->op && d->root == mine->root &&
          d->count == mine->count)
        continue;
      op.mismatch = true;
      op.errCode = "ERR_MISMATCH";
      auto show = [](Desc* x) {
        return std::string(kindName(x->kind)) + "(" + std::to_string(x->count) + " x " + dtypeName(x->dtype) + ", " +
               (x->kind == BROADCAST ? "root " + std::to_string(x->root) : std::string(opName(x->op))) + ", op #" + std::to_string(x->opSeq) + ")";
      };
      op.errMsg = "rank " + std::to_string(rank_) + " calls " + show(mine) + ", rank " + std::to_string(q) + " calls " + show(d);
      return false;
    }
    return true;
  }

  void reduceSlice(Op& op, uint32_t g) {
    uint32_t b = g % nbuf_;
    uint64_t n = chunkLen(op, op.k);
    uint64_t s, len;
    sliceOf(n, rank_, s, len);
    if (len == 0) return;
    size_t off = s * op.esize;
    uint8_t* mine = op.data + (uint64_t)op.k * op.chunkElems * op.esize + off;
    uint8_t* d = result(b) + off;
    // Sources in rank order; this rank's own contribution comes straight from its data.
    auto src = [&](uint32_t q) -> const uint8_t* { return q == rank_ ? mine : slot(q, b) + off; };
    if (size_ == 1) {
      memcpy(d, mine, len * op.esize);
    } else {
      int o = op.op == MEAN ? SUM : op.op;
#define RED3(T, NAME, OPN) shoal_##NAME##_##OPN##3((T*)d, (const T*)src(0), (const T*)src(1), len)
#define RED2(T, NAME, OPN, q) shoal_##NAME##_##OPN((T*)d, (const T*)src(q), len)
#define ALL(TS, NAMESUM, TM, NAMEMM)                                                    \
  if (o == SUM) {                                                                       \
    RED3(TS, NAMESUM, sum);                                                             \
    for (uint32_t q = 2; q < size_; q++) RED2(TS, NAMESUM, sum, q);                     \
  } else if (o == MIN) {                                                                \
    RED3(TM, NAMEMM, min);                                                              \
    for (uint32_t q = 2; q < size_; q++) RED2(TM, NAMEMM, min, q);                      \
  } else {                                                                              \
    RED3(TM, NAMEMM, max);                                                              \
    for (uint32_t q = 2; q < size_; q++) RED2(TM, NAMEMM, max, q);                      \
  }
      if (op.dtype == F32) {
        ALL(float, f32, float, f32)
      } else if (op.dtype == F64) {
        ALL(double, f64, double, f64)
      } else {
        ALL(uint32_t, u32, int32_t, i32)
      }
    }
    if (op.op == MEAN) {
      if (op.dtype == F32) shoal_scale_f32((float*)d, (float)(1.0 / size_), len);
      else if (op.dtype == F64) shoal_scale_f64((double*)d, 1.0 / size_, len);
      else shoal_coll_div_i32((int32_t*)d, (int32_t)size_, len);
    }
    memcpy(mine, d, len * op.esize);
  }

  // Advance `op` as far as possible. 0 done (errCode may be set), 1 not finished (non-blocking only).
  int run(Op& op, bool blocking, uint64_t spinUntil) {
    for (;;) {
      uint32_t g = op.first + op.k;
      switch (op.phase) {
        case 0: {  // buffers of chunk g free (chunk g - nbuf copied out by every rank), then copy in
          int w = waitAll(op, OUT, g - nbuf_ + 1, blocking, spinUntil);  // modular: true for g < nbuf
          if (w == 1) return 1;
          if (w < 0) return 0;
          copyIn(op, g);
          publish(IN, g + 1);
          op.phase = 1;
          break;
        }
        case 1: {  // copy out the previous chunk of this op
          if (op.k > 0) {
            int w = waitAll(op, RED, g, blocking, spinUntil);
            if (w == 1) return 1;
            if (w < 0) return 0;
            copyOut(op, op.k - 1, g - 1);
            publish(OUT, g);
          }
          op.phase = 2;
          break;
        }
        case 2: {  // everyone copied chunk g in: check descriptors, reduce my slice
          int w = waitAll(op, IN, g + 1, blocking, spinUntil);
          if (w == 1) return 1;
          if (w < 0) return 0;
          if (checkDescs(op, g) && op.kind == ALLREDUCE) reduceSlice(op, g);
          publish(RED, g + 1);
          if (op.mismatch || op.k + 1 == op.nChunks) {
            op.phase = 3;
          } else {
            op.k++;
            op.phase = 0;
          }
          break;
        }
        case 3: {  // the last chunk (or the chunk where a mismatch was found)
          int w = waitAll(op, RED, g + 1, blocking, spinUntil);
          if (w == 1) return 1;
          if (w < 0) return 0;
          copyOut(op, op.k, g);
          publish(OUT, g + 1);
          next_ = g + 1;  // every rank ends at the same chunk, also after a mismatch found in the first one
          op.phase = 4;
          return 0;
        }
        default:
          return 0;
      }
    }
  }

  // ---- worker thread ----
  void loop() {
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
      cv_.wait(lk, [this] { return pendingOp_ || stop_; });
      if (!pendingOp_) return;
      lk.unlock();
      Op* op = &op_;
      run(*op, true, nowNs() + op->spinNs);
      lk.lock();
      pendingOp_ = false;
      lk.unlock();
      // Once the environment is going away the call fails with napi_closing (the finalizer waits for this thread).
      if (!tsfnDead_.load()) tsfn_.BlockingCall(this, [](Napi::Env env, Napi::Function cb, Coll* self) { self->complete(env, cb); });
      lk.lock();
    }
  }

  void complete(Napi::Env env, Napi::Function cb) {
    tsfn_.Unref(env);
    dataRef_.Reset();
    busy_ = false;
    Napi::HandleScope scope(env);
    cb.Call({Napi::String::New(env, op_.errCode), Napi::String::New(env, op_.errMsg)});
  }

  // start(kind, dtype, op, data|null, count, root, opSeq, timeoutMs, syncSpinUs, threadSpinUs)
  //   -> 0 done, 1 pending (onDone(code, message) follows), or [code, message]
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!base_ || closed_) {
      throwErr(env, "ERR_CLOSED", "collective is closed");
      return env.Undefined();
    }
    if (busy_) {
      throwErr(env, "ERR_STATE", "one operation at a time");
      return env.Undefined();
    }
    Op& op = op_;
    op = Op();
    op.kind = info[0].As<Napi::Number>().Int32Value();
    op.dtype = info[1].As<Napi::Number>().Int32Value();
    op.op = info[2].As<Napi::Number>().Int32Value();
    op.esize = esizeOf(op.dtype);
    if (info[3].IsTypedArray()) {
      // The data pointer straight from the typed array: also right for a SharedArrayBuffer behind it (the C++
      // wrapper's ArrayBuffer() rejects those and would leave a null pointer with an exception pending).
      void* p = nullptr;
      size_t len = 0;
      if (napi_get_typedarray_info(env, info[3], nullptr, &len, &p, nullptr, nullptr) != napi_ok || (p == nullptr && len > 0)) {
        throwErr(env, "ERR_INVALID_ARG", "data: cannot read the typed array's memory");
        return env.Undefined();
      }
      op.data = (uint8_t*)p;
    }
    op.count = (uint64_t)info[4].As<Napi::Number>().Int64Value();
    op.root = info[5].As<Napi::Number>().Uint32Value();
    op.opSeq = info[6].As<Napi::Number>().Uint32Value();
    op.timeoutMs = (uint64_t)info[7].As<Napi::Number>().Int64Value();
    double syncSpinUs = info[8].As<Napi::Number>().DoubleValue();
    op.spinNs = (uint64_t)(info[9].As<Napi::Number>().DoubleValue() * 1000.0);
    op.chunkElems = chunk_ / op.esize;
    uint64_t nc = (op.count + op.chunkElems - 1) / op.chunkElems;
    op.nChunks = nc == 0 ? 1 : (uint32_t)nc;
    op.first = next_;
    uint64_t t0 = nowNs();
    op.deadline = t0 + op.timeoutMs * 1000000ull;
    if (syncSpinUs > 0) {
      int r = run(op, false, t0 + (uint64_t)(syncSpinUs * 1000.0));
      if (r == 0) return result(env, op);
    }
    busy_ = true;
    dataRef_ = info[3].IsObject() ? Napi::Persistent(info[3]) : Napi::Reference<Napi::Value>();
    tsfn_.Ref(env);
    {
      std::lock_guard<std::mutex> lk(mu_);
      pendingOp_ = true;
    }
    cv_.notify_one();
    return Napi::Number::New(env, 1);
  }

  Napi::Value result(Napi::Env env, const Op& op) {
    if (op.errCode.empty()) return Napi::Number::New(env, 0);
    Napi::Array a = Napi::Array::New(env, 2);
    a.Set((uint32_t)0, Napi::String::New(env, op.errCode));
    a.Set((uint32_t)1, Napi::String::New(env, op.errMsg));
    return a;
  }

  Napi::Value Attached(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), base_ ? ld(&hdr_->attached) : 0);
  }
  Napi::Value Unlink(const Napi::CallbackInfo& info) {
    if (!unlinked_) {
      unlinked_ = true;
      shm_unlink(name_.c_str());
    }
    return info.Env().Undefined();
  }
  // abort(reason): set the abort word (1 closed, 4 error) and wake every waiter. A running op fails soon after.
  Napi::Value Abort(const Napi::CallbackInfo& info) {
    if (base_) {
      uint32_t why = info[0].As<Napi::Number>().Uint32Value();
      if (why == 1) closing_ = true;
      setAbort(why);
    }
    return info.Env().Undefined();
  }
  Napi::Value Aborted(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!base_) return env.Null();
    uint32_t ab = ld(&hdr_->abortWord);
    if (!ab) return env.Null();
    Napi::Array a = Napi::Array::New(env, 2);
    a.Set((uint32_t)0, Napi::Number::New(env, ab - 1));
    a.Set((uint32_t)1, Napi::Number::New(env, ld(&hdr_->abortReason)));
    return a;
  }
  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", name_);
    o.Set("bytes", Napi::Number::New(env, (double)bytes_));
    o.Set("chunkBytes", Napi::Number::New(env, chunk_));
    o.Set("nbuf", Napi::Number::New(env, nbuf_));
    return o;
  }
  // close(): the JS side calls it with no op in flight (after abort + waiting for the op).
  Napi::Value Close(const Napi::CallbackInfo& info) {
    shutdown();
    return info.Env().Undefined();
  }

  /** The TSFN's finalizer, on the JS thread, before close(): abort, stop and join the thread; no Release() later. */
  void tsfnFinalized() {
    guard_ = nullptr;
    tsfnDead_.store(true);
    hasTsfn_ = false;
    if (base_ && !closed_) {
      closing_ = true;
      setAbort(1);
    }
    stopThread();
  }

  /** Ask the collective's thread to exit after its current op (which the abort word ends) and wait for it. */
  void stopThread() {
    if (!worker_.joinable()) return;
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    worker_.join();
  }

  void shutdown() {
    if (closed_) return;
    closed_ = true;
    if (guard_) {
      guard_->owner = nullptr;
      guard_ = nullptr;
    }
    if (base_) {
      closing_ = true;
      setAbort(1);
    }
    stopThread();
    if (hasTsfn_) {
      tsfn_.Release();
      hasTsfn_ = false;
    }
    if (base_) {
      munmap(base_, bytes_);
      base_ = nullptr;
    }
  }

  std::string name_;
  uint32_t rank_ = 0, size_ = 1;
  uint8_t* base_ = nullptr;
  Header* hdr_ = nullptr;
  size_t bytes_ = 0, ctrOff_ = 0, descOff_ = 0, dataOff_ = 0;
  uint32_t chunk_ = 0, nbuf_ = 0;
  int32_t pid_ = 0;
  uint32_t next_ = 0;
  bool unlinked_ = false, closed_ = false, busy_ = false;
  std::atomic<bool> closing_{false};  // set on the JS thread, read by the worker thread
  Op op_;
  Napi::Reference<Napi::Value> dataRef_;
  Napi::ThreadSafeFunction tsfn_;
  bool hasTsfn_ = false;
  struct TsfnGuard {
    Coll* owner;
  };
  TsfnGuard* guard_ = nullptr;
  std::atomic<bool> tsfnDead_{false};
  std::thread worker_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool pendingOp_ = false, stop_ = false;
};

}  // namespace

Napi::Object InitAll(Napi::Env env, Napi::Object exports) { return Coll::Init(env, exports); }
NODE_API_MODULE(shoal_shmcoll, InitAll)
